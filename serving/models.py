"""Deployments (where a model runs) and the per-request log."""

from __future__ import annotations

from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone


class Deployment(models.Model):
    """One place a public model name is served: a Switchyard model worker or any
    OpenAI-compatible base URL. The upstream key is stored encrypted (serving.secrets)."""

    class Kind(models.TextChoices):
        LOCAL_WORKER = "local_worker", "Switchyard model worker"
        OPENAI_COMPATIBLE = "openai_compatible", "OpenAI-compatible API"

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
    weight = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    max_concurrency = models.PositiveIntegerField(default=64)
    context_window = models.PositiveIntegerField(default=8192)
    enabled = models.BooleanField(default=True)
    timeout_seconds = models.FloatField(default=120.0, validators=[MinValueValidator(0.1)])
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
