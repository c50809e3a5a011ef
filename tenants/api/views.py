"""Management API views: parse, call one service, shape the answer."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from tenants import selectors, services
from tenants.api.base import ANY_NAME, SafeInputMixin
from tenants.api.serializers import (
    ApiKeyCreateSerializer,
    ApiKeySerializer,
    AuditEventSerializer,
    BudgetSerializer,
    TenantSerializer,
    TierSerializer,
)
from tenants.models import ApiKey, Budget, Tenant, Tier


class TierViewSet(SafeInputMixin, viewsets.ModelViewSet):
    serializer_class = TierSerializer
    lookup_field = "name"
    lookup_value_regex = ANY_NAME

    def get_queryset(self):
        return selectors.tier_list()

    def perform_create(self, serializer):
        serializer.instance = services.tier_create(
            actor=self.request.user, **serializer.validated_data
        )

    def perform_update(self, serializer):
        serializer.instance = services.tier_update(
            tier=serializer.instance, actor=self.request.user, **serializer.validated_data
        )

    def perform_destroy(self, instance: Tier):
        services.tier_delete(tier=instance, actor=self.request.user)


class TenantViewSet(SafeInputMixin, viewsets.ModelViewSet):
    serializer_class = TenantSerializer
    lookup_field = "slug"

    def get_queryset(self):
        p = self.request.query_params
        return selectors.tenant_list(
            q=p.get("q", ""), status=p.get("status", ""), tier=p.get("tier", "")
        )

    def perform_create(self, serializer):
        serializer.instance = services.tenant_create(
            actor=self.request.user, **serializer.validated_data
        )

    def perform_update(self, serializer):
        serializer.instance = services.tenant_update(
            tenant=serializer.instance, actor=self.request.user, **serializer.validated_data
        )

    def perform_destroy(self, instance: Tenant):
        services.tenant_delete(tenant=instance, actor=self.request.user)

    @extend_schema(request=None, responses=TenantSerializer)
    @action(detail=True, methods=["post"])
    def suspend(self, request, slug=None):
        tenant = services.tenant_suspend(tenant=self.get_object(), actor=request.user)
        return Response(TenantSerializer(tenant).data)

    @extend_schema(request=None, responses=TenantSerializer)
    @action(detail=True, methods=["post"])
    def activate(self, request, slug=None):
        tenant = services.tenant_activate(tenant=self.get_object(), actor=request.user)
        return Response(TenantSerializer(tenant).data)


class ApiKeyViewSet(
    SafeInputMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    serializer_class = ApiKeySerializer

    def get_queryset(self):
        tenant = self.request.query_params.get("tenant")
        qs = selectors.api_key_list()
        return qs.filter(tenant__slug=tenant) if tenant else qs

    @extend_schema(
        request=ApiKeyCreateSerializer,
        responses={
            201: inline_serializer(
                "ApiKeyCreated",
                {"key": serializers.CharField(), "api_key": ApiKeySerializer()},
            )
        },
        description="Issue a key. The key is in this response only; it is never shown again.",
    )
    def create(self, request):
        data = ApiKeyCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        key, raw = services.api_key_create(actor=request.user, **data.validated_data)
        return Response(
            {"key": raw, "api_key": ApiKeySerializer(key).data}, status=status.HTTP_201_CREATED
        )

    @extend_schema(request=None, responses=ApiKeySerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        key: ApiKey = self.get_object()
        return Response(ApiKeySerializer(services.api_key_revoke(key=key, actor=request.user)).data)


class BudgetViewSet(SafeInputMixin, viewsets.ModelViewSet):
    """Budgets. POST creates or updates the tenant's budget for that period."""

    serializer_class = BudgetSerializer

    def get_queryset(self):
        tenant = self.request.query_params.get("tenant")
        qs = selectors.budget_list()
        return qs.filter(tenant__slug=tenant) if tenant else qs

    def perform_create(self, serializer):
        serializer.instance = services.budget_set(
            actor=self.request.user, **serializer.validated_data
        )

    def perform_update(self, serializer):
        data = {
            "tenant": serializer.instance.tenant,
            "period": serializer.instance.period,
            "limit_micro_usd": serializer.instance.limit_micro_usd,
            "hard": serializer.instance.hard,
            "alert_thresholds": serializer.instance.alert_thresholds,
            **serializer.validated_data,
        }
        if (
            data["period"] != serializer.instance.period
            or data["tenant"] != serializer.instance.tenant
        ):
            from django.core.exceptions import ValidationError

            raise ValidationError({"period": ["Create a new budget to change tenant or period."]})
        serializer.instance = services.budget_set(actor=self.request.user, **data)

    def perform_destroy(self, instance: Budget):
        services.budget_delete(budget=instance, actor=self.request.user)


class AuditEventViewSet(SafeInputMixin, viewsets.ReadOnlyModelViewSet):
    serializer_class = AuditEventSerializer

    def get_queryset(self):
        p = self.request.query_params
        qs = selectors.audit_list(q=p.get("q", ""), action=p.get("action", ""))
        return qs.filter(tenant__slug=p["tenant"]) if p.get("tenant") else qs
