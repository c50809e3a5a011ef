"""Budget reservation in Redis: the worst-case cost is reserved before a request and settled
to the real cost after, so a hard budget is never exceeded (each in-flight request holds its
worst case). The counter starts from the database's spend for the period.

Each reservation is also held, until it is settled, in a sorted set beside its counter (member
``<token>:<cost>``, scored by a deadline ``RESERVATION_TTL`` seconds on). So the counter always
reads: settled spend + the costs held. :func:`reconcile_budgets` (Celery beat) uses that to put
drift right: it releases reservations past their deadline (a gateway that crashed, a client
that vanished before settling) and re-bases the counter on the usage records in PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models import Sum

from billing.models import UsageRecord
from billing.periods import period_end, period_start
from billing.selectors import usage
from billing.spend import settled_spend
from switchyard.single_flight import load_once
from switchyard.ttl_cache import TtlCache
from tenants.models import Budget

log = logging.getLogger(__name__)

CACHE_SECONDS = settings.SWITCHYARD_TABLE_CACHE_SECONDS
# A reservation not settled this many seconds after it was made is taken for abandoned (its
# gateway died, or forgot it) and released by reconciliation; a settlement arriving later
# still counts its real cost. Longer than any request may run.
RESERVATION_TTL = 3600

# KEYS: n spend counters (one per budget), then their n held-reservation sets.
# ARGV: cost, (limit, hard) per counter, member, deadline. A counter not yet in Redis answers
# {-1, i}: the caller seeds it from the database and tries again.
_RESERVE = """
local n = #KEYS / 2
local cost = tonumber(ARGV[1])
for i = 1, n do
  if redis.call('EXISTS', KEYS[i]) == 0 then return {-1, i, 0} end
end
for i = 1, n do
  local limit = tonumber(ARGV[2 * i])
  local hard = ARGV[2 * i + 1] == '1'
  local spent = tonumber(redis.call('GET', KEYS[i]) or '0')
  if hard and spent + cost > limit then return {0, i, spent} end
end
local member, deadline = ARGV[2 * n + 2], ARGV[2 * n + 3]
for i = 1, n do
  redis.call('INCRBY', KEYS[i], ARGV[1])
  redis.call('ZADD', KEYS[n + i], deadline, member)
  local ttl = redis.call('TTL', KEYS[i])
  if ttl > 0 then redis.call('EXPIRE', KEYS[n + i], ttl) end
end
return {1, 0, 0}
"""

# KEYS: counters (then their held sets when ARGV[2], the member, is not empty).
# ARGV: actual - reserved, member, actual. A reservation no longer held was released by
# reconciliation (or its counter was seeded afresh): only its real cost is added.
_SETTLE = """
local member = ARGV[2] or ''
if member == '' then
  for i, key in ipairs(KEYS) do
    if redis.call('EXISTS', key) == 1 then redis.call('INCRBY', key, ARGV[1]) end
  end
  return 1
end
local n = #KEYS / 2
for i = 1, n do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    if redis.call('ZREM', KEYS[n + i], member) == 1 then
      redis.call('INCRBY', KEYS[i], ARGV[1])
    else
      redis.call('INCRBY', KEYS[i], ARGV[3])
    end
  end
end
return 1
"""

# KEYS: counter, its held set; ARGV: spend, ttl. A new counter starts with nothing held.
_SEED = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then redis.call('DEL', KEYS[2]) end
return 1
"""


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
    # The held-reservation sets beside ``keys`` and this reservation's member in them.
    held: list[str] = field(default_factory=list)
    member: str = ""


@dataclass
class BudgetPlan:
    """A reservation prepared by :meth:`BudgetLedger.plan`, to queue in a pipeline."""

    tenant_id: int
    cost: int
    budgets: list[Budget]
    now: dt.datetime
    keys: list[str]
    held: list[str]
    member: str
    args: list


_budget_cache: TtlCache[int, list[Budget]] = TtlCache(CACHE_SECONDS)


