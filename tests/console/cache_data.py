"""Cache rows for console tests, made through the same functions the gateway and the
ingestion path use (random unit vectors stand in for embeddings)."""

from __future__ import annotations

import datetime as dt
import random

from django.utils import timezone

from billing.models import UsageRecord
from serving.cache import semantic
from serving.models import RequestLog


def unit_vector(seed: int) -> list[float]:
    rng = random.Random(seed)
    v = [rng.gauss(0, 1) for _ in range(384)]
    norm = sum(x * x for x in v) ** 0.5
    return [x / norm for x in v]


def add_entry(tenant, prompt: str, seed: int = 0):
    return semantic.insert(
        tenant_id=tenant.pk,
        scope=f"t:{tenant.pk}",
        model="smollm2-135m-instruct",
        context_hash="0" * 64,
        embedding=unit_vector(seed),
        prompt=prompt,
        response={"choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}}]},
        input_tokens=10,
        output_tokens=20,
        ttl_seconds=3600,
    )


def add_traffic(tenant, outcomes: list[tuple[str, int, int]]) -> None:
    """One request-log row and usage record per (cache outcome, cost, saved)."""
    now = timezone.now()
    for i, (cache, cost, saved) in enumerate(outcomes):
        rid = f"req_{tenant.slug}_{i}"
        created = now - dt.timedelta(seconds=i)
        RequestLog.objects.create(
            request_id=rid, tenant=tenant, endpoint="chat.completions", model="m",
            status_code=200, input_tokens=10, output_tokens=20, cache=cache, created=created,
        )  # fmt: skip
        UsageRecord.objects.create(
            request_id=rid, tenant=tenant, model="m", input_tokens=10, output_tokens=20,
            cost_micro_usd=cost, cache=cache, saved_micro_usd=saved, created=created,
        )  # fmt: skip
