"""Semantic-cache lookup latency and recall with one large tenant in a large table.

Loads ``--total`` entries (random unit vectors; one tenant holds ``--tenant-rows`` of them,
the rest are spread over tenants of 10,000) with COPY, builds the HNSW index and times its
build, then runs the gateway's own lookup (serving.cache.semantic.search) for queries planted
near a random entry of the large tenant and of a small one: latency percentiles, and recall
(the planted entry came back first). Side by side: HNSW with pgvector's iterative index scans
(relaxed_order) and without them (off), the exact search (b-tree filter + sort), and "auto",
what the gateway runs (exact for slices up to 10,000 rows, HNSW with iterative scans above).

Runs against its own embedded PostgreSQL under .switchyard/bench-cache/ (deleted first) unless
DATABASE_URL is set.

Run: .venv/bin/python -m benchmarks.cache.lookup [--total 1000000 --tenant-rows 100000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import struct
import time

import numpy as np

DIM = 384
SMALL_TENANT_ROWS = 10_000
CONTEXT = "c" * 64
MODEL = "smollm2-135m-instruct"


def _vector_binary(vec: np.ndarray) -> bytes:
    """pgvector's binary wire format: dim, unused, then big-endian float4s."""
    return struct.pack(">HH", DIM, 0) + vec.astype(">f4").tobytes()


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM), dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def setup_services(*, reuse: bool, shared_buffers: str):
    """Embedded servers for this run, or none when DATABASE_URL is set; the caller stops what
    is returned. ``reuse`` keeps the data of the last run (and its index); ``shared_buffers``
    is set and the server restarted, so the HNSW index can live in PostgreSQL's own cache as
    it would on a tuned server (the embedded default is 128 MB)."""
    import psycopg

    from switchyard.embedded import EmbeddedServices, data_dir, ensure_services

    if os.environ.get("DATABASE_URL"):
        return EmbeddedServices()
    if not reuse:
        shutil.rmtree(data_dir() / "bench-cache", ignore_errors=True)
    services = ensure_services(scope="bench-cache", persistent=False)
    pg = services.started[0]
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(f"ALTER SYSTEM SET shared_buffers = '{shared_buffers}'")
    pg.stop()
    os.environ["DATABASE_URL"] = pg.start()
    if not reuse:
        # Loading and the index build run at low priority on a shared machine; a reused
        # table is only queried, at normal priority, as a server would be.
        pid_file = data_dir() / "bench-cache" / "postgres" / "postmaster.pid"
        if pid_file.exists():
            os.setpriority(os.PRIO_PROCESS, int(pid_file.read_text().split()[0]), 10)
    return services


def reused() -> tuple[int, int, dict[int, np.ndarray]] | None:
    """(tenant A, tenant B, planted vectors) from a loaded table, or None when it is empty."""
    from django.db import connection

    from serving.cache.models import SemanticCacheEntry
    from tenants.models import Tenant

    if not SemanticCacheEntry.objects.exists():
        return None
    a, b = Tenant.objects.order_by("pk").values_list("pk", flat=True)[:2]
    planted = {}
    with connection.cursor() as cur:
        for tid in (a, b):
            cur.execute(
                "SELECT embedding::text FROM cache_semanticcacheentry WHERE tenant_id = %s "
                "ORDER BY id LIMIT 1000",
                [tid],
            )
            planted[tid] = np.array(
                [np.fromstring(r[0].strip("[]"), sep=",", dtype=np.float32) for r in cur],
                dtype=np.float32,
            )
    return a, b, planted


