from django.contrib import admin

from billing.models import (
    Alert,
    BillingProfile,
    ModelPrice,
    TenantPriceOverride,
    UsageRecord,
    UsageRollup,
)


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = ["request_id", "tenant", "model", "input_tokens", "output_tokens", "created"]
    list_filter = ["model"]
    search_fields = ["request_id", "tenant__slug"]


class AddOnlyAdmin(admin.ModelAdmin):
    """Prices and terms are history: a change is a new row with a later effective_from."""

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ModelPrice)
class ModelPriceAdmin(AddOnlyAdmin):
    list_display = ["model", "deployment", "input_micro_usd_per_mtok",
                    "output_micro_usd_per_mtok", "cached_input_micro_usd_per_mtok",
                    "effective_from"]  # fmt: skip
    list_filter = ["model", "deployment"]


@admin.register(TenantPriceOverride)
class TenantPriceOverrideAdmin(AddOnlyAdmin):
    list_display = ["tenant", "model", "discount_bp", "input_micro_usd_per_mtok",
                    "output_micro_usd_per_mtok", "effective_from"]  # fmt: skip
    search_fields = ["tenant__slug"]


@admin.register(BillingProfile)
class BillingProfileAdmin(admin.ModelAdmin):
    list_display = ["tenant", "alert_emails", "webhook_url"]
    search_fields = ["tenant__slug"]


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ["created", "kind", "tenant", "subject", "email_sent", "webhook_sent"]
    list_filter = ["kind"]
    search_fields = ["tenant__slug", "subject"]


@admin.register(UsageRollup)
class UsageRollupAdmin(admin.ModelAdmin):
    list_display = ["granularity", "bucket", "tenant", "model", "deployment", "requests",
                    "cost_micro_usd"]  # fmt: skip
    list_filter = ["granularity"]
