from django.contrib import admin

from billing.models import UsageRecord


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = ["request_id", "tenant", "model", "input_tokens", "output_tokens", "created"]
    list_filter = ["model"]
    search_fields = ["request_id", "tenant__slug"]
