"""Shapes of the serving and pricing endpoints. Field names are the models'; writes go through
the services (serving.routing.deployments, serving.routing.services, billing.services), and each
writable serializer takes its fields from its service's field list (deployments ``FIELDS``,
``GROUP_FIELDS``, ``RULE_FIELDS``, ``PRICE_FIELDS``, ``ALERT_CONTACT_FIELDS``): whatever the
console can set, the API can set."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from rest_framework import serializers

from billing.models import BillingProfile, ModelPrice, TenantPriceOverride
from billing.services import ALERT_CONTACT_FIELDS, PRICE_FIELDS
from serving.models import Deployment, ModelGroup, RoutingRule
from serving.routing.deployments import FIELDS as DEPLOYMENT_FIELDS
from serving.routing.services import GROUP_FIELDS, RULE_FIELDS
from tenants.api.base import NameRelatedField
from tenants.models import Tenant, Tier


class DeploymentSerializer(serializers.ModelSerializer):
    api_key = serializers.CharField(
        write_only=True,
        required=False,
        allow_null=True,
        allow_blank=True,
        trim_whitespace=False,
        max_length=4096,
        help_text="The upstream's API key: stored encrypted and never returned. Left out or "
        'null keeps the stored key; "" removes it.',
    )
    has_api_key = serializers.BooleanField(read_only=True)

    class Meta:
        model = Deployment
        fields = ["id", *DEPLOYMENT_FIELDS, "api_key", "has_api_key", "created", "updated"]
        read_only_fields = ["id", "created", "updated"]
        # Uniqueness is the service's job (one message, race-safe).
        extra_kwargs = {"name": {"validators": []}}


class ModelGroupSerializer(serializers.ModelSerializer):
    members = NameRelatedField(
        many=True,
        slug_field="name",
        queryset=Deployment.objects.all(),
        required=False,
        help_text="Deployment names (beside the deployments whose model is the group's name).",
    )

    class Meta:
        model = ModelGroup
        fields = ["id", *GROUP_FIELDS, "members", "updated"]
        read_only_fields = ["id", "updated"]
        extra_kwargs = {"name": {"validators": []}}


class RoutingRuleSerializer(serializers.ModelSerializer):
    tier = NameRelatedField(
        slug_field="name", queryset=Tier.objects.all(), required=False, allow_null=True
    )
    tenant = NameRelatedField(
        slug_field="slug", queryset=Tenant.objects.all(), required=False, allow_null=True
    )

    class Meta:
        model = RoutingRule
        fields = ["id", *RULE_FIELDS, "updated"]
        read_only_fields = ["id", "updated"]
        extra_kwargs = {"name": {"validators": []}}


class PriceSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelPrice
        fields = ["id", "model", "deployment", *PRICE_FIELDS, "effective_from", "created"]
        read_only_fields = ["id", "created"]
        extra_kwargs = {"effective_from": {"required": False}}
        validators = []  # one row per instant: price_set says so in its own words


class TenantTermsSerializer(serializers.ModelSerializer):
    tenant = NameRelatedField(slug_field="slug", queryset=Tenant.objects.all())

    class Meta:
        model = TenantPriceOverride
        fields = [
            "id",
            "tenant",
            "model",
            "discount_bp",
            *PRICE_FIELDS,
            "effective_from",
            "created",
        ]
        read_only_fields = ["id", "created"]
        extra_kwargs = {"effective_from": {"required": False}}
        validators = []


class AlertContactsSerializer(serializers.ModelSerializer):
    """Where a tenant's billing alerts go besides its contact e-mail (and the operators'):
    comma-separated addresses and a webhook, "" for none."""

    tenant = NameRelatedField(slug_field="slug", queryset=Tenant.objects.all())

    class Meta:
        model = BillingProfile
        fields = ["tenant", *ALERT_CONTACT_FIELDS]
        validators = []  # one profile per tenant: POST sets it

    def validate_alert_emails(self, value: str) -> str:
        """Each address checked, as the console checks them; stored as "a@x, b@y"."""
        emails = [e.strip() for e in value.split(",") if e.strip()]
        for e in emails:
            try:
                validate_email(e)
            except DjangoValidationError:
                raise serializers.ValidationError(f"{e!r} is not an e-mail address.") from None
        return ", ".join(emails)
