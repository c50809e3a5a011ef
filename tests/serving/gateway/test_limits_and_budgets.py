"""Rate limits and budgets, exact under concurrent load across TWO gateway processes."""

import asyncio
import time

import httpx
import openai
import pytest

from tenants import services
from tests.serving.gateway.conftest import MODEL, GatewayProcess

MSG = [{"role": "user", "content": "hi"}]


async def _burst(urls: list[str], key: str, n: int, body: dict) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30) as client:

        async def one(i: int) -> httpx.Response:
            return await client.post(
                f"{urls[i % len(urls)]}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {key}"},
            )

        return await asyncio.gather(*(one(i) for i in range(n)))


def within_one_minute_window(needed: float = 15.0) -> None:
    """Wait for the next minute if fewer than ``needed`` seconds are left in this one: the
    per-minute limits are fixed windows (by the gateways' clock, this machine's), and a test
    that counts exactly must not straddle two of them."""
    left = 60.0 - time.time() % 60.0
    if left < needed:
        time.sleep(left + 0.05)


@pytest.fixture(scope="module")
def second_gateway(gateway):
    gw = GatewayProcess()
    yield gw
    gw.stop()


def test_requests_per_minute_exact_across_two_processes(make_caller, gateway, second_gateway):
    caller = make_caller(requests_per_minute=17, max_concurrent_requests=100)
    within_one_minute_window()
    responses = asyncio.run(
        _burst([gateway.url, second_gateway.url], caller.key, 40, {"model": MODEL, "messages": MSG})
    )
    codes = [r.status_code for r in responses]
    assert codes.count(200) == 17 and codes.count(429) == 23
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-limit-requests"] == "17"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"


def test_tokens_per_minute_reserved_then_settled(make_caller):
    # Each request reserves its prompt estimate + max_tokens, then settles to the real count.
    caller = make_caller(tokens_per_minute=400)
    client = caller.client()
    within_one_minute_window()
    for _ in range(5):
        client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=50)
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=1000)
    assert "tokens per minute" in err.value.message


def test_tokens_per_day(make_caller):
    caller = make_caller(tokens_per_day=100)
    with pytest.raises(openai.RateLimitError) as err:
        caller.client().chat.completions.create(model=MODEL, messages=MSG, max_tokens=200)
    assert "tokens per day" in err.value.message


def test_concurrency_limit_exact_across_two_processes(
    make_caller, upstream_url, gateway, second_gateway
):
    from serving.routing.deployments import deployment_set

    caller = make_caller(max_concurrent_requests=3, requests_per_minute=1000)
    # A slow upstream holds every admitted request in flight.
    deployment_set(name="instant", model=MODEL, base_url=f"{upstream_url}/slow/v1",
                   timeout_seconds=1.0)  # fmt: skip
    responses = asyncio.run(
        _burst([gateway.url, second_gateway.url], caller.key, 12, {"model": MODEL, "messages": MSG})
    )
    codes = sorted(r.status_code for r in responses)
    assert codes.count(504) == 3, codes  # admitted, then timed out upstream
    assert codes.count(429) == 9
    # The slots were given back.
    deployment_set(name="instant", model=MODEL, base_url=f"{upstream_url}/v1", timeout_seconds=30)
    ok = caller.client().chat.completions.create(model=MODEL, messages=MSG)
    assert ok.choices[0].message.content == "echo: hi"


def test_hard_budget_never_overshoots_across_two_processes(
    make_caller, price, gateway, second_gateway
):
    # The instant upstream echoes the 60 words back (60 output tokens): each request really
    # costs ~31 µ$ (64 prompt tokens at 0.1 $/M, 60 output at 0.4 $/M) and reserves ~35 µ$,
    # so a 400 µ$ hard budget runs out within the 30 requests however they overlap.
    caller = make_caller(requests_per_minute=1000, max_concurrent_requests=100)
    services.budget_set(tenant=caller.tenant, period="daily", limit_micro_usd=400, hard=True)
    words = [{"role": "user", "content": " ".join(["word"] * 60)}]
    body = {"model": MODEL, "messages": words, "max_tokens": 60}
    responses = asyncio.run(_burst([gateway.url, second_gateway.url], caller.key, 30, body))
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert ok and refused and len(ok) + len(refused) == 30
    assert all(r.json()["error"]["code"] == "insufficient_quota" for r in refused)
    from switchyard.redis_client import get_redis

    spent = sum(
        int(get_redis().get(k)) for k in get_redis().keys(f"sy:budget:{caller.tenant.pk}:daily:*")
    )
    real = sum(
        (r.json()["usage"]["prompt_tokens"] * 100_000 + r.json()["usage"]["completion_tokens"]
         * 400_000 + 500_000) // 1_000_000
        for r in ok
    )  # fmt: skip
    assert spent == real <= 400


def test_soft_budget_does_not_refuse(make_caller, price):
    caller = make_caller()
    services.budget_set(tenant=caller.tenant, period="monthly", limit_micro_usd=0, hard=False)
    caller.client().chat.completions.create(model=MODEL, messages=MSG)


def test_exhausted_hard_budget_is_insufficient_quota(make_caller, price):
    caller = make_caller()
    services.budget_set(tenant=caller.tenant, period="monthly", limit_micro_usd=0, hard=True)
    with pytest.raises(openai.RateLimitError) as err:
        caller.client().chat.completions.create(model=MODEL, messages=MSG)
    assert err.value.code == "insufficient_quota"


def test_more_concurrent_requests_than_redis_connections_all_succeed(make_caller):
    # Each request makes several Redis calls; with two connections in the pool, 40 requests
    # at once must queue for them, never fail with "Too many connections".
    gw = GatewayProcess(SWITCHYARD_REDIS_MAX_CONNECTIONS="2")
    try:
        # Without max_tokens each request reserves the tier's output cap against its tokens
        # per minute: a small cap keeps 40 at once within the limit.
        caller = make_caller(
            requests_per_minute=1000, max_concurrent_requests=100, max_output_tokens=64
        )
        body = {"model": MODEL, "messages": MSG}
        responses = asyncio.run(_burst([gw.url], caller.key, 40, body))
        assert [r.status_code for r in responses] == [200] * 40, responses[0].text
    finally:
        gw.stop()
