"""Deployments (where a model runs) and the per-request log."""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone


class Deployment(models.Model):
    """One place a public model name is served: a Switchyard model worker, any
    OpenAI-compatible base URL, Anthropic's Messages API or an Azure OpenAI resource. The
    upstream key is stored encrypted (serving.secrets)."""

    class Kind(models.TextChoices):
        LOCAL_WORKER = "local_worker", "Switchyard model worker"
        OPENAI_COMPATIBLE = "openai_compatible", "OpenAI-compatible API"
        ANTHROPIC = "anthropic", "Anthropic Messages API"
        AZURE_OPENAI = "azure_openai", "Azure OpenAI"

    class Capability(models.TextChoices):
        CODE = "code", "Code"
        LONG_CONTEXT = "long_context", "Long context"
        TOOLS = "tools", "Tools (function calling)"
        VISION = "vision", "Vision (image inputs)"

    class HealthCheck(models.TextChoices):
        HEALTH_URL = "health", "GET /health next to the base URL"
        COMPLETION = "completion", "A one-token completion"
        NONE = "none", "No active check (passive only)"

    name = models.SlugField(max_length=64, unique=True)
    model = models.CharField(max_length=128, db_index=True, help_text="Public model name.")
    upstream_model = models.CharField(
        max_length=128,
        blank=True,
        help_text="Model name at the upstream (default: the public one).",
    )
    kind = models.CharField(max_length=32, choices=Kind.choices, default=Kind.LOCAL_WORKER)
    base_url = models.URLField(max_length=255, help_text="e.g. http://127.0.0.1:8100/v1")
    api_key_encrypted = models.TextField(blank=True, editable=False)
    api_version = models.CharField(
        max_length=32,
        blank=True,
        help_text="Azure OpenAI's api-version query parameter (default 2024-10-21).",
    )
    weight = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    max_concurrency = models.PositiveIntegerField(default=64)
    context_window = models.PositiveIntegerField(default=8192)
    enabled = models.BooleanField(default=True)
    timeout_seconds = models.FloatField(default=120.0, validators=[MinValueValidator(0.1)])
    capabilities = ArrayField(
        models.CharField(max_length=32, choices=Capability.choices),
        default=list,
        blank=True,
        help_text="What it is good at or can do: code and long_context for routing rules; "
        "tools and vision are required by requests with tools or images.",
    )
    quality = models.FloatField(
        default=0.8,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="0-1; cost-aware groups skip deployments below the tier's quality floor.",
    )
    health_check = models.CharField(
        max_length=16, choices=HealthCheck.choices, default=HealthCheck.HEALTH_URL
    )
    created = models.DateTimeField(default=timezone.now, editable=False)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model", "name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.model})"

    @property
    def target_model(self) -> str:
        return self.upstream_model or self.model

    @property
    def has_api_key(self) -> bool:
        return bool(self.api_key_encrypted)


class RequestLog(models.Model):
    """One row per gateway request, written in batches off the hot path."""

    request_id = models.CharField(max_length=64, unique=True)
    # The client's X-Request-Id: a label only (repeatable, searchable), never a key.
    client_request_id = models.CharField(max_length=128, blank=True, default="", db_index=True)
    tenant = models.ForeignKey(
        "tenants.Tenant", null=True, on_delete=models.SET_NULL, related_name="request_logs"
    )
    api_key = models.ForeignKey(
        "tenants.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    endpoint = models.CharField(max_length=32)
    model = models.CharField(max_length=128, blank=True)
    deployment = models.CharField(max_length=64, blank=True)
    status_code = models.PositiveSmallIntegerField()
    error_code = models.CharField(max_length=64, blank=True)
    stream = models.BooleanField(default=False)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost_micro_usd = models.BigIntegerField(default=0)
    latency_ms = models.FloatField(default=0)
    ttft_ms = models.FloatField(null=True, blank=True)
    cache = models.CharField(max_length=16, default="miss")
    route = models.CharField(max_length=255, blank=True, help_text="x-switchyard-route")
    request_body = models.JSONField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created"]
        indexes = [
            models.Index(fields=["tenant", "-created"]),
            models.Index(fields=["status_code"]),
        ]

    def __str__(self) -> str:
        return self.request_id


class DeadLetter(models.Model):
    """A stream entry that could not be stored (see switchyard.streams): kept with the reason so
    an operator can look at it, retry it or delete it; ingestion never blocks on it."""

    stream = models.CharField(max_length=64, db_index=True)
    entry_id = models.CharField(max_length=64, blank=True)
    payload = models.JSONField(default=dict, help_text="The entry's fields, sanitised.")
    error = models.CharField(max_length=500)
    created = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"{self.stream} {self.entry_id}"


class ModelGroup(models.Model):
    """A public model name (``auto``, ``fast``, ``smart``, ...) served by a group of
    deployments, balanced by one strategy. Deployments whose ``model`` is the group's name
    belong to it too, so a group row for a concrete model name only sets its strategy."""

    class Strategy(models.TextChoices):
        WEIGHTED = "weighted", "Weighted random"
        LEAST_CONNECTIONS = "least_connections", "Least connections"
        LOWEST_LATENCY = "lowest_latency", "Lowest latency (EWMA of TTFT)"
        POWER_OF_TWO = "power_of_two", "Power of two choices"
        CHEAPEST = "cheapest", "Cost-aware: cheapest above the tier's quality floor"

    name = models.CharField(max_length=128, unique=True, help_text="Public model name.")
    strategy = models.CharField(max_length=32, choices=Strategy.choices, default=Strategy.WEIGHTED)
    members = models.ManyToManyField(Deployment, blank=True, related_name="groups")
    description = models.CharField(max_length=255, blank=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class RoutingRule(models.Model):
    """One ordered model-selection rule: every condition set must match; first match wins."""

    class TaskClass(models.TextChoices):
        ANY = "", "Any"
        SIMPLE = "simple", "Simple"
        COMPLEX = "complex", "Complex"
        CODE = "code", "Code"

    position = models.PositiveIntegerField(default=100, help_text="Lower runs first.")
    name = models.SlugField(max_length=64, unique=True)
    enabled = models.BooleanField(default=True)
    tier = models.ForeignKey(
        "tenants.Tier", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    tenant = models.ForeignKey(
        "tenants.Tenant", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    requested_models = ArrayField(
        models.CharField(max_length=128),
        default=list,
        blank=True,
        help_text="Match these requested names (empty: any).",
    )
    min_prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    max_prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    task_class = models.CharField(max_length=16, choices=TaskClass.choices, blank=True)
    metadata_key = models.CharField(max_length=64, blank=True)
    metadata_value = models.CharField(max_length=255, blank=True)
    target = models.CharField(max_length=128, help_text="Public model or group to route to.")
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return f"{self.position}: {self.name} -> {self.target}"
