from celery import shared_task

from serving.request_log import request_log_ingestor
from switchyard.redis_client import get_redis


@shared_task(name="serving.tasks.ingest_request_logs", ignore_result=True)
def ingest_request_logs() -> int:
    """Write queued request-log entries in bulk (idempotent by request id)."""
    return request_log_ingestor.drain(get_redis())


@shared_task(
    name="serving.tasks.check_deployments", ignore_result=True, time_limit=60, soft_time_limit=50
)
def check_deployments() -> int:
    """Active health checks of every enabled deployment; returns how many are healthy."""
    from serving.routing.health_checks import check_deployments as run_checks

    return sum(r.ok for r in run_checks())
