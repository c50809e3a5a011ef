"""Prices in force and the cost of a request, in integer micro-dollars.

Resolution for a request that started at ``at`` on ``deployment`` for ``tenant``:

1. the newest ``ModelPrice`` row for (model, deployment) with ``effective_from <= at``, else the
   newest such row of the model's own list (deployment empty), else free;
2. the tenant's newest ``TenantPriceOverride`` in force at ``at`` (a row for the model wins over
   an all-models row): committed-use rates replace list rates, then the discount applies to
   each rate (rounded half up to a whole micro-dollar per million tokens).

Tables are cached per process for ``SWITCHYARD_TABLE_CACHE_SECONDS``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from billing.models import ModelPrice, TenantPriceOverride
from switchyard.ttl_cache import TtlCache

CACHE_SECONDS = settings.SWITCHYARD_TABLE_CACHE_SECONDS


@dataclass(frozen=True)
class Price:
    """Unit prices in micro-dollars per million tokens."""

    model: str
    input_per_mtok: int
    output_per_mtok: int
    cached_input_per_mtok: int
    price_id: int | None
    override_id: int | None = None

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
_price_cache: TtlCache[str, list[ModelPrice]] = TtlCache(CACHE_SECONDS)
_override_cache: TtlCache[int, list[TenantPriceOverride]] = TtlCache(CACHE_SECONDS)


def _rows(model: str) -> list[ModelPrice]:
    return _price_cache.get_or_load(
        model,
        lambda: list(ModelPrice.objects.filter(model=model).order_by("-effective_from")[:500]),
    )


def _overrides(tenant_id: int) -> list[TenantPriceOverride]:
    return _override_cache.get_or_load(
        tenant_id,
        lambda: list(
            TenantPriceOverride.objects.filter(tenant_id=tenant_id).order_by("-effective_from")
        ),
    )


def _list_price(
    model: str, at: datetime, deployment: str | None, all_rows: list[ModelPrice] | None = None
) -> Price:
    rows = [r for r in (_rows(model) if all_rows is None else all_rows) if r.effective_from <= at]
    chosen = None
    if deployment:
        chosen = next((r for r in rows if r.deployment == deployment), None)
    if chosen is None:
        chosen = next((r for r in rows if r.deployment == ""), None)
    if chosen is None:
        return Price(model, 0, 0, 0, None)
    cached = chosen.cached_input_micro_usd_per_mtok
    return Price(
        model,
        chosen.input_micro_usd_per_mtok,
        chosen.output_micro_usd_per_mtok,
        chosen.input_micro_usd_per_mtok if cached is None else cached,
        chosen.pk,
    )


def _discounted(rate: int, discount_bp: int) -> int:
    return (rate * (10_000 - discount_bp) + 5_000) // 10_000


def apply_override(price: Price, override: TenantPriceOverride | None) -> Price:
    """``price`` under the tenant's terms (see the module docstring)."""
    if override is None:
        return price
    inp = override.input_micro_usd_per_mtok
    out = override.output_micro_usd_per_mtok
    cached = override.cached_input_micro_usd_per_mtok
    inp = price.input_per_mtok if inp is None else inp
    out = price.output_per_mtok if out is None else out
    if cached is None:
        # A committed input rate with no cached rate of its own keeps the list's ratio closed:
        # cached input is never dearer than fresh input.
        cached = min(price.cached_input_per_mtok, inp)
    d = override.discount_bp
    return replace(
        price,
        input_per_mtok=_discounted(inp, d),
        output_per_mtok=_discounted(out, d),
        cached_input_per_mtok=_discounted(cached, d),
        override_id=override.pk,
    )


def override_at(
    tenant_id: int,
    model: str,
    at: datetime,
    all_rows: list[TenantPriceOverride] | None = None,
) -> TenantPriceOverride | None:
    rows = [
        r for r in (_overrides(tenant_id) if all_rows is None else all_rows)
        if r.effective_from <= at
    ]  # fmt: skip
    return next((r for r in rows if r.model == model), None) or next(
        (r for r in rows if r.model == ""), None
    )


def price_at(
    model: str,
    at: datetime | None = None,
    *,
    deployment: str | None = None,
    tenant_id: int | None = None,
) -> Price:
    """The unit prices for ``model`` in force at ``at`` (now by default): the deployment's list
    if it has one, else the model's; with ``tenant_id``, under that tenant's override. Free if
    no list is in force."""
    at = at or timezone.now()
    price = _list_price(model, at, deployment)
    if tenant_id is not None:
        price = apply_override(price, override_at(tenant_id, model, at))
    return price


def cached_price_at(
    model: str,
    at: datetime | None = None,
    *,
    deployment: str | None = None,
    tenant_id: int | None = None,
) -> Price | None:
    """:func:`price_at` from this process's caches alone, or None when one of them is stale
    (so async callers answer on the event loop, and go to a thread only then). Each cache is
    read once: an entry that goes stale between a freshness check and its use would make
    :func:`price_at` query the database on the event loop."""
    rows = _price_cache.get(model)
    if rows is None:
        return None
    overrides = None
    if tenant_id is not None:
        overrides = _override_cache.get(tenant_id)
        if overrides is None:
            return None
    at = at or timezone.now()
    price = _list_price(model, at, deployment, rows)
    if tenant_id is not None:
        price = apply_override(price, override_at(tenant_id, model, at, overrides))
    return price


def clear_cache() -> None:
    _price_cache.clear()
    _override_cache.clear()
