from celery import shared_task

from serving.cache.services import cache_enforce_caps, cache_expire
from serving.cache.writeback import semantic_write_ingestor
from switchyard.redis_client import get_redis


@shared_task(name="serving.cache.tasks.ingest_cache_writes", ignore_result=True)
def ingest_cache_writes() -> int:
    """Store the semantic-cache answers gateways queued (write-behind), in batches."""
    return semantic_write_ingestor.drain(get_redis())


@shared_task(name="serving.cache.tasks.expire_cache_entries", ignore_result=True)
def expire_cache_entries() -> int:
    """Delete expired semantic-cache entries."""
    return cache_expire()


@shared_task(name="serving.cache.tasks.enforce_cache_caps", ignore_result=True)
def enforce_cache_caps() -> int:
    """Hold every tenant to its tier's cache entry cap; returns entries dropped."""
    return sum(cache_enforce_caps().values())
