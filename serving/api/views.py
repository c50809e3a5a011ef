"""Serving and pricing endpoints of the management API: parse, call one service, shape the
answer. Same authentication, permissions (operators read, admins write), problem-format errors
and audit as tenants.api."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, viewsets

from billing import services as billing_services
from billing.models import BillingProfile, ModelPrice, TenantPriceOverride
from billing.services import ALERT_CONTACT_FIELDS
from serving.api.serializers import (
    AlertContactsSerializer,
    DeploymentSerializer,
    ModelGroupSerializer,
    PriceSerializer,
    RoutingRuleSerializer,
    TenantTermsSerializer,
)
from serving.models import Deployment, ModelGroup, RoutingRule
from serving.routing.deployments import deployment_delete, deployment_set
from serving.routing.services import (
    model_group_delete,
    model_group_set,
    routing_rule_delete,
    routing_rule_set,
)
from tenants.api.base import ANY_NAME, SafeInputMixin


def _same_name(instance, data: dict, label: str) -> None:
    if "name" in data and data["name"] != instance.name:
        raise ValidationError(
            {"name": [f"A {label}'s name is its key and cannot change; create a new one."]}
        )


def _filter_param(name: str, description: str) -> OpenApiParameter:
    return OpenApiParameter(name, str, description=description, required=False)


class NamedViewSet(SafeInputMixin, viewsets.ModelViewSet):
    """Rows addressed by their unique ``name`` (any characters, percent-encoded)."""

    lookup_field = "name"
    lookup_value_regex = ANY_NAME


@extend_schema_view(
    list=extend_schema(parameters=[_filter_param("model", "Only deployments of this model.")])
)
class DeploymentViewSet(NamedViewSet):
    """Deployments: where a public model is served. ``api_key`` is write-only."""

    serializer_class = DeploymentSerializer

    def get_queryset(self):
        qs = Deployment.objects.order_by("model", "name")
        model = self.request.query_params.get("model")
        return qs.filter(model=model) if model else qs

    def perform_create(self, serializer):
        data = dict(serializer.validated_data)
        name, api_key = data.pop("name"), data.pop("api_key", None)
        serializer.instance = deployment_set(
            name=name, api_key=api_key, create=True, actor=self.request.user, **data
        )

    def perform_update(self, serializer):
        data = dict(serializer.validated_data)
        _same_name(serializer.instance, data, "deployment")
        data.pop("name", None)
        api_key = data.pop("api_key", None)
        serializer.instance = deployment_set(
            name=serializer.instance.name, api_key=api_key, actor=self.request.user, **data
        )

    def perform_destroy(self, instance: Deployment):
        deployment_delete(deployment=instance, actor=self.request.user)


class ModelGroupViewSet(NamedViewSet):
    """Model groups: a public name served by several deployments under one strategy."""

    serializer_class = ModelGroupSerializer

    def get_queryset(self):
        return ModelGroup.objects.prefetch_related("members").order_by("name")

    def _save(self, serializer, *, create: bool) -> None:
        data = dict(serializer.validated_data)
        group = serializer.instance
        if group is not None:
            _same_name(group, data, "group")
        members = data.get("members")
        strategy = group.strategy if group else ModelGroup.Strategy.WEIGHTED
        serializer.instance = model_group_set(
            name=group.name if group else data["name"],
            strategy=data.get("strategy", strategy),
            description=data.get("description", group.description if group else ""),
            members=None if members is None else [d.name for d in members],
            create=create,
            actor=self.request.user,
        )

    def perform_create(self, serializer):
        self._save(serializer, create=True)

    def perform_update(self, serializer):
        self._save(serializer, create=False)

    def perform_destroy(self, instance: ModelGroup):
        model_group_delete(group=instance, actor=self.request.user)


class RoutingRuleViewSet(NamedViewSet):
    """Ordered routing rules: the first whose every condition matches picks the model."""

    serializer_class = RoutingRuleSerializer

    def get_queryset(self):
        return RoutingRule.objects.select_related("tier", "tenant").order_by("position", "id")

    def perform_create(self, serializer):
        data = dict(serializer.validated_data)
        name = data.pop("name")
        serializer.instance = routing_rule_set(
            name=name, create=True, actor=self.request.user, **data
        )

    def perform_update(self, serializer):
        data = dict(serializer.validated_data)
        _same_name(serializer.instance, data, "rule")
        data.pop("name", None)
        serializer.instance = routing_rule_set(
            name=serializer.instance.name, actor=self.request.user, **data
        )

    def perform_destroy(self, instance: RoutingRule):
        routing_rule_delete(rule=instance, actor=self.request.user)


class AppendOnlyViewSet(
    SafeInputMixin,
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Rows that take effect from ``effective_from`` on: a change is a new row, so past usage
    keeps its price; nothing is edited or deleted."""


