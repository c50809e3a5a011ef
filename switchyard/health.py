"""Liveness and readiness probes, JSON.

``/healthz`` says the process is up. ``/readyz`` says whether this gateway can serve: the
database and Redis answer, and, where deployments point at Switchyard model workers, at least
one of those workers has loaded its model (a worker answers its ``/health`` with 503
``starting`` until then). A gateway whose workers are all still loading reports
``starting`` with 503, so a load balancer sends it no traffic yet; one whose workers are all
unreachable says ``degraded`` (200: other deployments may still serve).
"""

from __future__ import annotations

import time

import httpx
from django.db import connection
from django.http import JsonResponse

from switchyard.redis_client import get_redis
from switchyard.tasks import HEARTBEAT_KEY

WORKER_PROBE_SECONDS = 2.0


def _worker_readiness() -> dict[str, str]:
    """Each enabled local-worker deployment's state: ready, starting or unreachable."""
    from serving.models import Deployment
    from serving.routing.health_checks import health_url

    workers = list(
        Deployment.objects.filter(enabled=True, kind="local_worker").values_list("name", "base_url")
    )
    states: dict[str, str] = {}
    if not workers:
        return states
    with httpx.Client(timeout=WORKER_PROBE_SECONDS) as client:
        for name, base_url in workers:
            try:
                resp = client.get(health_url(base_url))
            except httpx.HTTPError:
                states[name] = "unreachable"
                continue
            if resp.status_code == 200:
                states[name] = "ready"
            elif resp.status_code == 503:
                states[name] = "starting"
            else:
                states[name] = f"http {resp.status_code}"
    return states


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
    status = "ok" if ok else "unavailable"
    if ok:
        try:
            workers = _worker_readiness()
        except Exception as exc:  # noqa: BLE001 - reported, never a 500
            workers = {"error": type(exc).__name__}
        checks["model_workers"] = workers
        states = set(workers.values())
        if "starting" in states and "ready" not in states:
            # Every local worker still loading: nothing can answer yet.
            ok, status = False, "starting"
        elif workers and "ready" not in states:
            # Workers down: other deployments may still serve, so the gateway stays in
            # rotation, but says so.
            status = "degraded"
    body = {
        "status": status,
        "checks": checks,
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    return JsonResponse(body, status=200 if ok else 503)
