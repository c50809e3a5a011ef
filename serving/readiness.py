"""The gateway's ``model_workers`` readiness check (``/readyz``, :mod:`switchyard.health`):
each enabled local-worker deployment's state. Registered in ``ServingConfig.ready()``.

A gateway whose workers are all still loading is ``starting`` (503: nothing can answer yet);
one whose workers are all unreachable is ``degraded`` (200: other deployments may still serve,
so the gateway stays in rotation, but says so).
"""

from __future__ import annotations

import httpx

from switchyard.health import DEGRADED, OK, STARTING, Readiness

WORKER_PROBE_SECONDS = 2.0


def worker_states() -> dict[str, str]:
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


def model_workers_readiness() -> Readiness:
    """The workers' states, and whether they let the gateway serve."""
    workers = worker_states()
    states = set(workers.values())
    if "starting" in states and "ready" not in states:
        return Readiness(workers, STARTING)
    if workers and "ready" not in states:
        return Readiness(workers, DEGRADED)
    return Readiness(workers, OK)
