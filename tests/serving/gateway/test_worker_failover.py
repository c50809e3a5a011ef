"""Two real model worker processes behind one model; one is killed with SIGKILL under load.

Requests not yet started succeed on the survivor, streams in flight on the dead one end with
an error event (their tokens metered), the dead one cools down and is back after a restart."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import httpx
import pytest

from billing.models import UsageRecord
from billing.usage import usage_ingestor
from serving.routing.deployments import deployment_set
from serving.routing.health import DeploymentHealthSync
from serving.routing.health_checks import check_deployments
from serving.routing.services import model_group_set
from switchyard.embedded import free_port
from switchyard.redis_client import get_redis
from tests.serving.gateway.conftest import MODEL, ROOT, _stop, _wait_http

ROOMY = dict(requests_per_minute=100_000, tokens_per_minute=10_000_000,
             tokens_per_day=100_000_000, max_concurrent_requests=200)  # fmt: skip
STORY = {"model": MODEL, "max_tokens": 300, "temperature": 1.0, "seed": 3, "stream": True,
         "messages": [{"role": "user", "content": "Tell me a long story about a lighthouse."}]}  # fmt: skip
SHORT = {"model": MODEL, "max_tokens": 4, "temperature": 0,
         "messages": [{"role": "user", "content": "Say hi."}]}  # fmt: skip


def start_worker(port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serving.engine.cli",
            "--port",
            str(port),
            "--no-embeddings",
            "--kv-cache-mb",
            "48",
        ],  # fmt: skip
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    return proc


@pytest.fixture
def two_workers():
    ports = free_port(), free_port()
    procs = [start_worker(p) for p in ports]
    try:
        for port, proc in zip(ports, procs, strict=True):
            _wait_http(f"http://127.0.0.1:{port}/health", proc, timeout=120)
        yield ports, procs
    finally:
        for proc in procs:
            _stop(proc)


def _deployment(resp: httpx.Response) -> str:
    return dict(p.split("=", 1) for p in resp.headers["x-switchyard-route"].split("; "))[
        "deployment"
    ]


async def _open_streams(client: httpx.AsyncClient, headers: dict, n: int):
    """Start ``n`` streams one after another, each once the previous produced a chunk."""
    streams = []
    for _ in range(n):
        ctx = client.stream("POST", "/chat/completions", json=STORY, headers=headers)
        resp = await ctx.__aenter__()
        assert resp.status_code == 200
        lines = resp.aiter_lines()
        first = await anext(_data(lines))
        streams.append((ctx, resp, lines, [first]))
    return streams


async def _data(lines):
    async for line in lines:
        if line.startswith("data: "):
            yield line[6:]


async def _finish(stream) -> list[str]:
    ctx, resp, lines, got = stream
    async for item in _data(lines):
        got.append(item)
    await ctx.__aexit__(None, None, None)
    return got


def test_sigkill_one_of_two_workers_under_load(make_caller, two_workers):
    (port_a, port_b), (proc_a, _) = two_workers
    deployment_set(name="instant", model=MODEL, base_url="http://127.0.0.1:9/v1", enabled=False)
    for name, port in (("worker-a", port_a), ("worker-b", port_b)):
        deployment_set(name=name, model=MODEL, base_url=f"http://127.0.0.1:{port}/v1",
                       kind="local_worker", timeout_seconds=30)  # fmt: skip
    model_group_set(name=MODEL, strategy="least_connections")
    caller = make_caller(**ROOMY)
    headers = {"Authorization": f"Bearer {caller.key}"}
    health = DeploymentHealthSync(get_redis())

    async def run():
        async with httpx.AsyncClient(base_url=f"{caller.base_url}/v1", timeout=120) as client:
            streams = await _open_streams(client, headers, 4)
            on = [_deployment(s[1]) for s in streams]
            assert sorted(on) == ["worker-a", "worker-a", "worker-b", "worker-b"], on
            proc_a.send_signal(signal.SIGKILL)
            proc_a.wait()
            later = asyncio.gather(*(client.post("/chat/completions", json=SHORT,
                                                 headers=headers) for _ in range(6)))  # fmt: skip
            finished = await asyncio.gather(*(_finish(s) for s in streams))
            return streams, on, finished, await later

    streams, on, finished, later = asyncio.run(run())
    for where, events in zip(on, finished, strict=True):
        errors = [json.loads(e)["error"] for e in events if '"error"' in e]
        if where == "worker-a":
            # Cut short: the error event ends the stream, with no [DONE] after it.
            assert errors and errors[0]["code"] == "upstream_error", events[-3:]
            assert '"error"' in events[-1] and "[DONE]" not in events
        else:
            assert events[-1] == "[DONE]"
            assert not errors
    assert [r.status_code for r in later] == [200] * 6
    assert {_deployment(r) for r in later} == {"worker-b"}
    dead = health.snapshot(["worker-a"])["worker-a"]
    assert dead.level >= 1 and "unreachable" in dead.last_error  # it entered cooldown
    # Its cooldown may have run out while the streams finished: the active check, finding it
    # still down, starts the next one at once.
    assert {r.deployment: r.ok for r in check_deployments()}["worker-a"] is False
    assert health.snapshot(["worker-a"])["worker-a"].cooling()

    # Tokens the broken streams produced are metered.
    usage_ingestor.drain(get_redis())
    for where, (_, resp, _, _) in zip(on, streams, strict=True):
        if where == "worker-a":
            rec = UsageRecord.objects.get(request_id=resp.headers["x-request-id"])
            assert rec.output_tokens > 0 and rec.deployment == "worker-a"

    # Restarted on the same port, the active check brings it back and it serves again.
    restarted = start_worker(port_a)
    try:
        _wait_http(f"http://127.0.0.1:{port_a}/health", restarted, timeout=120)
        results = {r.deployment: r.ok for r in check_deployments()}
        assert results["worker-a"] is True
        assert not health.snapshot(["worker-a"])["worker-a"].cooling()
        served = set()
        for _ in range(12):
            r = caller.post("/chat/completions", json=SHORT)
            assert r.status_code == 200
            served.add(_deployment(r))
        assert served == {"worker-a", "worker-b"}
    finally:
        _stop(restarted)