def _fresh_budgets(tenant_id: int) -> list[Budget] | None:
    """The cached budgets of the tenant if fresh (no I/O: safe on the event loop)."""
    return _budget_cache.get(tenant_id)


def _tenant_budgets(tenant_id: int) -> list[Budget]:
    return _budget_cache.get_or_load(
        tenant_id, lambda: list(Budget.objects.filter(tenant_id=tenant_id))
    )


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

        self._seed = client.register_script(_SEED)

    def key(self, tenant_id: int, period: str, now: dt.datetime) -> str:
        return f"{self.prefix}:{tenant_id}:{period}:{_period_key(period, now)}"

    def held_key(self, key: str) -> str:
        return held_key(key, self.prefix)

    async def _ensure_counter(self, key: str, tenant_id: int, period: str, now) -> None:
        if await self.redis.exists(key):
            return
        spent = await sync_to_async(spend_in_db, thread_sensitive=False)(
            tenant_id, period_start(period, now)
        )
        ttl = 2 * 86400 if period == Budget.Period.DAILY else 33 * 86400
        await self._seed(keys=[key, self.held_key(key)], args=[spent, ttl])

    async def plan(self, *, tenant_id: int, cost: int) -> BudgetPlan:
        """What reserving ``cost`` on the tenant's budgets takes (their list is cached; read
        off the event loop when stale)."""
        budgets = _fresh_budgets(tenant_id)
        if budgets is None:
            budgets = await load_once(("budgets", tenant_id), _tenant_budgets, tenant_id)
        now = dt.datetime.now(dt.UTC)
        keys = [self.key(tenant_id, b.period, now) for b in budgets]
        member = f"{secrets.token_hex(8)}:{int(cost)}"
        args: list = [cost]
        for b in budgets:
            args += [b.limit_micro_usd, "1" if b.hard else "0"]
        args += [member, time.time() + RESERVATION_TTL]
        held = [self.held_key(k) for k in keys]
        return BudgetPlan(tenant_id, cost, budgets, now, keys, held, member, args)

    def queue_reserve(self, pipe: Any, plan: BudgetPlan) -> None:
        """Queue the reservation on ``pipe`` (EVAL: no SCRIPT EXISTS round trip)."""
        keys = plan.keys + plan.held
        pipe.eval(_RESERVE, len(keys), *keys, *plan.args)

    async def outcome(self, plan: BudgetPlan, result: list) -> BudgetReservation:
        """The reservation the queued script made; seeds missing counters and tries again (a
        period's first request); raises :class:`BudgetExhausted`."""
        ok, index, spent = result
        for _ in range(3):
            if ok != -1:
                break
            for key, b in zip(plan.keys, plan.budgets, strict=True):
                await self._ensure_counter(key, plan.tenant_id, b.period, plan.now)
            ok, index, spent = await self._reserve(keys=plan.keys + plan.held, args=plan.args)
        else:
            raise RuntimeError("budget counters keep disappearing from Redis")
        if not ok:
            raise BudgetExhausted(plan.budgets[int(index) - 1], int(spent))
        return BudgetReservation(plan.keys, plan.cost, held=plan.held, member=plan.member)

    async def reserve(self, *, tenant_id: int, cost: int) -> BudgetReservation:
        """Reserve ``cost`` micro-dollars on each of the tenant's budgets, or raise
        :class:`BudgetExhausted` for the first hard budget it would exceed. One round trip
        when the counters exist (every request but a period's first)."""
        plan = await self.plan(tenant_id=tenant_id, cost=cost)
        if not plan.budgets:
            return BudgetReservation([], cost)
        result = await self._reserve(keys=plan.keys + plan.held, args=plan.args)
        return await self.outcome(plan, result)

    async def settle(
        self, reservation: BudgetReservation, *, actual_cost: int, pipe: Any = None
    ) -> None:
        """Replace the reserved cost by ``actual_cost``; with ``pipe`` (a Redis pipeline) the
        call is queued there, to go with the caller's other writes in one round trip."""
        if reservation.settled or not reservation.keys:
            reservation.settled = True
            return
        reservation.settled = True
        keys = reservation.keys + reservation.held
        args = [actual_cost - reservation.cost, reservation.member, actual_cost]
        if pipe is not None:
            # EVAL: a pipeline holding registered scripts costs an extra SCRIPT EXISTS round
            # trip on every execute (redis-py).
            pipe.eval(_SETTLE, len(keys), *keys, *args)
            return
        await self._settle(keys=keys, args=args)

    async def spent(self, *, tenant_id: int, period: str) -> int:
        now = dt.datetime.now(dt.UTC)
        key = self.key(tenant_id, period, now)
        await self._ensure_counter(key, tenant_id, period, now)
        return int(await self.redis.get(key) or 0)


