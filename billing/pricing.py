"""Prices in force and the cost of a request, in integer micro-dollars."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from billing.models import ModelPrice

CACHE_SECONDS = settings.SWITCHYARD_TABLE_CACHE_SECONDS


@dataclass(frozen=True)
class Price:
    model: str
    input_per_mtok: int
    output_per_mtok: int
    cached_input_per_mtok: int
    price_id: int | None

    def cost(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> int:
        """Cost in micro-dollars, rounded half up once per request. Cached input tokens are
        charged at the cached-input price instead of the input price."""
        fresh = max(0, input_tokens - cached_tokens)
        nano = (
            fresh * self.input_per_mtok
            + cached_tokens * self.cached_input_per_mtok
            + output_tokens * self.output_per_mtok
        )
        return (nano + 500_000) // 1_000_000


FREE = Price("", 0, 0, 0, None)
_cache: dict[str, tuple[float, list[ModelPrice]]] = {}


def _rows(model: str) -> list[ModelPrice]:
    now = time.monotonic()
    hit = _cache.get(model)
    if hit is None or now - hit[0] > CACHE_SECONDS:
        rows = list(ModelPrice.objects.filter(model=model).order_by("-effective_from")[:20])
        hit = (now, rows)
        _cache[model] = hit
    return hit[1]


def price_at(model: str, at: datetime | None = None) -> Price:
    """The price list of ``model`` in force at ``at`` (now by default); free if none."""
    at = at or timezone.now()
    for row in _rows(model):
        if row.effective_from <= at:
            cached = row.cached_input_micro_usd_per_mtok
            return Price(
                model,
                row.input_micro_usd_per_mtok,
                row.output_micro_usd_per_mtok,
                row.input_micro_usd_per_mtok if cached is None else cached,
                row.pk,
            )
    return Price(model, 0, 0, 0, None)


def clear_cache() -> None:
    _cache.clear()
