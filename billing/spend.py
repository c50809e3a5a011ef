"""A budget's spend for its current period: the one figure the gateway's hard stop, the budget
alerts and the console all use.

The gateway keeps a Redis counter per tenant and budget period (seeded from the usage records
when it first sees the period, then moved by every reservation and settlement); that counter is
what a hard budget is enforced against, so it is the figure here too. Where no gateway has
touched the period yet, the counter does not exist and the settled spend in the database is the
figure (what the counter would be seeded with), read through the rollups
(:mod:`billing.selectors`) so that a page of many budgets costs one query per period kind.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import redis

from billing import selectors
from billing.periods import period_end, period_start
from switchyard.redis_client import get_redis
from tenants.models import Budget

BUDGET_PREFIX = "sy:budget"


def budget_key(tenant_id: int, period: str, now: dt.datetime) -> str:
    """The gateway's counter key (``billing.ledger.BudgetLedger.key``)."""
    fmt = "%Y%m%d" if period == Budget.Period.DAILY else "%Y%m"
    return f"{BUDGET_PREFIX}:{tenant_id}:{period}:{period_start(period, now).strftime(fmt)}"


def settled_spend(
    period: str, now: dt.datetime, tenant_ids: Iterable[int] | None = None
) -> dict[int, int]:
    """Micro-dollars of usage records in the current ``period``, by tenant."""
    ids = None if tenant_ids is None else list(tenant_ids)
    kw = {"tenant_id": ids[0]} if ids is not None and len(ids) == 1 else {}
    rows = selectors.usage(
        start=period_start(period, now),
        end=period_end(period, now),
        granularity="day",
        group_by=("tenant_id",),
        **kw,
    )
    return {r.tenant_id: r.cost_micro_usd for r in rows}


def budget_spends(
    budgets: list[Budget], now: dt.datetime | None = None, *, client: redis.Redis | None = None
) -> dict[int, int]:
    """Each budget's spend in its current period (micro-dollars), by budget id."""
    if not budgets:
        return {}
    now = now or dt.datetime.now(dt.UTC)
    keys = [budget_key(b.tenant_id, b.period, now) for b in budgets]
    live = (client or get_redis()).mget(keys)
    out: dict[int, int] = {}
    missing: dict[str, list[Budget]] = {}
    for b, value in zip(budgets, live, strict=True):
        if value is not None:
            out[b.pk] = int(value)
        else:
            missing.setdefault(b.period, []).append(b)
    for period, group in missing.items():
        settled = settled_spend(period, now, {b.tenant_id for b in group})
        for b in group:
            out[b.pk] = settled.get(b.tenant_id, 0)
    return out


def budget_spend(
    budget: Budget, now: dt.datetime | None = None, *, client: redis.Redis | None = None
) -> int:
    """Micro-dollars spent in ``budget``'s current period, as the gateway counts it."""
    return budget_spends([budget], now, client=client)[budget.pk]