@extend_schema_view(
    list=extend_schema(
        parameters=[
            _filter_param("model", "Only this model's lists."),
            _filter_param("deployment", 'Only this deployment\'s lists ("" for model-wide).'),
        ]
    )
)
class PriceViewSet(AppendOnlyViewSet):
    """Price lists per million tokens, integer micro-dollars. A new price is a new row from
    ``effective_from`` (default: now) on."""

    serializer_class = PriceSerializer

    def get_queryset(self):
        p = self.request.query_params
        qs = ModelPrice.objects.order_by("model", "deployment", "-effective_from")
        if p.get("model"):
            qs = qs.filter(model=p["model"])
        if "deployment" in p:
            qs = qs.filter(deployment=p["deployment"])
        return qs

    def perform_create(self, serializer):
        serializer.instance = billing_services.price_set(
            actor=self.request.user, **serializer.validated_data
        )


@extend_schema_view(
    list=extend_schema(parameters=[_filter_param("tenant", "Only this tenant's terms (slug).")])
)
class TenantTermsViewSet(AppendOnlyViewSet):
    """Tenant terms on top of the price lists: committed-use rates and/or a discount in basis
    points, for one model or all (``model`` ""), from ``effective_from`` (default: now) on."""

    serializer_class = TenantTermsSerializer

    def get_queryset(self):
        tenant = self.request.query_params.get("tenant")
        qs = TenantPriceOverride.objects.select_related("tenant").order_by(
            "tenant__slug", "model", "-effective_from"
        )
        return qs.filter(tenant__slug=tenant) if tenant else qs

    def perform_create(self, serializer):
        serializer.instance = billing_services.tenant_terms_set(
            actor=self.request.user, **serializer.validated_data
        )


@extend_schema_view(
    list=extend_schema(parameters=[_filter_param("tenant", "Only this tenant's contacts (slug).")])
)
class AlertContactsViewSet(
    SafeInputMixin,
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Where each tenant's billing alerts go besides its contact e-mail, by tenant slug. POST
    sets a tenant's contacts (created or replaced); PATCH changes the fields it names."""

    serializer_class = AlertContactsSerializer
    lookup_field = "tenant__slug"
    lookup_url_kwarg = "tenant"

    def get_queryset(self):
        tenant = self.request.query_params.get("tenant")
        qs = BillingProfile.objects.select_related("tenant").order_by("tenant__slug")
        return qs.filter(tenant__slug=tenant) if tenant else qs

    def perform_create(self, serializer):
        serializer.instance = billing_services.alert_contacts_set(
            actor=self.request.user, **serializer.validated_data
        )

    def perform_update(self, serializer):
        profile: BillingProfile = serializer.instance
        data = {f: getattr(profile, f) for f in ALERT_CONTACT_FIELDS}
        data |= serializer.validated_data
        if data.pop("tenant", profile.tenant) != profile.tenant:
            raise ValidationError({"tenant": ["Set another tenant's contacts at its own URL."]})
        serializer.instance = billing_services.alert_contacts_set(
            tenant=profile.tenant, actor=self.request.user, **data
        )
