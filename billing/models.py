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
    cache = models.CharField(
        max_length=16, default="miss", help_text="hit-exact, hit-semantic or miss"
    )
    saved_micro_usd = models.BigIntegerField(default=0, help_text="What a cache hit did not cost.")
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["tenant", "created"])]

    def __str__(self) -> str:
        return self.request_id


class ModelPrice(models.Model):
    """Price of a public model per million tokens, in integer micro-dollars, from a moment on.

    A request is priced by the row in force when it started; a new price is a new row, so
    past records never change.
    """

    model = models.CharField(max_length=128)
    input_micro_usd_per_mtok = models.PositiveBigIntegerField()
    output_micro_usd_per_mtok = models.PositiveBigIntegerField()
    cached_input_micro_usd_per_mtok = models.PositiveBigIntegerField(null=True, blank=True)
    effective_from = models.DateTimeField(default=timezone.now)
    created = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["model", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["model", "effective_from"], name="price_once_per_instant"
            )
        ]
        indexes = [models.Index(fields=["model", "-effective_from"])]

    def __str__(self) -> str:
        return (
            f"{self.model} in={self.input_micro_usd_per_mtok} out={self.output_micro_usd_per_mtok}"
        )