def load(total: int, tenant_rows: int, seed: int) -> tuple[int, int, dict[int, np.ndarray]]:
    """Create tenants and COPY the entries; returns (big tenant id, small tenant id, planted
    vectors by tenant id: the first 1,000 entries of each of the two)."""
    import psycopg
    from django.db import connection

    from serving.cache.models import SemanticCacheEntry
    from tenants.models import Tenant, Tier

    tier = Tier.objects.create(name="bench")
    sizes = [tenant_rows]
    rest = total - tenant_rows
    while rest > 0:
        sizes.append(min(SMALL_TENANT_ROWS, rest))
        rest -= sizes[-1]
    tenants = Tenant.objects.bulk_create(
        [Tenant(name=f"t{i}", slug=f"t{i}", tier=tier) for i in range(len(sizes))]
    )
    table = SemanticCacheEntry._meta.db_table
    connection.ensure_connection()
    rng = np.random.default_rng(seed)
    now = dt.datetime.now(dt.UTC)
    expires = now + dt.timedelta(days=1)
    planted: dict[int, np.ndarray] = {}
    dsn = os.environ["DATABASE_URL"]
    started = time.perf_counter()
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("DROP INDEX IF EXISTS semcache_embedding_hnsw")
        cols = ("tenant_id, scope, model, context_hash, embedding, prompt, response, "
                "input_tokens, output_tokens, created, expires, hits")  # fmt: skip
        with cur.copy(f"COPY {table} ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "text", "text", "text", "bytea", "text", "jsonb", "int4",
                            "int4", "timestamptz", "timestamptz", "int4"])  # fmt: skip
            n = 0
            for tenant, size in zip(tenants, sizes, strict=True):
                scope = f"t:{tenant.pk}"
                for start in range(0, size, 10_000):
                    vecs = _unit(rng, min(10_000, size - start))
                    if start == 0 and tenant in (tenants[0], tenants[1]):
                        planted[tenant.pk] = vecs[:1000].copy()
                    for i, v in enumerate(vecs):
                        copy.write_row((tenant.pk, scope, MODEL, CONTEXT, _vector_binary(v),
                                        f"prompt {n + i}", psycopg.types.json.Jsonb({}), 10, 20,
                                        now, expires, 0))  # fmt: skip
                    n += len(vecs)
        conn.commit()
    print(f"COPY of {total:,} entries: {time.perf_counter() - started:.1f} s")
    return tenants[0].pk, tenants[1].pk, planted


def build_index() -> float:
    import psycopg

    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '4GB'")
        conn.execute("SET max_parallel_maintenance_workers = 1")
        started = time.perf_counter()
        conn.execute(
            "CREATE INDEX semcache_embedding_hnsw ON cache_semanticcacheentry "
            "USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
        )
        took = time.perf_counter() - started
        conn.execute("ANALYZE cache_semanticcacheentry")
    return took


MODES = {  # row label: search() arguments
    "HNSW, iterative scan": {"strategy": "hnsw", "iterative_scan": "relaxed_order"},  # ef 100
    "HNSW, no iterative scan": {"strategy": "hnsw", "iterative_scan": "off"},
    "HNSW, iterative scan, ef_search 40": {"strategy": "hnsw", "ef_search": 40},
    "exact (b-tree + sort)": {"strategy": "exact"},
    "auto (what the gateway runs)": {"strategy": "auto"},
}


def run_queries(
    tenant_id: int, planted: np.ndarray, mode: dict, n: int, noise: float, warmup: int
) -> dict:
    from serving.cache.semantic import search

    rng = np.random.default_rng(7)
    idx = rng.choice(len(planted), size=n, replace=n > len(planted))
    q = planted[idx] + rng.standard_normal((n, DIM), dtype=np.float32) * noise
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    scope = f"t:{tenant_id}"
    for v in _unit(rng, warmup):  # warm the connection and the index (unrelated queries)
        search(scope=scope, model=MODEL, context_hash=CONTEXT, embedding=v.tolist(), **mode)
    times, found, returned, sims = [], 0, 0, []
    for i, v in zip(idx, q, strict=True):
        t0 = time.perf_counter()
        rows = search(scope=scope, model=MODEL, context_hash=CONTEXT, embedding=v.tolist(), **mode)
        times.append((time.perf_counter() - t0) * 1000)
        returned += len(rows)
        if rows:
            sims.append(rows[0].similarity)
            found += abs(rows[0].similarity - float(np.dot(v, planted[i]))) < 1e-4
    times.sort()
    return {
        "p50": statistics.median(times),
        "p95": times[int(0.95 * (len(times) - 1))],
        "p99": times[int(0.99 * (len(times) - 1))],
        "recall": found / n,
        "rows": returned / n,
        "sim": statistics.median(sims) if sims else float("nan"),
    }


