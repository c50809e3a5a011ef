"""Lifetimes and upstream faults through a real gateway process: a client that goes away
releases everything, long answers are not cut at the first-byte deadline, an operator's bad
upstream key is not the tenant's error, and a loading worker says when to come back."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx

from billing.usage import usage_ingestor
from serving.models import RequestLog
from serving.request_log import request_log_ingestor
from serving.routing.deployments import deployment_set
from switchyard.redis_client import get_redis
from tests.gateway_fixtures import MODEL, GatewayProcess

MSG = [{"role": "user", "content": "count these words please"}]


def drain() -> None:
    usage_ingestor.drain(get_redis())
    request_log_ingestor.drain(get_redis())


def test_upstream_auth_failure_is_a_502_that_leaks_nothing_and_fails_over(
    make_caller, upstream_url
):
    caller = make_caller()
    deployment_set(name="instant", model=MODEL, base_url=f"{upstream_url}/unauth/v1")
    r = caller.post("/chat/completions", {"model": MODEL, "messages": MSG, "max_tokens": 4})
    assert r.status_code == 502
    err = r.json()["error"]
    assert err["code"] == "upstream_auth_failed" and err["type"] == "api_error"
    assert "sk-op" not in r.text and "Incorrect API key" not in r.text
    # The deployment is out of rotation at once; a healthy one takes the traffic.
    deployment_set(name="instant-2", model=MODEL, base_url=f"{upstream_url}/v1", weight=1)
    for _ in range(5):
        r = caller.post("/chat/completions", {"model": MODEL, "messages": MSG, "max_tokens": 4})
        assert r.status_code == 200
        assert "deployment=instant-2" in r.headers["x-switchyard-route"]


def test_a_loading_worker_answers_503_with_retry_after(make_caller, upstream_url):
    caller = make_caller()
    deployment_set(name="instant", model=MODEL, base_url=f"{upstream_url}/loading/v1")
    for stream in (False, True):
        body = {"model": MODEL, "messages": MSG, "max_tokens": 4, "stream": stream}
        r = caller.post("/chat/completions", body)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "model_loading"
        assert r.headers["retry-after"] == "7"
    # Loading is not failing: the deployment is not cooling down.
    deployment_set(name="instant", model=MODEL, base_url=f"{upstream_url}/v1")
    r = caller.post("/chat/completions", {"model": MODEL, "messages": MSG, "max_tokens": 4})
    assert r.status_code == 200


def test_a_non_streaming_answer_may_take_longer_than_the_first_byte_deadline(
    make_caller, upstream_url, price
):
    gw = GatewayProcess(SWITCHYARD_ROUTE_DEADLINE_SECONDS="1")
    try:
        caller = make_caller()
        deployment_set(name="instant", model=MODEL, base_url=f"{upstream_url}/delay/2500/v1",
                       timeout_seconds=30)  # fmt: skip
        r = httpx.post(
            f"{gw.url}/v1/chat/completions",
            json={"model": MODEL, "messages": MSG, "max_tokens": 4},
            headers={"Authorization": f"Bearer {caller.key}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        # A stream's first token, though, must come within the deadline.
        deployment_set(name="instant", model=MODEL, base_url=f"{upstream_url}/delay/2500/v1",
                       timeout_seconds=30)  # fmt: skip
        r = httpx.post(
            f"{gw.url}/v1/chat/completions",
            json={"model": MODEL, "messages": MSG, "max_tokens": 4, "stream": True},
            headers={"Authorization": f"Bearer {caller.key}"},
            timeout=30,
        )
        assert r.status_code == 504, r.text
    finally:
        gw.stop()


def test_a_non_streaming_client_that_leaves_releases_its_slot_and_is_logged(
    make_caller, upstream_url, price
):
    caller = make_caller(max_concurrent_requests=1)
    deployment_set(name="instant", model=MODEL, base_url=f"{upstream_url}/delay/20000/v1")

    async def leave_early() -> None:
        async with httpx.AsyncClient(timeout=1.0) as client:
            with contextlib.suppress(httpx.TimeoutException):
                await client.post(
                    f"{caller.base_url}/v1/chat/completions",
                    json={"model": MODEL, "messages": MSG, "max_tokens": 4},
                    headers={"Authorization": f"Bearer {caller.key}"},
                )

    asyncio.run(leave_early())
    deployment_set(name="instant", model=MODEL, base_url=f"{upstream_url}/v1")
    # The slot is free again within moments, not after 15 minutes.
    deadline = time.monotonic() + 3
    while True:
        r = caller.post("/chat/completions", {"model": MODEL, "messages": MSG, "max_tokens": 4})
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert r.status_code == 200, r.text
    drain()
    gone = RequestLog.objects.get(tenant=caller.tenant, status_code=499)
    assert gone.error_code == "client_closed"
    # The budget and tokens-per-minute reservations were settled, not left at the worst case.
    assert not get_redis().keys(f"*{gone.request_id}*")


def test_errors_the_request_caused_are_not_retried_and_never_cool_a_deployment(
    make_caller, upstream_url, price
):
    from serving.routing.health import DeploymentHealthSync

    caller = make_caller(requests_per_minute=1000)
    deployment_set(name="instant", model=MODEL, base_url=f"{upstream_url}/badreq/v1", weight=1000)
    deployment_set(name="instant-2", model=MODEL, base_url=f"{upstream_url}/v1", weight=1)
    for _ in range(6):
        r = caller.post("/chat/completions", {"model": MODEL, "messages": MSG, "max_tokens": 9})
        assert r.status_code == 400, r.text  # the caller's own error, not retried elsewhere
        assert "deployment=instant;" in r.headers["x-switchyard-route"]
        with httpx.stream(
            "POST",
            f"{caller.base_url}/v1/chat/completions",
            json={"model": MODEL, "messages": MSG, "max_tokens": 9, "stream": True},
            headers={"Authorization": f"Bearer {caller.key}"},
            timeout=30,
        ) as s:
            lines = [line for line in s.iter_lines() if line.startswith("data:")]
        assert "invalid_request_error" in lines[-1] and "data: [DONE]" not in lines
    state = DeploymentHealthSync(get_redis()).snapshot(["instant"])["instant"]
    assert state.fails == 0 and not state.cooling()
