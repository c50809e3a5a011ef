"""Budget reservation in Redis: the worst-case cost is reserved before a request and settled
to the real cost after, so a hard budget is never exceeded (each in-flight request holds its
worst case). The counter starts from the database's spend for the period.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models import Sum

from billing.models import UsageRecord
from billing.selectors import usage
from tenants.models import Budget

CACHE_SECONDS = settings.SWITCHYARD_TABLE_CACHE_SECONDS

# KEYS: one spend counter per budget; ARGV: cost, then (limit, hard) per key. A counter not
# yet in Redis answers {-1, i}: the caller seeds it from the database and tries again.
_RESERVE = """
local cost = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 0 then return {-1, i, 0} end
end
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i])
  local hard = ARGV[2 * i + 1] == '1'
  local spent = tonumber(redis.call('GET', key) or '0')
  if hard and spent + cost > limit then return {0, i, spent} end
end
for i, key in ipairs(KEYS) do redis.call('INCRBY', key, cost) end
return {1, 0, 0}
"""

_SETTLE = """
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then redis.call('INCRBY', key, ARGV[1]) end
end
return 1
"""


def period_start(period: str, now: dt.datetime) -> dt.datetime:
    now = now.astimezone(dt.UTC)
    if period == Budget.Period.DAILY:
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _period_key(period: str, now: dt.datetime) -> str:
    start = period_start(period, now)
    return start.strftime("%Y%m%d" if period == Budget.Period.DAILY else "%Y%m")


class BudgetExhausted(Exception):
    def __init__(self, budget: Budget, spent: int) -> None:
        super().__init__(f"{budget.period} budget exhausted")
        self.budget = budget
        self.spent = spent


@dataclass
class BudgetReservation:
    keys: list[str]
    cost: int
    settled: bool = False


_budget_cache: dict[int, tuple[float, list[Budget]]] = {}


def _fresh_budgets(tenant_id: int) -> list[Budget] | None:
    """The cached budgets of the tenant if fresh (no I/O: safe on the event loop)."""
    hit = _budget_cache.get(tenant_id)
    if hit is not None and time.monotonic() - hit[0] <= CACHE_SECONDS:
        return hit[1]
    return None


def _tenant_budgets(tenant_id: int) -> list[Budget]:
    now = time.monotonic()
    hit = _budget_cache.get(tenant_id)
    if hit is None or now - hit[0] > CACHE_SECONDS:
        hit = (now, list(Budget.objects.filter(tenant_id=tenant_id)))
        _budget_cache[tenant_id] = hit
    return hit[1]


def spend_in_db(tenant_id: int, since: dt.datetime) -> int:
    """Settled spend of the tenant since ``since``, in micro-dollars (the usage records).

    A period start (a UTC day boundary) is read through the billing rollups plus the records not
    yet rolled up (exact, and fast at millions of records); any other instant from the records.
    """
    if since == since.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0):
        end = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        end = max(end, since) + dt.timedelta(days=1)
        rows = usage(start=since, end=end, granularity="day", group_by=(), tenant_id=tenant_id)
        return rows[0].cost_micro_usd if rows else 0
    total = UsageRecord.objects.filter(tenant_id=tenant_id, created__gte=since).aggregate(
        s=Sum("cost_micro_usd")
    )["s"]
    return int(total or 0)


class BudgetLedger:
    def __init__(self, client: aioredis.Redis, *, prefix: str = "sy:budget") -> None:
        self.redis = client
        self.prefix = prefix
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)

    def key(self, tenant_id: int, period: str, now: dt.datetime) -> str:
        return f"{self.prefix}:{tenant_id}:{period}:{_period_key(period, now)}"

    async def _ensure_counter(self, key: str, tenant_id: int, period: str, now) -> None:
        if await self.redis.exists(key):
            return
        spent = await sync_to_async(spend_in_db, thread_sensitive=False)(
            tenant_id, period_start(period, now)
        )
        ttl = 2 * 86400 if period == Budget.Period.DAILY else 33 * 86400
        await self.redis.set(key, spent, nx=True, ex=ttl)

    async def reserve(self, *, tenant_id: int, cost: int) -> BudgetReservation:
        """Reserve ``cost`` micro-dollars on each of the tenant's budgets, or raise
        :class:`BudgetExhausted` for the first hard budget it would exceed."""
        budgets = _fresh_budgets(tenant_id)
        if budgets is None:
            budgets = await sync_to_async(_tenant_budgets, thread_sensitive=False)(tenant_id)
        if not budgets:
            return BudgetReservation([], cost)
        now = dt.datetime.now(dt.UTC)
        keys = [self.key(tenant_id, b.period, now) for b in budgets]
        args: list = [cost]
        for b in budgets:
            args += [b.limit_micro_usd, "1" if b.hard else "0"]
        # One round trip when the counters exist (every request but a period's first).
        ok, index, spent = await self._reserve(keys=keys, args=args)
        for _ in range(3):
            if ok != -1:
                break
            for key, b in zip(keys, budgets, strict=True):
                await self._ensure_counter(key, tenant_id, b.period, now)
            ok, index, spent = await self._reserve(keys=keys, args=args)
        else:
            raise RuntimeError("budget counters keep disappearing from Redis")
        if not ok:
            raise BudgetExhausted(budgets[int(index) - 1], int(spent))
        return BudgetReservation(keys, cost)

    async def settle(
        self, reservation: BudgetReservation, *, actual_cost: int, pipe: Any = None
    ) -> None:
        """Replace the reserved cost by ``actual_cost``; with ``pipe`` (a Redis pipeline) the
        call is queued there, to go with the caller's other writes in one round trip."""
        if reservation.settled or not reservation.keys:
            reservation.settled = True
            return
        reservation.settled = True
        await self._settle(
            keys=reservation.keys, args=[actual_cost - reservation.cost], client=pipe
        )

    async def spent(self, *, tenant_id: int, period: str) -> int:
        now = dt.datetime.now(dt.UTC)
        key = self.key(tenant_id, period, now)
        await self._ensure_counter(key, tenant_id, period, now)
        return int(await self.redis.get(key) or 0)


def clear_cache() -> None:
    _budget_cache.clear()
