"""The exact cache: whole responses in Redis under a key of scope, model and the canonical
request (serving.cache.keys), with the tier's TTL.

Each tenant's keys are also listed in a sorted set by creation time (``sy:cache:xidx:<id>``),
so an operator can purge one tenant's entries and Celery can hold each tenant to its cap
without scanning the keyspace.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

from switchyard.json_bytes import json_bytes


def index_key(tenant_id: int) -> str:
    return f"sy:cache:xidx:{tenant_id}"


@dataclass(frozen=True)
class CachedAnswer:
    """A response body to serve again, with the token counts it cost when first produced."""

    kind: str  # "hit-exact" | "hit-semantic"
    response: dict[str, Any]
    input_tokens: int
    output_tokens: int


class ExactCache:
    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client

    async def get(self, key: str) -> CachedAnswer | None:
        return self.parse(await self.redis.get(key))

    @staticmethod
    def parse(raw: bytes | None) -> CachedAnswer | None:
        """The answer an entry's stored bytes hold (None: no entry)."""
        if raw is None:
            return None
        data = json.loads(raw)
        return CachedAnswer(
            "hit-exact", data["response"], data["input_tokens"], data["output_tokens"]
        )

    async def put(
        self,
        key: str,
        *,
        tenant_id: int,
        response: dict[str, Any],
        input_tokens: int,
        output_tokens: int,
        ttl_seconds: int,
    ) -> None:
        pipe = self.redis.pipeline(transaction=False)
        queue_put(pipe, key, tenant_id=tenant_id, response=response, input_tokens=input_tokens,
                  output_tokens=output_tokens, ttl_seconds=ttl_seconds)  # fmt: skip
        await pipe.execute()


def queue_put(
    pipe: Any,
    key: str,
    *,
    tenant_id: int,
    response: dict[str, Any],
    input_tokens: int,
    output_tokens: int,
    ttl_seconds: int,
) -> None:
    """Queue an exact entry's writes on ``pipe`` (the gateway's settlement round trip)."""
    value = json_bytes(
        {"response": response, "input_tokens": input_tokens, "output_tokens": output_tokens}
    )
    pipe.set(key, value, ex=ttl_seconds)
    pipe.zadd(index_key(tenant_id), {key: time.time()})
    pipe.expire(index_key(tenant_id), ttl_seconds * 2)


# ---- maintenance (sync: console, API, Celery) ---------------------------------------------


def purge_tenant(client: redis.Redis, tenant_id: int) -> int:
    """Delete every exact entry the tenant wrote; returns how many keys were deleted."""
    idx = index_key(tenant_id)
    keys = client.zrange(idx, 0, -1)
    deleted = 0
    for start in range(0, len(keys), 500):
        deleted += client.delete(*keys[start : start + 500])
    client.delete(idx)
    return deleted


def count_tenant(client: redis.Redis, tenant_id: int) -> int:
    """Live exact entries the tenant wrote (the index may list a few that just expired)."""
    return int(client.zcard(index_key(tenant_id)))


def trim_tenant(client: redis.Redis, tenant_id: int, *, max_age_seconds: int, cap: int) -> int:
    """Forget index entries older than ``max_age_seconds`` (their keys have expired) and delete
    the oldest keys beyond ``cap``; returns how many live keys were deleted for the cap."""
    idx = index_key(tenant_id)
    client.zremrangebyscore(idx, "-inf", time.time() - max_age_seconds)
    excess = client.zcard(idx) - cap
    if excess <= 0:
        return 0
    oldest = client.zrange(idx, 0, excess - 1)
    deleted = client.delete(*oldest) if oldest else 0
    client.zrem(idx, *oldest)
    return int(deleted)


def tenant_ids_with_entries(client: redis.Redis) -> list[int]:
    return [int(k.rsplit(b":", 1)[1]) for k in client.scan_iter(match="sy:cache:xidx:*", count=500)]
