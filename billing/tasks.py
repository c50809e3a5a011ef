from celery import shared_task

from billing.usage import usage_ingestor
from switchyard.redis_client import get_redis


@shared_task(name="billing.tasks.ingest_usage", ignore_result=True)
def ingest_usage() -> int:
    """Drain queued usage events into UsageRecord (idempotent by request id)."""
    return usage_ingestor.drain(get_redis())
