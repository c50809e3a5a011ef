"""Platform-level background tasks."""

import time

from celery import shared_task
from django.conf import settings

from switchyard.redis_client import get_redis

HEARTBEAT_KEY = "sy:celery:heartbeat"


@shared_task(name="switchyard.tasks.heartbeat", ignore_result=True)
def heartbeat() -> float:
    """Record that beat and a worker are alive; /readyz reports the age of this stamp (s)."""
    now = time.time()
    get_redis().set(HEARTBEAT_KEY, now, ex=int(getattr(settings, "HEARTBEAT_TTL", 300)))
    return now
