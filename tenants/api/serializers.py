"""Input and output shapes of the management API. Writes go through tenants.services."""

from __future__ import annotations

from rest_framework import serializers

from tenants.api.base import NameRelatedField
from tenants.models import ApiKey, AuditEvent, Budget, Tenant, Tier
from tenants.services import TIER_FIELDS


class TierSerializer(serializers.ModelSerializer):
    tenant_count = serializers.IntegerField(read_only=True, required=False)

    class Meta:
        model = Tier
        # Every field the console edits (services.TIER_FIELDS), so the two never drift apart.
        fields = ["id", *TIER_FIELDS, "tenant_count", "created", "updated"]
        read_only_fields = ["id", "created", "updated", "tenant_count"]
        # Uniqueness is the service's job (one message, race-safe).
        extra_kwargs = {"name": {"validators": []}}


class TenantSerializer(serializers.ModelSerializer):
    tier = NameRelatedField(slug_field="name", queryset=Tier.objects.all())

    class Meta:
        model = Tenant
        fields = [
            "id", "name", "slug", "tier", "status", "contact_email", "cache_shared_pool", "created",
            "updated",
        ]  # fmt: skip
        read_only_fields = ["id", "status", "created", "updated"]
        extra_kwargs = {"slug": {"validators": []}}


class ApiKeySerializer(serializers.ModelSerializer):
    tenant = NameRelatedField(slug_field="slug", read_only=True)
    state = serializers.CharField(read_only=True)
    display = serializers.CharField(read_only=True)

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "tenant",
            "name",
            "prefix",
            "display",
            "state",
            "created",
            "last_used",
            "expires",
            "revoked",
        ]
        read_only_fields = fields


class ApiKeyCreateSerializer(serializers.Serializer):
    tenant = NameRelatedField(slug_field="slug", queryset=Tenant.objects.all())
    name = serializers.CharField(max_length=128)
    expires = serializers.DateTimeField(required=False, allow_null=True)


class BudgetSerializer(serializers.ModelSerializer):
    tenant = NameRelatedField(slug_field="slug", queryset=Tenant.objects.all())
    limit_micro_usd = serializers.IntegerField(min_value=0)
    alert_thresholds = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=1000), required=False
    )

    class Meta:
        model = Budget
        fields = [
            "id",
            "tenant",
            "period",
            "limit_micro_usd",
            "hard",
            "alert_thresholds",
            "created",
            "updated",
        ]
        read_only_fields = ["id", "created", "updated"]
        validators = []  # one budget per period: budget_set updates instead of failing


class AuditEventSerializer(serializers.ModelSerializer):
    tenant = NameRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "created",
            "actor_repr",
            "action",
            "object_type",
            "object_id",
            "object_repr",
            "tenant",
            "before",
            "after",
        ]
        read_only_fields = fields
