"""A hostile tenant against the gateway's metering and identity, over real HTTP: a real
gateway process, the instant upstream, Redis and PostgreSQL. Every call that produced tokens
is billed exactly once, at the tenant's terms, whatever the client sends."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from billing.models import TenantPriceOverride, UsageRecord
from billing.usage import usage_ingestor
from serving.gateway.tokens import count_prompt, count_text
from serving.models import RequestLog
from serving.request_log import request_log_ingestor
from serving.routing.deployments import deployment_set
from switchyard.redis_client import get_redis
from tests.gateway_fixtures import MODEL

MSG = [{"role": "user", "content": "count these words please"}]


def drain() -> None:
    usage_ingestor.drain(get_redis())
    request_log_ingestor.drain(get_redis())


async def _burst(url: str, key: str, n: int, body: dict, headers: dict) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30) as client:
        return await asyncio.gather(
            *(
                client.post(
                    f"{url}/v1/chat/completions",
                    json=body,
                    headers={"Authorization": f"Bearer {key}", **headers},
                )
                for _ in range(n)
            )
        )


def test_a_repeated_client_request_id_leaves_no_call_unmetered(make_caller, price):
    caller = make_caller(max_concurrent_requests=100, requests_per_minute=1000)
    body = {"model": MODEL, "messages": MSG, "max_tokens": 8}
    responses = asyncio.run(
        _burst(caller.base_url, caller.key, 30, body, {"X-Request-Id": "same-id-every-time"})
    )
    assert [r.status_code for r in responses] == [200] * 30
    ids = {r.headers["x-request-id"] for r in responses}
    assert len(ids) == 30, "the server mints its own id for every call"
    assert all(r.headers["x-client-request-id"] == "same-id-every-time" for r in responses)
    drain()
    usage = UsageRecord.objects.filter(tenant=caller.tenant)
    assert usage.count() == 30
    assert set(usage.values_list("request_id", flat=True)) == ids
    assert set(usage.values_list("client_request_id", flat=True)) == {"same-id-every-time"}
    logs = RequestLog.objects.filter(tenant=caller.tenant)
    assert logs.count() == 30
    assert logs.filter(client_request_id="same-id-every-time").count() == 30


def test_a_repeated_client_request_id_does_not_share_a_concurrency_slot(make_caller, upstream_url):
    caller = make_caller(max_concurrent_requests=1, requests_per_minute=1000)
    deployment_set(name="instant", model=MODEL, base_url=f"{upstream_url}/delay/1500/v1")
    body = {"model": MODEL, "messages": MSG, "max_tokens": 4}
    responses = asyncio.run(_burst(caller.base_url, caller.key, 4, body, {"X-Request-Id": "x"}))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 429, 429, 429]


def test_hostile_client_ids_are_labels_cleaned_and_bounded(make_caller, price):
    caller = make_caller()
    r = caller.post(
        "/chat/completions",
        {"model": MODEL, "messages": MSG, "max_tokens": 4},
        headers={"X-Request-Id": "a\tb" + "z" * 500},
    )
    assert r.status_code == 200
    assert r.headers["x-request-id"].startswith("req_")
    assert r.headers["x-client-request-id"] == "ab" + "z" * 126
    drain()
    assert RequestLog.objects.get(tenant=caller.tenant).client_request_id == "ab" + "z" * 126


def test_null_max_tokens_is_absent_and_nothing_is_injected(make_caller, upstream_url):
    caller = make_caller(max_output_tokens=512)
    deployment_set(name="instant", model=MODEL, base_url=f"{upstream_url}/echo/v1")
    for extra in ({"max_tokens": None}, {}, {"max_completion_tokens": None}):
        r = caller.post("/chat/completions", {"model": MODEL, "messages": MSG, **extra})
        assert r.status_code == 200, r.text
        received = r.json()["x_received"]
        assert "max_tokens" not in received and "max_completion_tokens" not in received
    # The reservation uses the tier's cap: a tier whose tokens per minute can't hold it
    # says so, and names the way out.
    small = make_caller(max_output_tokens=4096, tokens_per_minute=1000)
    r = small.post("/chat/completions", {"model": MODEL, "messages": MSG})
    assert r.status_code == 429 and "max_tokens" in r.json()["error"]["message"]
    r = small.post("/chat/completions", {"model": MODEL, "messages": MSG, "max_tokens": 16})
    assert r.status_code == 200


def test_a_failed_over_request_is_priced_at_the_tenants_terms(make_caller, price, upstream_url):
    caller = make_caller()
    TenantPriceOverride.objects.create(tenant=caller.tenant, discount_bp=5000)
    deployment_set(name="instant", model=MODEL, base_url=f"{upstream_url}/fail/v1", weight=1000)
    deployment_set(name="instant-2", model=MODEL, base_url=f"{upstream_url}/v1", weight=1)
    r = caller.post("/chat/completions", {"model": MODEL, "messages": MSG, "max_tokens": 50})
    assert r.status_code == 200
    assert "deployment=instant-2" in r.headers["x-switchyard-route"]
    drain()
    rec = UsageRecord.objects.get(tenant=caller.tenant)
    usage = r.json()["usage"]
    list_cost = (usage["prompt_tokens"] * 100_000 + usage["completion_tokens"] * 400_000) / 1e6
    assert rec.deployment == "instant-2"
    assert rec.cost_micro_usd == pytest.approx(list_cost / 2, abs=1)


@pytest.mark.parametrize("stream", [True, False])
def test_an_upstream_that_reports_no_usage_is_metered_by_the_tokenizer(
    make_caller, price, upstream_url, stream
):
    caller = make_caller()
    deployment_set(name="instant", model=MODEL, base_url=f"{upstream_url}/nousage/v1")
    text = "the quick brown fox jumps over the lazy dog"
    messages = [{"role": "user", "content": text}]
    if stream:
        with httpx.stream(
            "POST",
            f"{caller.base_url}/v1/chat/completions",
            json={"model": MODEL, "messages": messages, "stream": True, "max_tokens": 50},
            headers={"Authorization": f"Bearer {caller.key}"},
            timeout=30,
        ) as r:
            lines = [line for line in r.iter_lines() if line.startswith("data:")]
        assert lines[-1] == "data: [DONE]"
    else:
        r = caller.post("/chat/completions", {"model": MODEL, "messages": messages})
        assert r.status_code == 200
    drain()
    rec = UsageRecord.objects.get(tenant=caller.tenant)
    assert rec.input_tokens == count_prompt("chat.completions", [text])
    assert rec.output_tokens == count_text(["echo: " + text])
    assert rec.cost_micro_usd > 0


def test_a_stream_the_upstream_cuts_short_ends_with_an_error_event(
    make_caller, price, upstream_url
):
    caller = make_caller()
    deployment_set(name="instant", model=MODEL, base_url=f"{upstream_url}/drop/v1")
    with httpx.stream(
        "POST",
        f"{caller.base_url}/v1/completions",
        json={"model": MODEL, "prompt": "one two three four five six", "stream": True},
        headers={"Authorization": f"Bearer {caller.key}"},
        timeout=30,
    ) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data:")]
    assert "data: [DONE]" not in lines
    assert '"error"' in lines[-1]
    drain()
    rec = UsageRecord.objects.get(tenant=caller.tenant)
    # The upstream's usage never came: what was streamed is counted by the tokenizer.
    assert rec.output_tokens == count_text(["echo: one two"])
    assert rec.input_tokens == count_prompt("completions", ["one two three four five six"])
