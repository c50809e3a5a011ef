"""Usage records: one per request that produced tokens, keyed by request id.

Money is integer micro-dollars. Prices, rollups and invoices arrive with the billing issue;
the record is here from the start because other rules depend on it (a tenant with usage is
never deleted).
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class UsageRecord(models.Model):
    request_id = models.CharField(max_length=64, unique=True)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="usage")
    api_key = models.ForeignKey(
        "tenants.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="usage"
    )
    model = models.CharField(max_length=128)
    deployment = models.CharField(max_length=128, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    cost_micro_usd = models.BigIntegerField(default=0)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["tenant", "created"])]

    def __str__(self) -> str:
        return self.request_id
