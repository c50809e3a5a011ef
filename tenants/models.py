"""Tenants, their tiers (plans), API keys, budgets, and the operators' audit log.

Rules live in ``tenants.services`` (every write goes through one function there); the models
hold data, constraints and small derived properties.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone


def default_alert_thresholds() -> list[int]:
    return [50, 80, 100]


class Tier(models.Model):
    """A plan: rate limits, allowed models, fairness weight and cache behaviour."""

    name = models.CharField(max_length=64, unique=True)
    description = models.CharField(max_length=255, blank=True)
    requests_per_minute = models.PositiveIntegerField(default=60)
    tokens_per_minute = models.PositiveIntegerField(default=100_000)
    tokens_per_day = models.PositiveBigIntegerField(default=2_000_000)
    max_concurrent_requests = models.PositiveIntegerField(default=8)
    allowed_models = ArrayField(models.CharField(max_length=128), default=list, blank=True)
    default_model = models.CharField(max_length=128, blank=True)
    fairness_weight = models.FloatField(
        default=1.0, validators=[MinValueValidator(0.01), MaxValueValidator(1000.0)]
    )
    semantic_cache_threshold = models.FloatField(
        default=0.83,  # picked from benchmarks/cache (precision 0.995 with the second check)
        validators=[MinValueValidator(0.5), MaxValueValidator(1.0)],
        help_text="Cosine similarity (MiniLM) a semantic hit needs, before the second check.",
    )
    semantic_cache_ttl_seconds = models.PositiveIntegerField(
        default=3600, validators=[MinValueValidator(1)]
    )
    exact_cache_enabled = models.BooleanField(
        default=True, help_text="Replay answers to identical deterministic requests."
    )
    semantic_cache_enabled = models.BooleanField(
        default=True, help_text="Serve answers to prompts that mean the same in the same context."
    )
    semantic_cache_sampled = models.BooleanField(
        default=False,
        help_text="Also answer sampled requests (temperature above 0) from the semantic cache; "
        "off, only deterministic ones are looked up (and embedded).",
    )
    cache_hit_price_percent = models.PositiveSmallIntegerField(
        default=0,
        validators=[MaxValueValidator(100)],
        help_text="A cache hit costs this percentage of what the model call would have cost.",
    )
    cache_max_entries = models.PositiveIntegerField(
        default=10_000,
        validators=[MinValueValidator(1)],
        help_text="Per tenant, per cache; the oldest entries beyond it are dropped.",
    )
    allow_model_override = models.BooleanField(
        default=True, help_text="Callers may name a model instead of taking the router's choice."
    )
    quality_floor = models.FloatField(
        default=0.8,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Cost-aware routing picks only deployments of at least this quality (0-1).",
    )
    request_budget_micro_usd = models.PositiveBigIntegerField(
        default=0,
        help_text="Default most a request may cost, micro-dollars, for cost-aware routing "
        "(0: no limit; callers may send x-switchyard-max-cost-usd).",
    )
    pass_unknown_params = models.BooleanField(
        default=False,
        help_text="Pass OpenAI request parameters Switchyard does not know through to "
        "OpenAI-compatible deployments; off, they are refused with a 400.",
    )
    pii_redaction = models.BooleanField(
        default=True, help_text="Redact e-mails, phone, card and national ID numbers in and out."
    )
    blocklist = ArrayField(
        models.CharField(max_length=128),
        default=list,
        blank=True,
        help_text="Requests containing any of these words or phrases are refused.",
    )
    log_bodies = models.BooleanField(
        default=False, help_text="Keep (redacted) request and response bodies in the request log."
    )
    max_output_tokens = models.PositiveIntegerField(
        default=4096,
        help_text="Output tokens a request that names no max_tokens reserves against its limits "
        "and budget (0: the model's whole context window). Nothing is injected upstream: the "
        "model stops naturally and the actual tokens are billed.",
    )
    created = models.DateTimeField(default=timezone.now, editable=False)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(fairness_weight__gt=0), name="tier_fairness_weight_positive"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Tenant(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"

    name = models.CharField(max_length=128)
    slug = models.SlugField(max_length=64, unique=True)
    tier = models.ForeignKey(Tier, on_delete=models.PROTECT, related_name="tenants")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    contact_email = models.EmailField(blank=True)
    cache_shared_pool = models.BooleanField(
        default=False,
        help_text="Read and write the shared cache pool instead of a private one.",
    )
    created = models.DateTimeField(default=timezone.now, editable=False)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["status"])]

    def __str__(self) -> str:
        return self.slug

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


class ApiKey(models.Model):
    """A tenant's API key. Only a SHA-256 hash of the full key is stored, plus its visible
    prefix; the key itself is shown once, at creation."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=128)
    prefix = models.CharField(max_length=16, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True)
    created = models.DateTimeField(default=timezone.now, editable=False)
    last_used = models.DateTimeField(null=True, blank=True)
    expires = models.DateTimeField(null=True, blank=True)
    revoked = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.display} ({self.name})"

    @property
    def display(self) -> str:
        return f"sy-{self.prefix}…"

    def is_usable(self, now=None) -> bool:
        now = now or timezone.now()
        return self.revoked is None and (self.expires is None or self.expires > now)

    @property
    def state(self) -> str:
        if self.revoked is not None:
            return "revoked"
        if self.expires is not None and self.expires <= timezone.now():
            return "expired"
        return "active"


class Budget(models.Model):
    class Period(models.TextChoices):
        DAILY = "daily", "Daily"
        MONTHLY = "monthly", "Monthly"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="budgets")
    period = models.CharField(max_length=16, choices=Period.choices)
    limit_micro_usd = models.PositiveBigIntegerField(help_text="Limit in micro-dollars (1e-6 USD).")
    hard = models.BooleanField(default=False, help_text="Refuse requests once the limit is met.")
    alert_thresholds = ArrayField(
        models.PositiveSmallIntegerField(
            validators=[MinValueValidator(1), MaxValueValidator(1000)]
        ),
        default=default_alert_thresholds,
        blank=True,
        help_text="Percentages of the limit at which operators are alerted.",
    )
    created = models.DateTimeField(default=timezone.now, editable=False)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tenant__slug", "period"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "period"], name="budget_one_per_period"),
        ]

    def __str__(self) -> str:
        return f"{self.tenant} {self.period} {self.limit_micro_usd}µ$"


class AuditEvent(models.Model):
    """Who changed what, when, with the object's state before and after."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_repr = models.CharField(max_length=150, help_text="Username at the time, or 'system'.")
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64)
    object_repr = models.CharField(max_length=255)
    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_events"
    )
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self) -> str:
        return (
            f"{self.created:%Y-%m-%d %H:%M:%S} {self.actor_repr} {self.action} {self.object_repr}"
        )
