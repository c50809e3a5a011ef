from django.contrib import admin

from tenants.models import ApiKey, AuditEvent, Budget, Tenant, Tier


@admin.register(Tier)
class TierAdmin(admin.ModelAdmin):
    list_display = ["name", "requests_per_minute", "tokens_per_minute", "max_concurrent_requests"]
    search_fields = ["name"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "tier", "status", "created"]
    list_filter = ["status", "tier"]
    search_fields = ["slug", "name", "contact_email"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["display", "name", "tenant", "created", "last_used", "expires", "revoked"]
    list_filter = ["tenant"]
    search_fields = ["prefix", "name", "tenant__slug"]
    readonly_fields = ["prefix", "key_hash", "created", "last_used", "created_by"]

    def has_add_permission(self, request) -> bool:
        return False  # keys are issued by the console, API or create_api_key (shown once)


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    list_display = ["tenant", "period", "limit_micro_usd", "hard"]
    list_filter = ["period", "hard"]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["created", "actor_repr", "action", "object_repr"]
    list_filter = ["action"]
    search_fields = ["object_repr", "actor_repr"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