def explain(tenant_id: int, vec: np.ndarray) -> str:
    from django.db import connection, transaction

    from serving.cache.semantic import TABLE, vector_literal

    lit = vector_literal(vec.tolist())
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        cur.execute(
            f"EXPLAIN SELECT id FROM {TABLE} WHERE scope = %s AND model = %s AND "
            "context_hash = %s AND expires > now() ORDER BY embedding <=> %s::vector LIMIT 4",
            [f"t:{tenant_id}", MODEL, CONTEXT, lit],
        )
        plan = [r[0] for r in cur.fetchall()]
    return next((ln.strip() for ln in plan if "Scan" in ln), plan[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--total", type=int, default=1_000_000)
    ap.add_argument("--tenant-rows", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--noise", type=float, default=0.02, help="per-dimension query noise")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--reuse", action="store_true", help="keep the last run's table and index")
    ap.add_argument("--shared-buffers", default="3GB")
    ap.add_argument("--warmup", type=int, default=300, help="untimed lookups per row first")
    args = ap.parse_args()
    services = setup_services(reuse=args.reuse, shared_buffers=args.shared_buffers)
    try:
        run(args)
    finally:
        services.stop()


def run(args: argparse.Namespace) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "switchyard.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    loaded = reused() if args.reuse else None
    if loaded is None:
        big, small, planted = load(args.total, args.tenant_rows, args.seed)
        build = build_index()
        print(f"HNSW build (m=16, ef_construction=64, 2 processes): {build:.0f} s")
    else:
        big, small, planted = loaded
        print("Reusing the table and index of the last run")
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT pg_size_pretty(pg_relation_size('semcache_embedding_hnsw')), "
                    "pg_size_pretty(pg_total_relation_size('cache_semanticcacheentry'))")  # fmt: skip
        index_size, table_size = cur.fetchone()
    print(f"index {index_size}, table with indexes {table_size}\n")
    print(f"{args.total:,} entries; tenant A {args.tenant_rows:,}, tenant B {SMALL_TENANT_ROWS:,}; "
          f"{args.queries} lookups each, top {4}, ef_search 100 unless said\n")  # fmt: skip
    for name, tid in (("A", big), ("B", small)):
        print(f"plan for tenant {name}: {explain(tid, planted[tid][0])}")
    print()
    # Untimed: bring the index and both slices into shared buffers, so no row pays for
    # coming first after a restart.
    for tid in (big, small):
        for mode in MODES.values():
            run_queries(tid, planted[tid], mode, 20, args.noise, args.warmup // 4)
    print("| tenant | search | P50 ms | P95 ms | P99 ms | planted entry first | rows returned |")
    print("|---|---|---|---|---|---|---|")
    for name, tid in ((f"A ({args.tenant_rows:,})", big), (f"B ({SMALL_TENANT_ROWS:,})", small)):
        for label, mode in MODES.items():
            # An exact search of 100,000 rows is slow; a tenth of the lookups show it.
            n = (
                args.queries // 10
                if mode.get("strategy") == "exact" and tid == big
                else args.queries
            )
            r = run_queries(tid, planted[tid], mode, n, args.noise, args.warmup)
            print(f"| {name} | {label} | {r['p50']:.2f} | {r['p95']:.2f} | {r['p99']:.2f} | "
                  f"{r['recall']:.3f} | {r['rows']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
