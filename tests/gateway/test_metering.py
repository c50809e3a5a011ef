"""Usage records: exactly one per request with tokens, exact in micro-dollars, durable."""

import asyncio
import signal

import httpx
import pytest

from billing.models import UsageRecord
from billing.usage import usage_ingestor
from serving.models import RequestLog
from serving.request_log import request_log_ingestor
from switchyard.redis_client import get_redis
from tests.gateway.conftest import MODEL, GatewayProcess

MSG = [{"role": "user", "content": "count these words please"}]


def drain() -> None:
    usage_ingestor.drain(get_redis())
    request_log_ingestor.drain(get_redis())


def expected_cost(usage: dict) -> int:
    return (usage["prompt_tokens"] * 100_000 + usage["completion_tokens"] * 400_000 + 500_000) // (
        1_000_000
    )


def test_each_request_yields_one_exact_usage_record(make_caller, price):
    caller = make_caller(requests_per_minute=1000)
    client = caller.client()
    ids = {}
    for i in range(20):
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=MSG, max_tokens=2 + i % 4
        )
        ids[raw.headers["x-request-id"]] = raw.parse().usage.model_dump()
    drain()
    drain()  # idempotent
    records = {r.request_id: r for r in UsageRecord.objects.filter(tenant=caller.tenant)}
    assert set(records) == set(ids)
    for rid, usage in ids.items():
        rec = records[rid]
        assert (rec.input_tokens, rec.output_tokens) == (
            usage["prompt_tokens"],
            usage["completion_tokens"],
        )
        assert rec.cost_micro_usd == expected_cost(usage)
        assert rec.model == MODEL and rec.deployment == "instant"


def test_streamed_request_is_metered_once(make_caller, price):
    caller = make_caller()
    chunks = list(
        caller.client().chat.completions.create(
            model=MODEL, messages=MSG, stream=True, stream_options={"include_usage": True}
        )
    )
    drain()
    rec = UsageRecord.objects.get(tenant=caller.tenant)
    assert rec.output_tokens == chunks[-1].usage.completion_tokens == 5
    log = RequestLog.objects.get(request_id=rec.request_id)
    assert log.stream and log.status_code == 200 and log.ttft_ms is not None


def test_refusals_are_logged_but_not_metered(make_caller, price):
    caller = make_caller()
    caller.post("/chat/completions", json={"model": MODEL, "messages": MSG, "n": 0})
    drain()
    assert not UsageRecord.objects.filter(tenant=caller.tenant).exists()
    log = RequestLog.objects.get(tenant=caller.tenant)
    assert log.status_code == 400 and log.error_code


def test_stream_broken_after_tokens_ends_with_error_event_and_is_metered(
    make_caller, price, upstream_url
):
    from serving.deployments import deployment_set

    caller = make_caller()
    deployment_set(name="instant", model=MODEL, base_url=f"{upstream_url}/drop/v1")
    with httpx.stream(
        "POST",
        f"{caller.base_url}/v1/chat/completions",
        json={"model": MODEL, "messages": MSG, "stream": True},
        headers={"Authorization": f"Bearer {caller.key}"},
        timeout=30,
    ) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data:")]
    assert lines[-1] == "data: [DONE]"
    assert '"error"' in lines[-2] and "upstream_error" in lines[-2]
    assert "failed mid-stream" in lines[-2]  # a broken connection, not a timeout
    drain()
    rec = UsageRecord.objects.get(tenant=caller.tenant)
    assert rec.output_tokens == 3


def test_client_disconnect_mid_stream_is_metered(make_caller, price, upstream_url):
    caller = make_caller()
    with httpx.stream(
        "POST",
        f"{caller.base_url}/v1/chat/completions",
        json={
            "model": MODEL,
            "messages": [{"role": "user", "content": "a " * 200}],
            "stream": True,
            "max_tokens": 150,
        },  # fmt: skip
        headers={"Authorization": f"Bearer {caller.key}"},
        timeout=30,
    ) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i > 2:
                break
    import time

    for _ in range(50):
        drain()
        if UsageRecord.objects.filter(tenant=caller.tenant).exists():
            break
        time.sleep(0.1)
    assert UsageRecord.objects.filter(tenant=caller.tenant).count() == 1


@pytest.mark.timeout(120)
def test_sigkill_of_the_web_process_loses_no_record_and_counts_none_twice(make_caller, price):
    caller = make_caller(requests_per_minute=10_000, max_concurrent_requests=64)
    victim = GatewayProcess()
    ok_ids: list[str] = []

    async def hammer():
        async with httpx.AsyncClient(timeout=10) as client:

            async def one(i):
                try:
                    r = await client.post(
                        f"{victim.url}/v1/chat/completions",
                        json={"model": MODEL, "messages": MSG, "max_tokens": 3},
                        headers={"Authorization": f"Bearer {caller.key}"},
                    )
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    ok_ids.append(r.headers["x-request-id"])

            async def killer():
                while len(ok_ids) < 40:
                    await asyncio.sleep(0.01)
                victim.proc.send_signal(signal.SIGKILL)

            await asyncio.gather(killer(), *(one(i) for i in range(400)))

    try:
        asyncio.run(hammer())
    finally:
        victim.kill()
    assert 40 <= len(ok_ids) < 400
    drain()
    drain()
    ids = list(
        UsageRecord.objects.filter(tenant=caller.tenant).values_list("request_id", flat=True)
    )
    assert len(ids) == len(set(ids))
    assert set(ok_ids) <= set(ids), "a request answered 200 has no usage record"
