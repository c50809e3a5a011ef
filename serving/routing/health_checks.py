"""Active health checks: each enabled deployment's ``/health`` or a one-token completion.

Run by Celery beat every ``SWITCHYARD_HEALTH_CHECK_SECONDS`` (env, default 10;
``serving.tasks.check_deployments``).
A pass clears a deployment's failures and cooldown at once; a failure counts like a passive
one (a refused connection starts a cooldown at once).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from serving import secrets
from serving.gateway.upstream import NO_HEALTH_URL, probe_request
from serving.models import Deployment
from serving.routing.health import DeploymentHealthSync
from switchyard.redis_client import get_redis

CHECK_TIMEOUT = 5.0


@dataclass(frozen=True)
class CheckResult:
    deployment: str
    ok: bool
    detail: str


def health_url(base_url: str) -> str:
    """``/health`` next to the OpenAI base URL (``http://h:8100/v1`` → ``http://h:8100/health``)."""
    base = base_url.rstrip("/")
    if base.endswith("/v1"):
        base = base[:-3]
    return f"{base}/health"


def check_deployment(dep: Deployment, client: httpx.Client) -> CheckResult:
    """Probe one deployment (blocking, at most ``CHECK_TIMEOUT`` seconds)."""
    try:
        if dep.health_check == Deployment.HealthCheck.COMPLETION and dep.kind in NO_HEALTH_URL:
            url, body, headers = probe_request(
                kind=dep.kind,
                base_url=dep.base_url,
                model=dep.target_model,
                api_key=secrets.decrypt(dep.api_key_encrypted),
                api_version=dep.api_version,
            )
            resp = client.post(url, json=body, headers=headers)
        elif dep.health_check == Deployment.HealthCheck.COMPLETION:
            headers = {"content-type": "application/json"}
            key = secrets.decrypt(dep.api_key_encrypted)
            if key:
                headers["authorization"] = f"Bearer {key}"
            resp = client.post(
                f"{dep.base_url.rstrip('/')}/chat/completions",
                json={
                    "model": dep.target_model,
                    "max_tokens": 1,
                    "messages": [{"role": "user", "content": "ping"}],
                },  # fmt: skip
                headers=headers,
            )
        else:
            resp = client.get(health_url(dep.base_url))
    except httpx.TimeoutException:
        return CheckResult(dep.name, False, "health check timed out")
    except (httpx.HTTPError, ValueError) as exc:
        return CheckResult(dep.name, False, f"unreachable: {type(exc).__name__}")
    if resp.status_code != 200:
        return CheckResult(dep.name, False, f"health check answered {resp.status_code}")
    return CheckResult(dep.name, True, "ok")


def check_deployments() -> list[CheckResult]:
    """Probe every enabled deployment with an active check, in parallel; record results."""
    deps = [
        d
        for d in Deployment.objects.filter(enabled=True).exclude(
            health_check=Deployment.HealthCheck.NONE
        )
        # No /health next to a provider's base URL: passive checks only, unless "completion".
        if not (d.kind in NO_HEALTH_URL and d.health_check == Deployment.HealthCheck.HEALTH_URL)
    ]
    if not deps:
        return []
    health = DeploymentHealthSync(get_redis())
    with (
        httpx.Client(timeout=httpx.Timeout(CHECK_TIMEOUT, connect=2.0)) as client,
        ThreadPoolExecutor(max_workers=min(8, len(deps))) as pool,
    ):
        results = list(pool.map(lambda d: check_deployment(d, client), deps))
    for r in results:
        if r.ok:
            health.success(r.deployment)
        else:
            health.failure(r.deployment, r.detail, immediate=r.detail.startswith("unreachable"))
    return results
