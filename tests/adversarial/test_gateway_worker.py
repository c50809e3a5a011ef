"""A hostile tenant against the real model worker, through a real gateway: one request's
poison never ends another tenant's generation, and a client that goes away stops the work it
started and pays for what was done."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import httpx

from billing.models import UsageRecord
from billing.usage import usage_ingestor
from serving.models import RequestLog
from serving.request_log import request_log_ingestor
from serving.routing.deployments import deployment_set
from switchyard.redis_client import get_redis
from tests.gateway_fixtures import MODEL

PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]


def drain() -> None:
    usage_ingestor.drain(get_redis())
    request_log_ingestor.drain(get_redis())


def _point_at_worker(worker) -> None:
    deployment_set(name="instant", model=MODEL, base_url=f"{worker.url}/v1", kind="local_worker",
                   api_key=worker.token)  # fmt: skip


async def _stream_text(url: str, key: str, body: dict) -> tuple[str, list[str]]:
    lines: list[str] = []
    async with (
        httpx.AsyncClient(timeout=120) as client,
        client.stream(
            "POST",
            f"{url}/v1/chat/completions",
            json={**body, "stream": True},
            headers={"Authorization": f"Bearer {key}"},
        ) as r,
    ):
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if line.startswith("data:"):
                lines.append(line)
    text = "".join(
        (c.get("delta") or {}).get("content") or ""
        for line in lines
        if line != "data: [DONE]" and "choices" in (chunk := json.loads(line[5:]))
        for c in chunk["choices"]
    )
    return text, lines


def test_tiny_temperatures_beside_honest_streams_harm_no_one(make_caller, worker):
    honest, hostile = make_caller(), make_caller()
    _point_at_worker(worker)
    body = {"model": MODEL, "messages": PROMPT, "max_tokens": 24, "temperature": 0}

    async def run() -> tuple[list, list]:
        alone = await _stream_text(honest.base_url, honest.key, body)
        poison = [
            _stream_text(hostile.base_url, hostile.key, {**body, "temperature": t})
            for t in (1e-300, 5e-324, 1e-45, 1e-38)
        ]
        together = await asyncio.gather(
            *(_stream_text(honest.base_url, honest.key, body) for _ in range(3)), *poison
        )
        return alone, together

    alone, together = asyncio.run(run())
    for text, lines in together:
        # Honest and hostile alike: greedy, whole, ended by [DONE].
        assert lines[-1] == "data: [DONE]"
        assert text == alone[0]


def test_a_non_streaming_client_that_leaves_stops_the_generation_and_pays_for_it(
    make_caller, worker, price
):
    caller = make_caller(max_concurrent_requests=1)
    _point_at_worker(worker)
    engine = worker.app.state.engine

    async def leave_early() -> None:
        async with httpx.AsyncClient(timeout=1.5) as client:
            with contextlib.suppress(httpx.TimeoutException):
                await client.post(
                    f"{caller.base_url}/v1/chat/completions",
                    json={"model": MODEL, "messages": PROMPT, "max_tokens": 1500},
                    headers={"Authorization": f"Bearer {caller.key}"},
                )

    asyncio.run(leave_early())
    # The worker stops generating at once: nothing left running.
    deadline = time.monotonic() + 5
    while engine.stats().running or engine.stats().waiting:
        assert time.monotonic() < deadline, "the worker kept generating for a client that left"
        time.sleep(0.05)
    # The slot is free.
    r = caller.post("/chat/completions", {"model": MODEL, "messages": PROMPT, "max_tokens": 2})
    assert r.status_code == 200, r.text
    drain()
    gone = RequestLog.objects.get(tenant=caller.tenant, status_code=499)
    assert gone.output_tokens > 0, "the tokens generated before the client left are metered"
    rec = UsageRecord.objects.get(request_id=gone.request_id)
    assert rec.input_tokens > 0 and rec.output_tokens == gone.output_tokens
