"""The Celery app: broker is REDIS_URL; tasks are found in each app's tasks.py."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "switchyard.settings")

app = Celery("switchyard")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

app.conf.beat_schedule = {
    "celery-heartbeat": {"task": "switchyard.tasks.heartbeat", "schedule": 15.0},
    "ingest-usage": {"task": "billing.tasks.ingest_usage", "schedule": 2.0},
    "ingest-request-logs": {"task": "serving.tasks.ingest_request_logs", "schedule": 2.0},
    "ingest-cache-writes": {"task": "serving.cache.tasks.ingest_cache_writes", "schedule": 2.0},
    "rollup-usage": {"task": "billing.tasks.rollup_usage", "schedule": 60.0},
    "check-budget-alerts": {"task": "billing.tasks.check_budget_alerts", "schedule": 30.0},
    "reconcile-budgets": {"task": "billing.tasks.reconcile_budgets", "schedule": 300.0},
    "expire-cache-entries": {"task": "serving.cache.tasks.expire_cache_entries", "schedule": 60.0},
    "enforce-cache-caps": {"task": "serving.cache.tasks.enforce_cache_caps", "schedule": 300.0},
    "check-deployments": {
        "task": "serving.tasks.check_deployments",
        # Read here, not from django.conf: importing the app must not load the settings.
        "schedule": float(os.environ.get("SWITCHYARD_HEALTH_CHECK_SECONDS", "10")),
    },
}
