"""Billing data: usage records, versioned price lists, tenant overrides, rollups and alerts.

Money is integer micro-dollars (1e-6 USD) everywhere; prices are micro-dollars per million
tokens. A price list or an override is never edited in place: a new row with a later
``effective_from`` takes over, so past records and invoices never change.
"""

from __future__ import annotations

from django.core.validators import MaxValueValidator
from django.db import models
from django.utils import timezone


class UsageRecord(models.Model):
    request_id = models.CharField(max_length=64, unique=True)
    # The client's X-Request-Id: a label only (repeatable, searchable), never a key.
    client_request_id = models.CharField(max_length=128, blank=True, default="", db_index=True)
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
    # The unit prices the request was charged at (after the tenant's override), micro-dollars
    # per million tokens: invoices and /v1/usage show them without re-deriving history.
    input_price = models.BigIntegerField(default=0)
    output_price = models.BigIntegerField(default=0)
    cached_input_price = models.BigIntegerField(default=0)
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

    ``deployment`` empty is the model's list; a row naming a deployment prices only requests
    served there and wins over the model's list. A request is priced by the row in force when it
    started; a new price is a new row, so past records never change.
    """

    model = models.CharField(max_length=128)
    deployment = models.CharField(
        max_length=128, blank=True, default="", help_text="Empty: every deployment of the model."
    )
    input_micro_usd_per_mtok = models.PositiveBigIntegerField()
    output_micro_usd_per_mtok = models.PositiveBigIntegerField()
    cached_input_micro_usd_per_mtok = models.PositiveBigIntegerField(null=True, blank=True)
    effective_from = models.DateTimeField(default=timezone.now)
    created = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["model", "deployment", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["model", "deployment", "effective_from"], name="price_once_per_instant"
            )
        ]
        indexes = [models.Index(fields=["model", "-effective_from"])]

    def __str__(self) -> str:
        where = f"@{self.deployment}" if self.deployment else ""
        return (
            f"{self.model}{where} in={self.input_micro_usd_per_mtok} "
            f"out={self.output_micro_usd_per_mtok}"
        )


class TenantPriceOverride(models.Model):
    """A tenant's terms on top of the price list, from ``effective_from`` on.

    Committed-use rates (any of the three, micro-dollars per million tokens) replace the list
    rates; the discount (basis points, 1500 = 15%) then applies to whatever rates are in force.
    ``model`` empty covers every model; a row naming the model wins.
    """

    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="price_overrides"
    )
    model = models.CharField(max_length=128, blank=True, default="")
    discount_bp = models.PositiveIntegerField(
        default=0, validators=[MaxValueValidator(10_000)], help_text="1500 = 15% off."
    )
    input_micro_usd_per_mtok = models.PositiveBigIntegerField(null=True, blank=True)
    output_micro_usd_per_mtok = models.PositiveBigIntegerField(null=True, blank=True)
    cached_input_micro_usd_per_mtok = models.PositiveBigIntegerField(null=True, blank=True)
    effective_from = models.DateTimeField(default=timezone.now)
    created = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["tenant", "model", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "model", "effective_from"], name="override_once_per_instant"
            ),
            models.CheckConstraint(
                condition=models.Q(discount_bp__lte=10_000), name="override_discount_at_most_100"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.model or '*'} -{self.discount_bp}bp"


class UsageRollup(models.Model):
    """Sums of usage records per hour or day and tenant, model, deployment, key and unit
    prices. Built from raw records by :mod:`billing.rollups`; holds exactly the records with
    ``id <= RollupState.last_record_id``."""

    class Granularity(models.TextChoices):
        HOUR = "hour", "Hour"
        DAY = "day", "Day"

    granularity = models.CharField(max_length=4, choices=Granularity.choices)
    bucket = models.DateTimeField(help_text="Start of the hour or UTC day.")
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    model = models.CharField(max_length=128)
    deployment = models.CharField(max_length=128, blank=True)
    api_key_id = models.BigIntegerField(null=True, blank=True)
    input_price = models.BigIntegerField(default=0)
    output_price = models.BigIntegerField(default=0)
    cached_input_price = models.BigIntegerField(default=0)
    requests = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    cost_micro_usd = models.BigIntegerField(default=0)

    class Meta:
        indexes = [
            models.Index(fields=["granularity", "bucket"]),
            models.Index(fields=["tenant", "granularity", "bucket"]),
        ]

    def __str__(self) -> str:
        return f"{self.granularity} {self.bucket:%Y-%m-%d %H:00} {self.tenant_id} {self.model}"


class RollupState(models.Model):
    """One row: every usage record with ``id <= last_record_id`` is in the rollups."""

    last_record_id = models.BigIntegerField(default=0)
    updated = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"rolled up to record {self.last_record_id}"


class BillingProfile(models.Model):
    """Where a tenant's billing alerts go besides its contact e-mail."""

    tenant = models.OneToOneField(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="billing_profile"
    )
    alert_emails = models.CharField(
        max_length=512, blank=True, help_text="Comma-separated, besides the contact e-mail."
    )
    webhook_url = models.URLField(max_length=512, blank=True)

    def __str__(self) -> str:
        return f"billing profile of {self.tenant_id}"


class Alert(models.Model):
    """A budget threshold crossed or a usage anomaly, recorded once and then delivered.

    ``dedupe_key`` makes each alert happen once: ``budget:<id>:<period>:<threshold>`` or
    ``anomaly:<tenant>:<metric>:<hour>``.
    """

    class Kind(models.TextChoices):
        BUDGET = "budget", "Budget threshold"
        ANOMALY = "anomaly", "Usage anomaly"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="alerts")
    dedupe_key = models.CharField(max_length=128, unique=True)
    subject = models.CharField(max_length=255)
    message = models.TextField()
    details = models.JSONField(default=dict)
    created = models.DateTimeField(default=timezone.now, db_index=True)
    email_sent = models.DateTimeField(null=True, blank=True)
    webhook_sent = models.DateTimeField(null=True, blank=True)
    delivery_attempts = models.PositiveSmallIntegerField(default=0)
    delivery_error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return self.subject
