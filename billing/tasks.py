"""Celery tasks: each calls one billing function (the work is testable without Celery)."""

from celery import shared_task

from billing import alerts, anomalies, rollups
from billing.usage import usage_ingestor
from switchyard.redis_client import get_redis


@shared_task(name="billing.tasks.ingest_usage", ignore_result=True)
def ingest_usage() -> int:
    """Drain queued usage events into UsageRecord (idempotent by request id)."""
    return usage_ingestor.drain(get_redis())


@shared_task(name="billing.tasks.rollup_usage", ignore_result=True)
def rollup_usage() -> int:
    """Fold new usage records into the hourly and daily rollups, then score anomalies."""
    run = rollups.rollup_usage()
    anomalies.check_anomalies()
    alerts.deliver_pending()
    return run.records


@shared_task(name="billing.tasks.check_budget_alerts", ignore_result=True)
def check_budget_alerts() -> int:
    """Record budget threshold alerts and deliver every alert still owed."""
    created = alerts.check_budgets()
    alerts.deliver_pending()
    return len(created)
