"""Helpers for the cache tests: the cache stores in the background, so tests poll for it."""

from __future__ import annotations

import time
from collections.abc import Callable

from serving.cache import exact
from serving.cache.models import SemanticCacheEntry
from switchyard.redis_client import get_redis


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}"
        time.sleep(0.02)


def wait_exact_entries(tenant, n: int) -> None:
    wait_for(lambda: exact.count_tenant(get_redis(), tenant.pk) >= n, what=f"{n} exact entries")


def wait_semantic_entries(tenant, n: int) -> None:
    wait_for(
        lambda: SemanticCacheEntry.objects.filter(tenant=tenant).count() >= n,
        what=f"{n} semantic entries",
    )
