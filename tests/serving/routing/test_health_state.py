"""The live deployment state in Redis: one attempt's end frees its slot and records how it went."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from django.conf import settings

from serving.routing.health import DeploymentHealth, DeploymentHealthSync
from switchyard.redis_client import get_redis


@pytest.fixture
def name():
    r = get_redis()
    for key in r.scan_iter("sy:dep:hs-*"):
        r.delete(key)
    return "hs-one"


def run(coro_fn):
    async def wrapper():
        client = aioredis.Redis.from_url(settings.REDIS_URL)
        try:
            return await coro_fn(DeploymentHealth(client))
        finally:
            await client.aclose()

    return asyncio.run(wrapper())


def test_finish_frees_the_slot_and_updates_the_ewma(name):
    async def go(h: DeploymentHealth):
        await h.acquire(name, "r1")
        await h.acquire(name, "r2")
        during = (await h.snapshot([name]))[name].inflight
        await h.finish(name, "r1", ok=True, ttft_ms=100.0)
        await h.finish(name, "r2", ok=True, ttft_ms=200.0)
        return during, (await h.snapshot([name]))[name]

    during, after = run(go)
    assert during == 2 and after.inflight == 0
    assert after.ewma_ms == pytest.approx(0.3 * 200 + 0.7 * 100)


def test_failures_in_a_row_start_a_cooldown_and_a_success_ends_it(name):
    async def go(h: DeploymentHealth):
        started = []
        for i in range(settings.SWITCHYARD_COOLDOWN_FAILURES):
            await h.acquire(name, f"r{i}")
            started.append(await h.finish(name, f"r{i}", ok=False, reason="answered 503"))
        cooling = (await h.snapshot([name]))[name]
        await h.finish(name, "neutral", ok=None)  # the caller's own 400: neither
        await h.finish(name, "ok", ok=True, ttft_ms=5.0)
        return started, cooling, (await h.snapshot([name]))[name]

    started, cooling, healed = run(go)
    assert started[-1] == settings.SWITCHYARD_COOLDOWN_SECONDS and not any(started[:-1])
    assert cooling.cooling() and cooling.last_error == "answered 503" and cooling.inflight == 0
    assert not healed.cooling() and healed.fails == 0
    assert DeploymentHealthSync(get_redis()).snapshot([name])[name].status() == "healthy"
