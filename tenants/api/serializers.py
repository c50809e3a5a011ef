"""Input and output shapes of the management API. Writes go through tenants.services.

Each writable serializer takes its fields from its service's field list (``TIER_FIELDS``,
``TENANT_FIELDS``, ``KEY_FIELDS``, ``BUDGET_FIELDS``), the lists the console's forms and the
audit follow too: whatever the console can set, the API can set.
"""

from __future__ import annotations

from rest_framework import serializers

from tenants.api.base import NameRelatedField
from tenants.models import ApiKey, AuditEvent, Budget, Tenant, Tier
from tenants.services import BUDGET_FIELDS, KEY_FIELDS, TENANT_FIELDS, TIER_FIELDS

# What a caller chooses of a new key: its fields but those the service sets (the prefix is
# generated; ``revoked`` is the revoke action's).
KEY_INPUT_FIELDS = [f for f in KEY_FIELDS if f not in ("prefix", "revoked")]


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
        fields = ["id", *TENANT_FIELDS, "created", "updated"]
        # The status changes only through the suspend and activate actions.
        read_only_fields = ["id", "status", "created", "updated"]
        extra_kwargs = {"slug": {"validators": []}}


# A key as shown (never the key itself), read-only: every one of KEY_FIELDS (asserted by
# tests/serving/api/test_console_parity.py), in the order the API has always shown them.
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


class ApiKeyCreateSerializer(serializers.ModelSerializer):
    tenant = NameRelatedField(slug_field="slug", queryset=Tenant.objects.all())

    class Meta:
        model = ApiKey
        fields = ["tenant", *KEY_INPUT_FIELDS]


class BudgetSerializer(serializers.ModelSerializer):
    tenant = NameRelatedField(slug_field="slug", queryset=Tenant.objects.all())
    limit_micro_usd = serializers.IntegerField(min_value=0)
    alert_thresholds = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=1000), required=False
    )

    class Meta:
        model = Budget
        fields = ["id", "tenant", *BUDGET_FIELDS, "created", "updated"]
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
