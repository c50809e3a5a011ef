"""Billing benchmarks: usage ingest rate into PostgreSQL, and dashboard reads at 10 million
usage records (rollups vs raw aggregation, side by side).

    python -m benchmarks.billing.run [--records 10000000] [--ingest 50000] [--write]

Runs against its own embedded PostgreSQL and Redis under ``.switchyard/bench-billing/`` (or
DATABASE_URL / REDIS_URL when set). The 10 million rows are generated server-side with
``INSERT … SELECT … FROM generate_series`` (over the last 30 days, 50 tenants, 100 keys,
4 models, 3 deployments) and kept between runs; ``--records`` changes the size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path

from benchmarks.results import write_section

ROOT = Path(__file__).resolve().parents[2]
TENANTS, KEYS_PER_TENANT = 50, 2
MODELS = ["smollm2-135m-instruct", "all-minilm-l6-v2", "gpt-4o-mini", "llama-3.1-8b"]
DEPLOYMENTS = ["local-a", "local-b", "hosted"]


def setup_django() -> None:
    from switchyard.embedded import ensure_services

    ensure_services(scope="bench-billing", persistent=False)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "switchyard.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def cast() -> tuple[list[int], list[int]]:
    from tenants import services
    from tenants.models import Tenant, Tier

    tier = Tier.objects.filter(name="bench").first() or services.tier_create(name="bench")
    tenant_ids, key_ids = [], []
    for i in range(TENANTS):
        t = Tenant.objects.filter(slug=f"bench-{i:02d}").first() or services.tenant_create(
            name=f"Bench {i}", slug=f"bench-{i:02d}", tier=tier
        )
        tenant_ids.append(t.pk)
        keys = list(t.api_keys.order_by("pk").values_list("pk", flat=True))
        while len(keys) < KEYS_PER_TENANT:
            key, _ = services.api_key_create(tenant=t, name=f"k{len(keys)}")
            keys.append(key.pk)
        key_ids += keys[:KEYS_PER_TENANT]
    return tenant_ids, key_ids


def timed(fn, repeat: int) -> tuple[float, float, object]:
    """Median and max milliseconds over ``repeat`` runs, and the last result."""
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), max(times), out


# ---- ingest -------------------------------------------------------------------------------


def bench_ingest(n: int, tenant_ids: list[int], key_ids: list[int]) -> list[tuple]:
    """XADD ``n`` usage events, then time the consumer draining them into PostgreSQL."""
    import dataclasses
    import uuid

    from billing.models import UsageRecord
    from billing.pricing import Price
    from billing.usage import USAGE_STREAM, usage_event, usage_ingestor
    from switchyard.redis_client import get_redis
    from switchyard.streams import stream_add

    r = get_redis()
    price = Price(MODELS[0], 100_000, 400_000, 50_000, None)
    rows = []
    for batch in (1000, 5000):
        UsageRecord.objects.filter(request_id__startswith="req_ingest_").delete()
        r.delete(USAGE_STREAM)
        now = dt.datetime.now(dt.UTC)
        pipe = r.pipeline(transaction=False)
        t0 = time.perf_counter()
        for i in range(n):
            t = i % TENANTS
            stream_add(
                pipe,
                USAGE_STREAM,
                usage_event(
                    request_id=f"req_ingest_{uuid.uuid4().hex}",
                    tenant_id=tenant_ids[t],
                    api_key_id=key_ids[t * KEYS_PER_TENANT],
                    model=MODELS[i % 4],
                    deployment=DEPLOYMENTS[i % 3],
                    input_tokens=100 + i % 900,
                    output_tokens=i % 300,
                    cached_tokens=0,
                    cost_micro_usd=price.cost(100 + i % 900, i % 300),
                    created=now,
                    price=price,
                ),
            )
            if i % 2000 == 1999:
                pipe.execute()
        pipe.execute()
        produce_s = time.perf_counter() - t0
        ingestor = dataclasses.replace(usage_ingestor, batch=batch)
        t0 = time.perf_counter()
        handled = 0
        while handled < n:
            got = ingestor.drain(r, max_batches=1000)
            if not got:
                break
            handled += got
        ingest_s = time.perf_counter() - t0
        stored = UsageRecord.objects.filter(request_id__startswith="req_ingest_").count()
        assert stored == n, f"stored {stored} of {n}"
        rows.append((batch, n, produce_s, ingest_s, n / ingest_s))
        # Ingesting the same events again is a no-op (idempotent by request id): not timed.
    UsageRecord.objects.filter(request_id__startswith="req_ingest_").delete()
    return rows


# ---- 10 million records -------------------------------------------------------------------


def generate(records: int, tenant_ids: list[int], key_ids: list[int]) -> float | None:
    """Fill the usage table to ``records`` rows server-side; returns seconds (None: reused)."""
    from django.db import connection

    from billing.models import UsageRecord

    have = UsageRecord.objects.count()
    if have == records:
        return None
    UsageRecord.objects.all().delete()
    t0 = time.perf_counter()
    chunk = 1_000_000
    with connection.cursor() as cur:
        for lo in range(0, records, chunk):
            hi = min(records, lo + chunk)
            cur.execute(
                """
                INSERT INTO billing_usagerecord
                  (request_id, tenant_id, api_key_id, model, deployment, input_tokens,
                   output_tokens, cached_tokens, cost_micro_usd, input_price, output_price,
                   cached_input_price, created)
                SELECT 'req_gen_' || g, t.tid, t.kid, m.name, d.name, it, ot, ct,
                       ((it - ct) * 100000 + ct * 50000 + ot * 400000 + 500000) / 1000000,
                       100000, 400000, 50000,
                       now() - (%(span)s * random())
                FROM generate_series(%(lo)s::bigint, %(hi)s::bigint - 1) g
                CROSS JOIN LATERAL (SELECT 50 + (g * 7919) %% 2000 AS it,
                                           (g * 104729) %% 600 AS ot) tok
                CROSS JOIN LATERAL (SELECT (g %% 3) * tok.it / 4 AS ct) c
                CROSS JOIN LATERAL (
                    SELECT (%(tenants)s::bigint[])[1 + (g %% %(n)s)] AS tid,
                           (%(keys)s::bigint[])[1 + (g %% %(n)s) * %(kpt)s + (g / %(n)s) %% %(kpt)s] AS kid
                ) t
                CROSS JOIN LATERAL (SELECT (%(models)s::text[])[1 + (g / 7) %% 4] AS name) m
                CROSS JOIN LATERAL (SELECT (%(deps)s::text[])[1 + (g / 11) %% 3] AS name) d
                """,
                {
                    "lo": lo, "hi": hi, "span": dt.timedelta(days=30), "tenants": tenant_ids,
                    "keys": key_ids, "n": TENANTS, "kpt": KEYS_PER_TENANT, "models": MODELS,
                    "deps": DEPLOYMENTS,
                },
            )  # fmt: skip
            print(f"  generated {hi:,} rows ({time.perf_counter() - t0:.0f} s)", flush=True)
        cur.execute("ANALYZE billing_usagerecord")
    return time.perf_counter() - t0


def raw_dashboard(first: dt.date, last: dt.date, tenant_id: int | None) -> int:
    """The dashboard's three aggregates straight from the raw records (for comparison)."""
    from django.db import connection

    start = dt.datetime(first.year, first.month, first.day, tzinfo=dt.UTC)
    end = dt.datetime(last.year, last.month, last.day, tzinfo=dt.UTC) + dt.timedelta(days=1)
    where = "created >= %s AND created < %s" + (" AND tenant_id = %s" if tenant_id else "")
    params = [start, end] + ([tenant_id] if tenant_id else [])
    n = 0
    with connection.cursor() as cur:
        for group in ("date_trunc('day', created, 'UTC')", "tenant_id", "model"):
            cur.execute(
                f"SELECT {group}, count(*), sum(input_tokens), sum(output_tokens), "
                f"sum(cost_micro_usd) FROM billing_usagerecord WHERE {where} GROUP BY 1",
                params,
            )
            n += len(cur.fetchall())
    return n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=10_000_000)
    ap.add_argument("--ingest", type=int, default=50_000)
    ap.add_argument(
        "--write",
        action="store_true",
        help="write the results to RESULTS.md (replacing the section)",
    )
    args = ap.parse_args()
    setup_django()

    from billing.dashboard import usage_dashboard
    from billing.invoices import invoice_for, month_totals
    from billing.models import UsageRecord
    from billing.rollups import rollup_rebuild, rollup_recompute, rollup_usage
    from serving.usage_api import usage_report
    from tenants import services
    from tenants.models import Tenant

    tenant_ids, key_ids = cast()
    for tid in tenant_ids:
        t = Tenant.objects.get(pk=tid)
        services.budget_set(tenant=t, period="monthly", limit_micro_usd=10**9)
        services.budget_set(tenant=t, period="daily", limit_micro_usd=10**8)

    print(f"usage table: {args.records:,} records", flush=True)
    gen_s = generate(args.records, tenant_ids, key_ids)
    t0 = time.perf_counter()
    full = rollup_rebuild()
    rebuild_s = time.perf_counter() - t0
    from billing.models import UsageRollup

    rollup_rows = UsageRollup.objects.count()
    print(f"rollup rebuild {rebuild_s:.0f} s; rollup rows {rollup_rows:,}", flush=True)

    # Ingest into the full table (its indexes at 10 million rows), then remove those rows.
    print(f"ingest: {args.ingest:,} usage events per run", flush=True)
    ingest = bench_ingest(args.ingest, tenant_ids, key_ids)
    print(f"  {ingest}", flush=True)

    today = dt.datetime.now(dt.UTC).date()
    first = today - dt.timedelta(days=29)
    one = tenant_ids[7]
    tenant = Tenant.objects.get(pk=one)
    month = today.replace(day=1)
    reads = [
        ("dashboard, all tenants, 30 days (rollups)",
         lambda: usage_dashboard(first=first, last=today)),
        ("dashboard, one tenant, 30 days (rollups)",
         lambda: usage_dashboard(first=first, last=today, tenant_id=one)),
        ("invoice, one tenant, this month", lambda: invoice_for(tenant=tenant, month=month)),
        ("invoice totals, all tenants, this month", lambda: month_totals(month=month)),
        ("/v1/usage report, one tenant, 30 days",
         lambda: usage_report(tenant_id=one, first=first, last=today)),
    ]  # fmt: skip
    results = []
    for name, fn in reads:
        fn()  # warm the cache as a live server would be
        med, worst, _ = timed(fn, 7)
        results.append((name, med, worst))
        print(f"  {name}: {med:.1f} ms", flush=True)
    raw = []
    for name, tid in (("all tenants", None), ("one tenant", one)):
        med, worst, _ = timed(lambda tid=tid: raw_dashboard(first, today, tid), 3)
        raw.append((f"same three aggregates from raw records, {name}", med, worst))
        print(f"  raw {name}: {med:.0f} ms", flush=True)

    # Records that arrived since the last rollup run are read from the raw table.
    tail = 20_000
    last_id = UsageRecord.objects.order_by("-id").values_list("id", flat=True).first()
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(
            """INSERT INTO billing_usagerecord (request_id, tenant_id, api_key_id, model,
                 deployment, input_tokens, output_tokens, cached_tokens, cost_micro_usd,
                 input_price, output_price, cached_input_price, created)
               SELECT 'req_tail_' || g || '_' || %s, %s, NULL, 'smollm2-135m-instruct', 'local-a',
                      100, 20, 0, 18, 100000, 400000, 50000, now()
               FROM generate_series(1, %s) g""",
            [last_id, one, tail],
        )
    med, worst, _ = timed(lambda: usage_dashboard(first=first, last=today), 7)
    results.append((f"dashboard, all tenants, with {tail:,} records not yet rolled up", med, worst))
    t0 = time.perf_counter()
    inc = rollup_usage()
    inc_ms = (time.perf_counter() - t0) * 1000
    UsageRecord.objects.filter(request_id__startswith="req_tail_").delete()
    rollup_recompute(
        start=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2), end=dt.datetime.now(dt.UTC)
    )

    lines = [
        "## Billing: usage ingest and dashboard reads at 10 million records",
        "",
        f"Command: `.venv/bin/python -m benchmarks.billing.run --records {args.records} "
        f"--ingest {args.ingest} --write` (embedded PostgreSQL 18 and Redis, 2 CPU cores shared "
        f"with other work). Run on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        "Ingest: usage events queued on the Redis stream, then drained by the consumer "
        "(`billing.usage.usage_ingestor`: XREADGROUP, XACK, "
        "XDEL; rows COPied to a temporary table, then INSERT … SELECT … ON CONFLICT DO NOTHING) "
        "into PostgreSQL with its indexes, the table already holding the records below "
        "(target ≥ 5,000 records/s).",
        "",
        "| consumer batch | records | queue (XADD) s | ingest s | records/s |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {b} | {n:,} | {p:.2f} | {s:.2f} | {rate:,.0f} |" for b, n, p, s, rate in ingest]
    lines += [
        "",
        f"Usage table: {args.records:,} records over 30 days, {TENANTS} tenants, "
        f"{TENANTS * KEYS_PER_TENANT} keys, 4 models, 3 deployments"
        + (f"; generated server-side in {gen_s:.0f} s" if gen_s else " (reused)")
        + f". Full rollup rebuild: {rebuild_s:.0f} s for {full.records:,} records → "
        f"{rollup_rows:,} hourly and daily rollup rows. Incremental rollup of {tail:,} new "
        f"records: {inc_ms:.0f} ms ({inc.records:,} folded in).",
        "",
        "| read (target ≤ 300 ms) | median ms | max ms |",
        "|---|---|---|",
    ]
    lines += [f"| {n} | {m:.1f} | {w:.1f} |" for n, m, w in results + raw]
    fastest_raw = min(m for _, m, _ in raw[:1])
    lines += [
        "",
        f"- Rollups vs raw, all tenants: {fastest_raw / results[0][1]:.0f}x faster "
        f"({results[0][1]:.0f} ms vs {fastest_raw:.0f} ms). Every read above includes the raw "
        "records above the rollup watermark in the same statement, so it is exact to the last "
        "ingested record.",
        "",
    ]
    text = "\n".join(lines)
    print("\n" + text)
    if args.write:
        write_section(text.splitlines()[0].removeprefix("## "), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
