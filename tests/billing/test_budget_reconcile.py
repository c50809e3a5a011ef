"""Budget reconciliation against real Redis and PostgreSQL: the gateway's Redis counters
(settled spend + reservations in flight) drift when a gateway dies mid-request or a settlement
is lost; the beat task releases expired reservations and re-bases each counter on the usage
records, exactly, while traffic goes on."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import random
import threading
import time

import pytest
import redis.asyncio as aioredis
from django.conf import settings
from django.db import connection

from billing import ledger as budget
from billing.ledger import BudgetLedger, reconcile_budgets
from billing.models import UsageRecord
from billing.tasks import reconcile_budgets as reconcile_task
from billing.usage import USAGE_STREAM, usage_event, usage_ingestor
from switchyard.redis_client import get_redis
from switchyard.streams import stream_add
from tenants import services

pytestmark = pytest.mark.django_db(transaction=True)
_ids = itertools.count()


@pytest.fixture
def r():
    client = get_redis()
    client.flushdb()
    budget.clear_cache()
    yield client
    client.flushdb()
    budget.clear_cache()


def record(tenant, cost: int, request_id: str | None = None) -> UsageRecord:
    return UsageRecord.objects.create(
        request_id=request_id or f"req_rec_{next(_ids)}", tenant=tenant, model="m",
        input_tokens=1, output_tokens=1, cost_micro_usd=cost,
    )  # fmt: skip


def event(tenant_id: int, cost: int, request_id: str | None = None) -> dict:
    return usage_event(
        request_id=request_id or f"req_ev_{next(_ids)}", tenant_id=tenant_id, api_key_id=None,
        model="m", deployment="d", input_tokens=1, output_tokens=1, cached_tokens=0,
        cost_micro_usd=cost, created=dt.datetime.now(dt.UTC),
    )  # fmt: skip


async def _with_ledger(fn):
    client = aioredis.from_url(settings.REDIS_URL)
    try:
        return await fn(BudgetLedger(client), client)
    finally:
        await client.aclose()


def reserve(tenant_id: int, cost: int):
    return asyncio.run(
        _with_ledger(lambda ledger, _c: ledger.reserve(tenant_id=tenant_id, cost=cost))
    )


def finish(reservation, tenant_id: int, actual: int) -> None:
    """What the gateway's finish does: settle and queue the usage event in one MULTI."""

    async def go(ledger, client):
        pipe = client.pipeline(transaction=True)
        await ledger.settle(reservation, actual_cost=actual, pipe=pipe)
        stream_add(pipe, USAGE_STREAM, event(tenant_id, actual))
        await pipe.execute()

    asyncio.run(_with_ledger(go))


def settle_only(reservation, actual: int) -> None:
    async def go(ledger, _client):
        await ledger.settle(reservation, actual_cost=actual)

    asyncio.run(_with_ledger(go))


def counter(r, tenant, period: str = "daily") -> int:
    (key,) = r.keys(f"sy:budget:{tenant.pk}:{period}:*")
    return int(r.get(key))


def test_expired_reservation_is_released_and_a_late_settlement_counts_its_real_cost(r, tenant_a):
    services.budget_set(tenant=tenant_a, period="daily", limit_micro_usd=10_000, hard=True)
    record(tenant_a, 300)
    res = reserve(tenant_a.pk, 5_000)
    assert counter(r, tenant_a) == 5_300
    (now_result,) = reconcile_budgets(r)
    assert (now_result.held, now_result.released, now_result.correction) == (5_000, 0, 0)
    # A crashed gateway never settles: after the deadline the reservation is released.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=budget.RESERVATION_TTL + 5)
    (released,) = reconcile_budgets(r, now=later)
    assert (released.released, released.held, released.correction) == (1, 0, 0)
    assert counter(r, tenant_a) == 300
    assert r.zcard(budget.held_key(released.key)) == 0
    # A settlement that still arrives adds what the request cost, not cost - reserved.
    finish(res, tenant_a.pk, 700)
    assert counter(r, tenant_a) == 1_000
    usage_ingestor.drain(r)
    (after,) = reconcile_budgets(r)
    assert (after.settled, after.queued, after.correction) == (1_000, 0, 0)


