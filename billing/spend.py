"""A budget's spend for its current period: the one figure the gateway's hard stop, the budget
alerts and the console all use.

The gateway keeps a Redis counter per tenant, period and budget period (seeded from the usage
records when it first sees the period, then moved by every reservation and settlement); that
counter is what a hard budget is enforced against, so it is the figure here too. Where no
gateway has touched the period yet, the counter does not exist and the settled spend in the
database is the figure (it is also what the counter would be seeded with).
"""

from __future__ import annotations

import datetime as dt

import redis

from serving.gateway.budget import period_start, spend_in_db
from switchyard.redis_client import get_redis
from tenants.models import Budget

BUDGET_PREFIX = "sy:budget"


def budget_key(tenant_id: int, period: str, now: dt.datetime) -> str:
    """The gateway's counter key (``serving.gateway.budget.BudgetLedger.key``)."""
    fmt = "%Y%m%d" if period == Budget.Period.DAILY else "%Y%m"
    return f"{BUDGET_PREFIX}:{tenant_id}:{period}:{period_start(period, now).strftime(fmt)}"


def budget_spend(
    budget: Budget, now: dt.datetime | None = None, *, client: redis.Redis | None = None
) -> int:
    """Micro-dollars spent in ``budget``'s current period, as the gateway counts it."""
    now = now or dt.datetime.now(dt.UTC)
    live = (client or get_redis()).get(budget_key(budget.tenant_id, budget.period, now))
    if live is not None:
        return int(live)
    return spend_in_db(budget.tenant_id, period_start(budget.period, now))
