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


@shared_task(
    name="billing.tasks.reconcile_budgets", ignore_result=True, time_limit=120, soft_time_limit=100
)
def reconcile_budgets() -> int:
    """Put the gateway's Redis budget counters right against the usage records (expired
    reservations released, spend re-based); returns how many counters moved."""
    from billing.ledger import reconcile_budgets as run

    return sum(1 for r in run(get_redis()) if r.correction)
