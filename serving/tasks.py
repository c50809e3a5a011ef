from celery import shared_task

from serving.request_log import request_log_ingestor
from switchyard.redis_client import get_redis


@shared_task(name="serving.tasks.ingest_request_logs", ignore_result=True)
def ingest_request_logs() -> int:
    """Write queued request-log entries in bulk (idempotent by request id)."""
    return request_log_ingestor.drain(get_redis())
