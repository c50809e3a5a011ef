"""The semantic cache's queries: sync (Django's connection), and the gateway's lookup on its own
async connection (:func:`asearch`).

Lookups filter by scope, model, context hash and expiry, and order by cosine distance. With
pgvector's iterative index scans (``hnsw.iterative_scan = relaxed_order``) the HNSW scan keeps
going until enough rows pass the filter, so a tenant that is a small slice of a large table
still gets its nearest neighbours; when the filter is selective the planner takes the b-tree
index and sorts exactly instead. Both plans are measured in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone
from pgvector import Vector

from serving.cache import pg
from serving.cache.models import SemanticCacheEntry
from switchyard.ttl_cache import LruTtlCache

TABLE = SemanticCacheEntry._meta.db_table
# 100, not pgvector's 40: at 1M rows it lifts recall from 0.65 to 0.89 for 2-3 ms more
# (benchmarks/cache/lookup.py; random vectors, the hard case for HNSW).
EF_SEARCH = 100
CANDIDATES = 4
# Slices up to this many rows are searched exactly (b-tree + sort); larger ones through HNSW.
# Measured (benchmarks/cache/lookup.py, 1M rows): exact costs ~1 ms per 1,000 rows; HNSW with
# iterative scans costs more the thinner the slice (10,000 of 1M: slower than exact).
EXACT_MAX_ROWS = 10_000
SLICE_COUNT_SECONDS = 60.0


@dataclass(frozen=True)
class Candidate:
    id: int
    prompt: str
    response: dict[str, Any]
    input_tokens: int
    output_tokens: int
    similarity: float


def vector_literal(embedding: Sequence[float]) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in embedding) + "]"


def search(
    *,
    scope: str,
    model: str,
    context_hash: str,
    embedding: Sequence[float],
    limit: int = CANDIDATES,
    ef_search: int = EF_SEARCH,
    iterative_scan: str = "relaxed_order",
    strategy: str = "auto",
) -> list[Candidate]:
    """The live entries nearest to ``embedding`` in one scope, model and context, nearest first
    (similarity = 1 - cosine distance).

    ``strategy``: ``"hnsw"`` walks the HNSW index (with ``iterative_scan``, pgvector's
    setting: "off" only to measure what it buys); ``"exact"`` reads the slice through the
    b-tree index and sorts it exactly (recall 1, cost grows with the slice); ``"auto"`` takes
    exact for slices of at most :data:`EXACT_MAX_ROWS` live rows and HNSW above.
    """
    if strategy == "auto":
        strategy = _strategy(slice_rows(scope, model, context_hash))
    sql, params, settings = _query(
        strategy, scope, model, context_hash, embedding, limit, ef_search, iterative_scan
    )
    # The HNSW settings are scoped to a transaction; an exact read walks no index, so it needs
    # neither: one round trip instead of five (BEGIN, two SETs, the query, COMMIT).
    with transaction.atomic() if settings else nullcontext(), connection.cursor() as cur:
        for setting in settings:
            cur.execute(setting)
        cur.execute(sql, params)
        return _candidates(cur.fetchall())


async def asearch(
    *,
    scope: str,
    model: str,
    context_hash: str,
    embedding: Sequence[float],
    limit: int = CANDIDATES,
    ef_search: int = EF_SEARCH,
    iterative_scan: str = "relaxed_order",
) -> list[Candidate]:
    """:func:`search` (``strategy="auto"``) for the gateway's event loop, on the semantic
    cache's own asyncpg connections (:mod:`serving.cache.pg`): no thread hop."""
    async with pg.pool().connection() as conn:
        key = (scope, model, context_hash)
        rows = _slices.get(key)
        if rows is None:
            rows = await conn.fetchval(ASYNC_COUNT_SQL, scope, model, context_hash,
                                       EXACT_MAX_ROWS + 1)  # fmt: skip
            _slices.put(key, rows)
        strategy = _strategy(rows)
        settings = _settings(strategy, ef_search, iterative_scan)
        args = (ASYNC_SQL[strategy], Vector(embedding), scope, model, context_hash, limit)
        if not settings:
            return _candidates(await conn.fetch(*args))
        async with conn.transaction():
            for setting in settings:
                await conn.execute(setting)
            return _candidates(await conn.fetch(*args))


def _strategy(slice_rows: int) -> str:
    return "exact" if slice_rows <= EXACT_MAX_ROWS else "hnsw"


def _query(
    strategy: str,
    scope: str,
    model: str,
    context_hash: str,
    embedding: Sequence[float],
    limit: int,
    ef_search: int,
    iterative_scan: str,
) -> tuple[str, list, list[str]]:
    """The search's SQL, its parameters and the settings to run before it (HNSW only)."""
    settings = _settings(strategy, ef_search, iterative_scan)
    vec = vector_literal(embedding)
    return SYNC_SQL[strategy], [vec, scope, model, context_hash, vec, limit], settings