def test_drift_is_rebased_on_records_and_queued_events_and_a_second_run_changes_nothing(
    r, tenant_a, tenant_b
):
    services.budget_set(tenant=tenant_a, period="daily", limit_micro_usd=10**9, hard=True)
    services.budget_set(tenant=tenant_a, period="monthly", limit_micro_usd=10**9, hard=False)
    services.budget_set(tenant=tenant_b, period="daily", limit_micro_usd=10**9, hard=True)
    record(tenant_a, 1_000)
    record(tenant_b, 50)
    in_flight = reserve(tenant_a.pk, 2_000)
    done = reserve(tenant_a.pk, 500)
    finish(done, tenant_a.pk, 400)  # settled, its usage event still queued
    # An event already stored but not yet deleted from the stream (a consumer between its
    # insert and XDEL) must count once.
    stream_add(r, USAGE_STREAM, event(tenant_a.pk, 70, request_id="req_both"))
    record(tenant_a, 70, request_id="req_both")
    r.incrby(f"sy:budget:{tenant_a.pk}:daily:{dt.datetime.now(dt.UTC):%Y%m%d}", 70)
    r.incrby(f"sy:budget:{tenant_a.pk}:monthly:{dt.datetime.now(dt.UTC):%Y%m}", 70)
    # Drift: a lost settlement left 12,345 too much on the daily counter; the monthly one
    # lost 999.
    r.incrby(f"sy:budget:{tenant_a.pk}:daily:{dt.datetime.now(dt.UTC):%Y%m%d}", 12_345)
    r.decrby(f"sy:budget:{tenant_a.pk}:monthly:{dt.datetime.now(dt.UTC):%Y%m}", 999)
    assert counter(r, tenant_a) == 1_000 + 2_000 + 400 + 70 + 12_345

    results = {x.key.split(":")[3]: x for x in reconcile_budgets(r)}
    assert set(results) == {"daily", "monthly"}  # tenant B has no counter yet: left alone
    daily, monthly = results["daily"], results["monthly"]
    assert (daily.settled, daily.queued, daily.held) == (1_070, 400, 2_000)
    assert daily.correction == -12_345 and monthly.correction == 999
    assert counter(r, tenant_a) == counter(r, tenant_a, "monthly") == 3_470
    assert all(x.correction == 0 for x in reconcile_budgets(r))  # idempotent

    usage_ingestor.drain(r)  # the queued event lands: nothing to correct
    assert [x.correction for x in reconcile_budgets(r)] == [0, 0]
    finish(in_flight, tenant_a.pk, 2_000)  # the request in flight completes at its worst case
    usage_ingestor.drain(r)
    assert [x.correction for x in reconcile_budgets(r)] == [0, 0]
    assert (
        counter(r, tenant_a)
        == 3_470
        == sum(UsageRecord.objects.filter(tenant=tenant_a).values_list("cost_micro_usd", flat=True))
    )
    assert not r.keys(f"sy:budget:{tenant_b.pk}:*")


def test_a_lost_settlement_is_put_right(r, tenant_a):
    """A settlement whose usage event never reached the stream (e.g. a failed request that was
    charged nothing, but whose reservation was settled without an event) is trusted to the
    records: reconciliation moves the counter to what was stored."""
    services.budget_set(tenant=tenant_a, period="daily", limit_micro_usd=10**9, hard=True)
    res = reserve(tenant_a.pk, 800)
    settle_only(res, 600)  # 600 on the counter, no usage record will ever say so
    (x,) = reconcile_budgets(r)
    assert (x.counter, x.settled, x.held, x.correction) == (600, 0, 0, -600)
    assert counter(r, tenant_a) == 0


def test_beat_task_reports_counters_moved(r, tenant_a):
    services.budget_set(tenant=tenant_a, period="daily", limit_micro_usd=10**9, hard=True)
    reserve(tenant_a.pk, 10)
    assert reconcile_task() == 0
    r.incrby(f"sy:budget:{tenant_a.pk}:daily:{dt.datetime.now(dt.UTC):%Y%m%d}", 5)
    assert reconcile_task() == 1
    assert counter(r, tenant_a) == 10


def test_reconciling_during_live_traffic_introduces_no_drift(r, tenant_a, monkeypatch):
    """Gateways reserve and settle, some die mid-request, ingestion drains and reconciliation
    runs, all at once. At the end every counter equals the records exactly."""
    services.budget_set(tenant=tenant_a, period="daily", limit_micro_usd=10**12, hard=True)
    services.budget_set(tenant=tenant_a, period="monthly", limit_micro_usd=10**12, hard=True)
    record(tenant_a, 12_345)
    monkeypatch.setattr(budget, "RESERVATION_TTL", 0.3)  # leaked reservations expire fast
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop(fn):
        def run():
            try:
                while not stop.is_set():
                    fn()
                    time.sleep(0.01)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)
            finally:
                connection.close()

        t = threading.Thread(target=run)
        t.start()
        return t

    threads = [loop(lambda: usage_ingestor.drain(get_redis())), loop(lambda: reconcile_budgets(r))]

    async def traffic(seed: int) -> None:
        rnd = random.Random(seed)
        client = aioredis.from_url(settings.REDIS_URL)
        ledger = BudgetLedger(client)
        for i in range(30):
            res = await ledger.reserve(tenant_id=tenant_a.pk, cost=rnd.randint(100, 5_000))
            await asyncio.sleep(rnd.random() * 0.02)
            if i % 10 == 3:
                continue  # this gateway died: never settled
            actual = rnd.randint(0, res.cost)
            pipe = client.pipeline(transaction=True)
            await ledger.settle(res, actual_cost=actual, pipe=pipe)
            if actual:
                stream_add(pipe, USAGE_STREAM, event(tenant_a.pk, actual))
            await pipe.execute()
        await client.aclose()

    async def all_traffic():
        await asyncio.gather(*(traffic(seed) for seed in range(4)))

    try:
        asyncio.run(all_traffic())
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    while usage_ingestor.drain(r):
        pass
    stored = sum(
        UsageRecord.objects.filter(tenant=tenant_a).values_list("cost_micro_usd", flat=True)
    )
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    final = reconcile_budgets(r, now=later)  # releases what is left of the dead requests
    assert [x.correction for x in final] == [0, 0]
    assert counter(r, tenant_a) == counter(r, tenant_a, "monthly") == stored