def clear_cache() -> None:
    _budget_cache.clear()


# ---- reconciliation --------------------------------------------------------------------------


def held_key(key: str, prefix: str = "sy:budget") -> str:
    """The sorted set of reservations held on counter ``key`` (outside ``prefix:*``, so that
    scans of the counters never meet it)."""
    return f"{prefix}-held{key[len(prefix) :]}"


# KEYS: n counters, their n held sets, then the usage stream. ARGV: now (epoch seconds).
# Releases the held reservations past their deadline, then answers, atomically, the usage
# stream's last entry id and per counter {exists, value, live held cost, released count}.
_SNAPSHOT = """
local n = (#KEYS - 1) / 2
local function cost(member) return tonumber(string.match(member, ':(%-?%d+)$') or '0') end
local out = {}
for i = 1, n do
  local key, held = KEYS[i], KEYS[n + i]
  if redis.call('EXISTS', key) == 0 then
    out[i] = {0, 0, 0, 0}
  else
    local expired = redis.call('ZRANGEBYSCORE', held, '-inf', '(' .. ARGV[1])
    if #expired > 0 then
      local released = 0
      for _, m in ipairs(expired) do released = released + cost(m) end
      redis.call('ZREMRANGEBYSCORE', held, '-inf', '(' .. ARGV[1])
      redis.call('DECRBY', key, string.format('%d', released))
    end
    local live = 0
    for _, m in ipairs(redis.call('ZRANGE', held, 0, -1)) do live = live + cost(m) end
    out[i] = {1, redis.call('GET', key), string.format('%d', live), #expired}
  end
end
local last = redis.call('XREVRANGE', KEYS[#KEYS], '+', '-', 'COUNT', 1)
local last_id = '0-0'
if #last > 0 then last_id = last[1][1] end
return {last_id, out}
"""

# KEYS: counters; ARGV: the correction of each (added, so moves since the snapshot stay).
_APPLY = """
for i, key in ipairs(KEYS) do
  if ARGV[i] ~= '0' and redis.call('EXISTS', key) == 1 then redis.call('INCRBY', key, ARGV[i]) end
end
return 1
"""


@dataclass
class Reconciliation:
    """What reconciliation found for one budget counter (micro-dollars)."""

    key: str
    counter: int  # the counter before (after releasing expired reservations)
    settled: int  # usage records in the database for the period
    queued: int  # usage events on the stream, not yet in the database
    held: int  # reservations in flight
    released: int  # expired reservations released
    correction: int  # added to the counter: settled + queued + held - counter


def _queued_usage(
    client: redis.Redis, last_id: str, stream: str
) -> list[tuple[str, int, int, dt.datetime]]:
    """(request id, tenant id, cost, created) of the usage events on the stream up to
    ``last_id``; malformed entries are skipped (ingestion dead-letters them)."""
    out = []
    start = "-"
    while last_id != "0-0":
        page = client.xrange(stream, start, last_id, count=10_000)
        for _eid, data in page:
            try:
                out.append((
                    data[b"request_id"].decode(),
                    int(data[b"tenant_id"]),
                    int(data[b"cost_micro_usd"]),
                    dt.datetime.fromisoformat(data[b"created"].decode()),
                ))  # fmt: skip
            except (KeyError, ValueError, UnicodeDecodeError):
                continue
        if len(page) < 10_000:
            break
        start = "(" + page[-1][0].decode()
    return out


