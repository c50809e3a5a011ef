"""Liveness and readiness probes, JSON.

``/healthz`` says the process is up. ``/readyz`` says whether this gateway can serve: the
database and Redis answer, then every readiness check the apps registered
(:func:`register_readiness_check`) is run. Serving registers ``model_workers``: where
deployments point at Switchyard model workers, at least one of those workers has loaded its
model (a worker answers its ``/health`` with 503 ``starting`` until then). A check that says
``starting`` makes the gateway report ``starting`` with 503, so a load balancer sends it no
traffic yet; one that says ``degraded`` (or fails) is reported as ``degraded`` with 200.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from django.db import connection
from django.http import JsonResponse

from switchyard.redis_client import get_redis
from switchyard.tasks import HEARTBEAT_KEY

OK = "ok"
STARTING = "starting"  # nothing can serve yet: 503
DEGRADED = "degraded"  # in rotation, but part of it is down: 200


class Readiness(NamedTuple):
    """A readiness check's answer: ``report`` is shown under the check's name, ``status`` is
    :data:`OK`, :data:`STARTING` or :data:`DEGRADED`."""

    report: dict
    status: str = OK


READINESS_CHECKS: dict[str, Callable[[], Readiness]] = {}


def register_readiness_check(name: str, check: Callable[[], Readiness]) -> None:
    """Run ``check`` on every ``/readyz`` once the database and Redis answer; its report is
    shown as ``checks[name]``. Called from an app's ``AppConfig.ready()``."""
    READINESS_CHECKS[name] = check


def healthz(request):
    """The process is up."""
    return JsonResponse({"status": "ok"})


def readyz(request):
    """Database and Redis reachable (503 otherwise); Celery's heartbeat age, for information;
    then the registered checks."""
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
    status = OK if ok else "unavailable"
    if ok:
        for name, check in READINESS_CHECKS.items():
            try:
                result = check()
            except Exception as exc:  # noqa: BLE001 - reported, never a 500
                result = Readiness({"error": type(exc).__name__}, DEGRADED)
            checks[name] = result.report
            if result.status == STARTING:
                ok, status = False, STARTING
            elif result.status == DEGRADED and ok:
                status = DEGRADED
    body = {
        "status": status,
        "checks": checks,
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    return JsonResponse(body, status=200 if ok else 503)
