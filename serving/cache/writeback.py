"""Write-behind for the semantic cache: a miss's answer is queued, not stored, on the request
path.

The gateway adds one entry per answer to the Redis stream ``sy:cachestore`` in the same
round trip (and transaction) as the request's settlement and usage record; Celery
(``serving.cache.tasks.ingest_cache_writes``, every 2 s) drains it through the same durable
machinery as usage (:class:`switchyard.streams.StreamIngestor`: consumer group, claims after
a crash, dead letters for what cannot be stored). The ingestor embeds, in one batch, the
prompts whose embedding the gateway did not compute already (a lookup computes it; a store
after ``Cache-Control: no-cache`` does not), replaces an older entry for the same prompt in
the same scope, model and context, and inserts the batch.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import threading
from array import array
from collections.abc import Sequence
from typing import Any

from django.db.models import Q

from serving.cache.models import SemanticCacheEntry
from switchyard.json_bytes import json_bytes
from switchyard.streams import StreamIngestor, parse_json, to_datetime, to_int

CACHE_STREAM = "sy:cachestore"
_lock = threading.Lock()


def semantic_write(
    *,
    tenant_id: int,
    scope: str,
    model: str,
    context_hash: str,
    prompt: str,
    response: dict[str, Any],
    input_tokens: int,
    output_tokens: int,
    ttl_seconds: int,
    embedding: Sequence[float] | None,
    created: dt.datetime,
) -> dict[str, str]:
    """One stream entry for a semantic-cache store."""
    vec = base64.b64encode(array("f", embedding).tobytes()).decode() if embedding else ""
    return {
        "tenant_id": str(tenant_id),
        "scope": scope,
        "model": model,
        "context_hash": context_hash,
        "prompt": prompt,
        "response": json_bytes(response),
        "input_tokens": str(input_tokens),
        "output_tokens": str(output_tokens),
        "expires": (created + dt.timedelta(seconds=ttl_seconds)).isoformat(),
        "created": created.isoformat(),
        "embedding": vec,
    }


@functools.cache
def _embedder():
    from serving.engine.embeddings import MiniLMEmbedder

    with _lock:
        return MiniLMEmbedder()


def _vector(text: str) -> list[float] | None:
    if not text:
        return None
    values = array("f")
    values.frombytes(base64.b64decode(text))
    return list(values)


def _rows(events: list[dict[str, str]]) -> list[SemanticCacheEntry]:
    # The newest answer for a prompt wins, within the batch and against the table.
    latest: dict[tuple[str, str, str, str], dict[str, str]] = {}
    for e in events:
        latest[(e["scope"], e["model"], e["context_hash"], e["prompt"])] = e
    entries = list(latest.values())
    vectors = [_vector(e.get("embedding", "")) for e in entries]
    missing = [i for i, v in enumerate(vectors) if v is None]
    if missing:
        computed = _embedder().embed([entries[i]["prompt"] for i in missing])
        for i, vec in zip(missing, computed, strict=True):
            vectors[i] = list(vec)
    same = Q()
    for scope, model, context_hash, prompt in latest:
        same |= Q(scope=scope, model=model, context_hash=context_hash, prompt=prompt)
    SemanticCacheEntry.objects.filter(same).delete()
    return [
        SemanticCacheEntry(
            tenant_id=int(e["tenant_id"]),
            scope=e["scope"],
            model=e["model"],
            context_hash=e["context_hash"],
            embedding=vec,
            prompt=e["prompt"],
            response=parse_json(e["response"]),
            input_tokens=to_int(e.get("input_tokens")),
            output_tokens=to_int(e.get("output_tokens")),
            created=to_datetime(e.get("created")),
            expires=to_datetime(e.get("expires")),
        )
        for e, vec in zip(entries, vectors, strict=True)
    ]


# Registered in CacheConfig.ready().
semantic_write_ingestor = StreamIngestor(
    stream=CACHE_STREAM, group="cache-write", model=SemanticCacheEntry, build=_rows, batch=256
)