def _settings(strategy: str, ef_search: int, iterative_scan: str) -> list[str]:
    """What to set before the query: HNSW's search settings (in its transaction)."""
    if iterative_scan not in ("relaxed_order", "strict_order", "off"):
        raise ValueError(f"unknown iterative_scan {iterative_scan!r}")
    if strategy not in ("hnsw", "exact"):
        raise ValueError(f"unknown strategy {strategy!r}")
    if strategy == "exact":
        return []
    return [
        f"SET LOCAL hnsw.iterative_scan = {iterative_scan}",
        f"SET LOCAL hnsw.ef_search = {int(ef_search)}",
    ]


def _search_sql(vec: str, scope: str, model: str, ctx: str, limit: str) -> dict[str, str]:
    """The search's SQL per strategy, with the given placeholders. "+ 0" keeps the planner
    off the HNSW index for the exact read (the index serves only the bare distance order)."""
    out = {}
    for strategy in ("hnsw", "exact"):
        distance = f"embedding <=> {vec}"
        order = f"({distance}) + 0" if strategy == "exact" else distance
        out[strategy] = (
            f"SELECT id, prompt, response, input_tokens, output_tokens, {distance} AS distance "
            f"FROM {TABLE} WHERE scope = {scope} AND model = {model} AND context_hash = {ctx} "
            f"AND expires > clock_timestamp() ORDER BY {order} LIMIT {limit}"
        )
    return out


# Django's cursor binds on the client, the vector as text; the gateway's asyncpg connection
# binds on the server (a prepared statement), the vector once and in binary ($1).
SYNC_SQL = _search_sql("%s::vector", "%s", "%s", "%s", "%s")
ASYNC_SQL = _search_sql("$1", "$2", "$3", "$4", "$5")


def _candidates(rows: Sequence[Sequence[Any]]) -> list[Candidate]:
    """Rows as candidates, nearest first (relaxed_order may return rows slightly out of
    order). Django has psycopg hand jsonb back as text (JSONField decodes it); psycopg's own
    connections decode it."""
    found = [
        Candidate(r[0], r[1], json.loads(r[2]) if isinstance(r[2], str) else r[2], r[3], r[4],
                  1.0 - float(r[5]))
        for r in rows
    ]  # fmt: skip
    return sorted(found, key=lambda c: -c.similarity)


_slices: LruTtlCache[tuple[str, str, str], int] = LruTtlCache(SLICE_COUNT_SECONDS, 10_000)


def slice_rows(scope: str, model: str, context_hash: str) -> int:
    """How many rows one scope, model and context hold, counted up to EXACT_MAX_ROWS + 1 and
    remembered for SLICE_COUNT_SECONDS (per process): the choice between exact and HNSW need
    not be fresher than that."""
    key = (scope, model, context_hash)
    return _slices.get_or_load(key, lambda: _count(scope, model, context_hash))


COUNT_SQL = (
    f"SELECT count(*) FROM (SELECT 1 FROM {TABLE} WHERE scope = %s AND model = %s "
    "AND context_hash = %s LIMIT %s) s"
)
ASYNC_COUNT_SQL = (
    f"SELECT count(*) FROM (SELECT 1 FROM {TABLE} WHERE scope = $1 AND model = $2 "
    "AND context_hash = $3 LIMIT $4) s"
)


def _count(scope: str, model: str, context_hash: str) -> int:
    with connection.cursor() as cur:
        cur.execute(COUNT_SQL, [scope, model, context_hash, EXACT_MAX_ROWS + 1])
        return cur.fetchone()[0]


def record_hit(entry_id: int) -> None:
    SemanticCacheEntry.objects.filter(pk=entry_id).update(
        hits=F("hits") + 1, last_hit=timezone.now()
    )


def insert(
    *,
    tenant_id: int,
    scope: str,
    model: str,
    context_hash: str,
    embedding: Sequence[float],
    prompt: str,
    response: dict[str, Any],
    input_tokens: int,
    output_tokens: int,
    ttl_seconds: int,
) -> SemanticCacheEntry:
    """Store an answer; it replaces an entry for the same prompt in the same scope, model and
    context (a refresh after ``Cache-Control: no-cache``, or two misses racing)."""
    now = timezone.now()
    with transaction.atomic():
        SemanticCacheEntry.objects.filter(
            scope=scope, model=model, context_hash=context_hash, prompt=prompt
        ).delete()
        return SemanticCacheEntry.objects.create(
            tenant_id=tenant_id,
            scope=scope,
            model=model,
            context_hash=context_hash,
            embedding=list(embedding),
            prompt=prompt,
            response=response,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            created=now,
            expires=now + dt.timedelta(seconds=ttl_seconds),
        )
