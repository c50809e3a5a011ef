"""Rollups equal the sum of the raw records, hour by hour and day by day, whatever the order in
which records arrive, and running the rollup again changes nothing."""

import datetime as dt
from collections import defaultdict

from billing import selectors
from billing.models import RollupState, UsageRecord, UsageRollup
from billing.rollups import rollup_rebuild, rollup_recompute, rollup_usage
from tests.billing.conftest import make_records

T0 = dt.datetime(2026, 11, 20, 21, 0, tzinfo=dt.UTC)
KEY = ("tenant_id", "model", "deployment", "api_key_id", "input_price", "output_price",
       "cached_input_price")  # fmt: skip
SUMS = ("input_tokens", "output_tokens", "cached_tokens", "cost_micro_usd")


def _trunc(ts: dt.datetime, granularity: str) -> dt.datetime:
    ts = ts.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    return ts.replace(hour=0) if granularity == "day" else ts


def raw_sums(granularity: str) -> dict:
    """The truth, summed in Python from every raw record."""
    out: dict = defaultdict(lambda: [0, 0, 0, 0, 0])
    for r in UsageRecord.objects.all():
        k = (_trunc(r.created, granularity), *(getattr(r, f) for f in KEY))
        acc = out[k]
        acc[0] += 1
        for i, f in enumerate(SUMS, 1):
            acc[i] += getattr(r, f)
    return {k: tuple(v) for k, v in out.items()}


def rollup_sums(granularity: str) -> dict:
    out = {}
    for r in UsageRollup.objects.filter(granularity=granularity):
        k = (r.bucket, *(getattr(r, f) for f in KEY))
        assert k not in out, f"duplicate rollup row {k}"
        out[k] = (r.requests, *(getattr(r, f) for f in SUMS))
    return out


def test_rollups_equal_the_sum_of_raw_records(tenant_a, tenant_b):
    key = tenant_a.api_keys.create(name="k", prefix="abc", key_hash="h" * 64)
    make_records(tenant_a, n=700, start=T0, span=dt.timedelta(hours=30), keys=(None, key.pk))
    make_records(tenant_b, n=300, start=T0, span=dt.timedelta(hours=30), seed=1)
    run = rollup_usage()
    assert run.records == 1000 and run.hours > 30 and run.days == 2 * 3
    for g in ("hour", "day"):
        assert rollup_sums(g) == raw_sums(g)

    # Late records land in old hours, new ones in new hours: both are folded in.
    make_records(tenant_a, n=50, start=T0, span=dt.timedelta(hours=2), seed=2, keys=(key.pk,))
    make_records(
        tenant_b, n=50, start=T0 + dt.timedelta(days=2), span=dt.timedelta(hours=5), seed=3
    )
    run = rollup_usage()
    assert run.records == 100
    for g in ("hour", "day"):
        assert rollup_sums(g) == raw_sums(g)


def test_rollup_is_idempotent_and_rebuild_gives_the_same_rows(tenant_a):
    make_records(tenant_a, n=400, start=T0, span=dt.timedelta(hours=50))
    rollup_usage()
    before = {g: rollup_sums(g) for g in ("hour", "day")}
    again = rollup_usage()
    assert again.records == 0
    assert {g: rollup_sums(g) for g in ("hour", "day")} == before
    rollup_rebuild()
    assert {g: rollup_sums(g) for g in ("hour", "day")} == before
    assert RollupState.objects.get().last_record_id == UsageRecord.objects.latest("id").id


def test_reads_are_exact_before_and_after_the_rollup_runs(tenant_a, tenant_b):
    make_records(tenant_a, n=300, start=T0, span=dt.timedelta(hours=20))
    rollup_usage()
    make_records(tenant_a, n=120, start=T0, span=dt.timedelta(hours=26), seed=5)  # not rolled up
    make_records(tenant_b, n=80, start=T0, span=dt.timedelta(hours=26), seed=6)
    start, end = T0.replace(hour=0), T0.replace(hour=0) + dt.timedelta(days=3)

    def read() -> dict:
        rows = selectors.usage(
            start=start, end=end, granularity="day", group_by=("bucket", "model"),
            tenant_id=tenant_a.pk,
        )  # fmt: skip
        return {(r.bucket, r.model): (r.requests, r.cost_micro_usd) for r in rows}

    truth: dict = defaultdict(lambda: [0, 0])
    for r in UsageRecord.objects.filter(tenant=tenant_a):
        t = truth[(_trunc(r.created, "day"), r.model)]
        t[0] += 1
        t[1] += r.cost_micro_usd
    truth = {k: tuple(v) for k, v in truth.items()}
    assert read() == truth
    rollup_usage()
    assert read() == truth
    hourly = selectors.usage(start=start, end=end, granularity="hour", group_by=(),
                             tenant_id=tenant_a.pk)  # fmt: skip
    assert hourly[0].requests == 420
    assert hourly[0].cost_micro_usd == sum(v[1] for v in truth.values())


def test_recompute_repairs_a_range_after_records_are_removed(tenant_a, tenant_b):
    make_records(tenant_a, n=200, start=T0, span=dt.timedelta(hours=30))
    make_records(tenant_b, n=100, start=T0, span=dt.timedelta(hours=30), seed=4)
    rollup_usage()
    doomed = UsageRecord.objects.filter(tenant=tenant_a, created__lt=T0 + dt.timedelta(hours=5))
    assert doomed.exists()
    doomed.delete()
    assert rollup_usage().records == 0  # by themselves, rollups only ever add records
    assert rollup_sums("hour") != raw_sums("hour")
    rollup_recompute(start=T0, end=T0 + dt.timedelta(hours=5))
    for g in ("hour", "day"):
        assert rollup_sums(g) == raw_sums(g)
