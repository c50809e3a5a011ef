"""Gateway fixtures, shared by the gateway and adversarial suites: a real ASGI server
(uvicorn, in its own process) against the test database and Redis, with an instant
OpenAI-compatible upstream on loopback, called with the official ``openai`` client over
real HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import openai
import pytest
from django.conf import settings
from django.db import connection

from billing.models import ModelPrice
from serving.routing.deployments import deployment_set
from switchyard.embedded import free_port
from switchyard.processes import stop_process as _stop
from switchyard.processes import wait_http as _wait_http
from switchyard.redis_client import get_redis
from tenants import services

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def upstream_url():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving.instant_upstream", "--port", str(port)], cwd=ROOT
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


def test_database_url() -> str:
    """DATABASE_URL pointing at pytest-django's test database."""
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path="/" + settings.DATABASES["default"]["NAME"]))


class GatewayProcess:
    """A uvicorn process serving switchyard.asgi on a free port."""

    def __init__(self, **env_overrides: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env.update(
            DATABASE_URL=test_database_url(),
            SWITCHYARD_TABLE_CACHE_SECONDS="0",
            SWITCHYARD_TESTING="1",
            # The instant upstream's "embeddings" are not MiniLM's: cache lookups embed with
            # the real model in-process (tests of the deployment embedder set it themselves).
            SWITCHYARD_CACHE_EMBEDDER="local",
            PYTHONUNBUFFERED="1",
        )
        env.update(env_overrides)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "switchyard.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-access-log",
                "--log-level",
                "warning",
                "--timeout-graceful-shutdown",
                "2",
            ],  # fmt: skip
            cwd=ROOT,
            env=env,
        )
        _wait_http(f"{self.url}/healthz", self.proc)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        _stop(self.proc)


@pytest.fixture(scope="session")
def gateway(django_db_setup, django_db_blocker):
    gw = GatewayProcess()
    try:
        yield gw
    finally:
        gw.stop()
        with django_db_blocker.unblock(), connection.cursor() as cur:
            # Let the test database be dropped even if a killed process left a session.
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


@pytest.fixture
def clean_redis():
    r = get_redis()
    r.flushdb()
    yield r
    r.flushdb()


@dataclass
class Caller:
    tenant: object
    key: str
    base_url: str

    def client(self, **kw) -> openai.OpenAI:
        return openai.OpenAI(api_key=self.key, base_url=f"{self.base_url}/v1", max_retries=0, **kw)

    def aclient(self, **kw) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=self.key, base_url=f"{self.base_url}/v1", max_retries=0, **kw
        )

    def post(self, path: str, json=None, **kw) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.key}", **kw.pop("headers", {})}
        return httpx.post(f"{self.base_url}/v1{path}", json=json, headers=headers, timeout=30, **kw)


@pytest.fixture
def price(transactional_db):
    return ModelPrice.objects.create(
        model=MODEL, input_micro_usd_per_mtok=100_000, output_micro_usd_per_mtok=400_000
    )


@pytest.fixture
def make_caller(transactional_db, gateway, upstream_url, clean_redis):
    """Make a tenant on its own tier with a key, served by the instant upstream."""
    deployment_set(name="instant", model=MODEL, base_url=f"{upstream_url}/v1", context_window=4096)
    deployment_set(name="instant-embed", model="all-minilm-l6-v2", base_url=f"{upstream_url}/v1")
    counter = iter(range(1000))

    def make(slug: str | None = None, **tier_fields) -> Caller:
        n = next(counter)
        slug = slug or f"t{n}"
        tier_fields.setdefault("allowed_models", [MODEL, "all-minilm-l6-v2"])
        tier_fields.setdefault("default_model", MODEL)
        # Caches are on by default for real tiers; tests that want them turn them on, so a
        # repeated request elsewhere reaches the upstream as the test expects.
        tier_fields.setdefault("exact_cache_enabled", False)
        tier_fields.setdefault("semantic_cache_enabled", False)
        tier = services.tier_create(name=f"tier-{slug}", **tier_fields)
        tenant = services.tenant_create(name=slug.title(), slug=slug, tier=tier)
        _, raw = services.api_key_create(tenant=tenant, name="test")
        return Caller(tenant=tenant, key=raw, base_url=gateway.url)

    return make


@pytest.fixture
def caller(make_caller) -> Caller:
    """A tenant with a key on a default tier (for async tests, which cannot touch the ORM)."""
    return make_caller()
