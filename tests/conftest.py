"""The shared cast of every test (STYLE.md): an operator admin, an operator viewer, an
outsider with no role, and two tenants, A and B, on one tier.

Embedded PostgreSQL and Redis are started by the ``switchyard.testing.services`` plugin.

Tests that load the real model, start a process (gateway, upstream, worker) or drive Chromium
are marked ``slow`` here, by the fixtures they use (and the ``browser`` marker), so that
``pytest -m "not slow"`` is a fast loop; tests that start processes themselves carry the mark.
"""

from __future__ import annotations

import pytest
import torch

from serving.engine.engine import pick_device
from serving.engine.gguf_loader import load_gguf
from serving.engine.model import LlamaModel
from serving.engine.registry import resolve
from serving.engine.tokenizer import ChatTokenizer
from tenants import services
from tenants.roles import Role
from tests.gateway_fixtures import (  # noqa: F401 - fixtures
    caller,
    clean_redis,
    gateway,
    make_caller,
    price,
    upstream_url,
)
from tests.worker_fixtures import MODEL, embedder, worker  # noqa: F401 - fixtures

# Fixtures that load the real model or MiniLM, start a process or a server, or open a browser.
# A test that uses one of them, directly or through another fixture, is slow.
SLOW_FIXTURES = frozenset({
    "loaded", "gguf_file", "embedder", "worker",  # the real model and MiniLM
    "gateway", "capped_gateway", "upstream_url", "provider_url", "two_workers",  # processes
    "browser",  # Chromium
})  # fmt: skip


def pytest_collection_modifyitems(config, items) -> None:  # noqa: ARG001
    """Mark ``slow`` every test that uses a slow fixture or drives the browser."""
    for item in items:
        if item.get_closest_marker("browser") or SLOW_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def loaded():
    """The real SmolLM2 weights and tokenizer, loaded once for the whole session."""
    name, path = resolve(MODEL)
    gguf = load_gguf(path, name)
    device, dtype = pick_device()
    torch.set_num_threads(2)
    return LlamaModel(gguf.config, gguf.weights, device, dtype), ChatTokenizer(gguf.tokenizer)


@pytest.fixture(scope="session", autouse=True)
def _end_stray_db_sessions(django_db_setup, django_db_blocker):
    """Before the test database is dropped, end sessions other processes left behind."""
    yield
    from django.db import connection

    with django_db_blocker.unblock(), connection.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture
def tier(db):
    return services.tier_create(
        name="standard",
        requests_per_minute=60,
        tokens_per_minute=100_000,
        tokens_per_day=1_000_000,
        max_concurrent_requests=4,
        allowed_models=["smollm2-135m-instruct"],
        default_model="smollm2-135m-instruct",
    )


@pytest.fixture
def tenant_a(tier):
    return services.tenant_create(
        name="Acme", slug="acme", tier=tier, contact_email="ops@acme.test"
    )


@pytest.fixture
def tenant_b(tier):
    return services.tenant_create(name="Bravo", slug="bravo", tier=tier)


@pytest.fixture
def alice(db):
    """Operator admin."""
    return services.operator_set(username="alice", role=Role.ADMIN, password="alice-pass-123")


@pytest.fixture
def bob(db):
    """Operator viewer."""
    return services.operator_set(username="bob", role=Role.VIEWER, password="bob-pass-123")


@pytest.fixture
def charlie(django_user_model):
    """A user with no operator role."""
    return django_user_model.objects.create_user(username="charlie", password="charlie-pass-123")