def reconcile_budgets(
    client: redis.Redis,
    *,
    now: dt.datetime | None = None,
    prefix: str = "sy:budget",
    chunk: int = 500,
) -> list[Reconciliation]:
    """Put every budget counter of the current periods right against PostgreSQL.

    For each counter in Redis: reservations past their deadline are released, then the counter
    is moved to ``usage records of the period + usage events still queued on the stream +
    reservations held``. Safe beside live traffic: the snapshot (release, counter, held, the
    stream's end) is one Lua script; usage ingestion is held off meanwhile by an advisory lock,
    so every settlement before the snapshot is counted exactly once (in the records or on the
    stream) and none after it; the correction is added with INCRBY, so reservations and
    settlements since the snapshot stay. Running it twice changes nothing the second time.
    Counters not in Redis are left alone (the gateway seeds them from the database)."""
    now = now or dt.datetime.now(dt.UTC)
    budgets = list(Budget.objects.order_by("pk"))
    seen: dict[str, Budget] = {}
    for b in budgets:  # one counter per tenant and period
        seen.setdefault(f"{prefix}:{b.tenant_id}:{b.period}:{_period_key(b.period, now)}", b)
    items = list(seen.items())
    results: list[Reconciliation] = []
    for i in range(0, len(items), chunk):
        results += _reconcile_chunk(client, items[i : i + chunk], now, prefix)
    fixed = [r for r in results if r.correction]
    if fixed:
        log.warning(
            "budget reconciliation corrected %d of %d counters (%d µ$ in all, %d expired "
            "reservations released)",
            len(fixed), len(results), sum(r.correction for r in fixed),
            sum(r.released for r in results),
        )  # fmt: skip
    return results


def _reconcile_chunk(
    client: redis.Redis, items: list[tuple[str, Budget]], now: dt.datetime, prefix: str
) -> list[Reconciliation]:
    from billing.usage import USAGE_INGEST_LOCK, USAGE_STREAM

    keys = [k for k, _ in items]
    held = [held_key(k, prefix) for k in keys]
    results = []
    with transaction.atomic():
        with transaction.get_connection().cursor() as cur:
            # Exclusive against ingestion's shared lock: no usage record lands until commit.
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [USAGE_INGEST_LOCK])
        last_id, snap = client.eval(
            _SNAPSHOT, len(keys) * 2 + 1, *keys, *held, USAGE_STREAM, f"{now.timestamp():.6f}"
        )
        last_id = last_id.decode() if isinstance(last_id, bytes) else last_id
        queued = _queued_usage(client, last_id, USAGE_STREAM)
        stored = set()
        ids = [rid for rid, *_ in queued]
        for j in range(0, len(ids), 5000):
            stored |= set(
                UsageRecord.objects.filter(request_id__in=ids[j : j + 5000]).values_list(
                    "request_id", flat=True
                )
            )
        settled: dict[str, dict[int, int]] = {}
        for period in {b.period for _, b in items}:
            tenant_ids = {b.tenant_id for _, b in items if b.period == period}
            settled[period] = settled_spend(period, now, tenant_ids)
        corrections = []
        for (key, b), (exists, counter, live, released) in zip(items, snap, strict=True):
            if not exists:
                corrections.append("0")
                continue
            start, end = period_start(b.period, now), period_end(b.period, now)
            on_stream = sum(
                cost
                for rid, tenant, cost, created in queued
                if tenant == b.tenant_id and start <= created < end and rid not in stored
            )
            in_db = settled[b.period].get(b.tenant_id, 0)
            counter, live = int(counter), int(live)
            correction = in_db + on_stream + live - counter
            corrections.append(str(correction))
            results.append(
                Reconciliation(key, counter, in_db, on_stream, live, int(released), correction)
            )
        if any(c != "0" for c in corrections):
            client.eval(_APPLY, len(keys), *keys, *corrections)
    return results
