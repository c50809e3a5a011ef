"""The semantic cache's queries (sync: run them off the event loop with sync_to_async).

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
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from serving.cache.models import SemanticCacheEntry

TABLE = SemanticCacheEntry._meta.db_table
EF_SEARCH = 40
CANDIDATES = 4


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
) -> list[Candidate]:
    """The live entries nearest to ``embedding`` in one scope, model and context, nearest first
    (similarity = 1 - cosine distance). ``iterative_scan`` is pgvector's setting ("off" only to
    measure what it buys, in benchmarks/cache)."""
    if iterative_scan not in ("relaxed_order", "strict_order", "off"):
        raise ValueError(f"unknown iterative_scan {iterative_scan!r}")
    vec = vector_literal(embedding)
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(f"SET LOCAL hnsw.iterative_scan = {iterative_scan}")
        cur.execute(f"SET LOCAL hnsw.ef_search = {int(ef_search)}")
        cur.execute(
            f"SELECT id, prompt, response, input_tokens, output_tokens, "
            f"embedding <=> %s::vector AS distance FROM {TABLE} "
            "WHERE scope = %s AND model = %s AND context_hash = %s AND expires > now() "
            "ORDER BY embedding <=> %s::vector LIMIT %s",
            [vec, scope, model, context_hash, vec, limit],
        )
        rows = cur.fetchall()
    # Django has psycopg hand jsonb back as text (JSONField decodes it); so do we.
    found = [
        Candidate(r[0], r[1], json.loads(r[2]) if isinstance(r[2], str) else r[2], r[3], r[4],
                  1.0 - float(r[5]))
        for r in rows
    ]  # fmt: skip
    # relaxed_order may return rows slightly out of order.
    return sorted(found, key=lambda c: -c.similarity)


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
