"""Helpers for the cache tests: the cache stores in the background, so tests poll for it."""

from __future__ import annotations

import time
from collections.abc import Callable

from serving.cache import exact
from serving.cache.models import SemanticCacheEntry
from serving.cache.writeback import semantic_write_ingestor
from switchyard.redis_client import get_redis


def drain_cache_writes() -> int:
    """Store the semantic entries gateways queued (write-behind), as Celery does."""
    return semantic_write_ingestor.drain(get_redis())


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    """Poll ``predicate``, draining the cache's write-behind stream before each look."""
    deadline = time.monotonic() + timeout
    while drain_cache_writes() >= 0 and not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}"
        time.sleep(0.02)


def wait_exact_entries(tenant, n: int) -> None:
    wait_for(lambda: exact.count_tenant(get_redis(), tenant.pk) >= n, what=f"{n} exact entries")


def wait_semantic_entries(tenant, n: int) -> None:
    """Semantic entries are written behind (a stream Celery drains): :func:`wait_for`
    drains it, as Celery would, until ``n`` entries of the tenant are stored."""

    wait_for(
        lambda: SemanticCacheEntry.objects.filter(tenant=tenant).count() >= n,
        what=f"{n} semantic entries",
    )
