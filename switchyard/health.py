"""Liveness and readiness probes, JSON."""

from __future__ import annotations

import time

from django.db import connection
from django.http import JsonResponse

from switchyard.redis_client import get_redis
from switchyard.tasks import HEARTBEAT_KEY


def healthz(request):
    """The process is up."""
    return JsonResponse({"status": "ok"})


def readyz(request):
    """Database and Redis reachable (503 otherwise); Celery's heartbeat age, for information."""
    checks: dict[str, dict] = {}
    ok = True
    started = time.perf_counter()
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT 1")
        checks["database"] = {"ok": True}
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        ok = False
        checks["database"] = {"ok": False, "error": type(exc).__name__}
    try:
        r = get_redis()
        r.ping()
        beat = r.get(HEARTBEAT_KEY)
        checks["redis"] = {"ok": True}
        checks["celery"] = {
            "heartbeat_age_s": round(time.time() - float(beat), 1) if beat else None
        }
    except Exception as exc:  # noqa: BLE001
        ok = False
        checks["redis"] = {"ok": False, "error": type(exc).__name__}
    body = {
        "status": "ok" if ok else "unavailable",
        "checks": checks,
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    return JsonResponse(body, status=200 if ok else 503)
