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
from tests.serving.gateway.conftest import MODEL, GatewayProcess

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
    from serving.routing.deployments import deployment_set

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
    # An answer cut short ends with the error event: no [DONE], which means "complete".
    assert "data: [DONE]" not in lines
    assert '"error"' in lines[-1] and "upstream_error" in lines[-1]
    assert "failed mid-stream" in lines[-1]  # a broken connection, not a timeout
    drain()
    rec = UsageRecord.objects.get(tenant=caller.tenant)
    # The upstream never sent usage: the three words it streamed are counted by a tokenizer.
    from serving.gateway.tokens import count_text

    assert rec.output_tokens == count_text(["echo: count these"])


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


class UsageConsumer:
    """tests/serving/gateway/usage_consumer.py in its own process (the part Celery runs in production)."""

    def __init__(self) -> None:
        import os
        import subprocess
        import sys

        from tests.serving.gateway.conftest import ROOT, test_database_url

        env = {**os.environ, "DATABASE_URL": test_database_url(), "SWITCHYARD_TESTING": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.serving.gateway.usage_consumer"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert "ready" in self.proc.stdout.readline()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


@pytest.mark.timeout(300)
def test_ten_thousand_requests_metered_exactly_through_kills_and_a_price_change(
    make_caller, price, settings
):
    """10,000 answered requests; the web process and the usage consumer are each SIGKILLed
    mid-run and restarted; the price changes mid-run. Every answered request has exactly one
    record whose cost is its tokens x the price in force when it started; the rollups,
    /v1/usage and the invoice add up to the same micro-dollars; budget alerts fire once each."""
    import datetime as dt
    import time

    from billing import pricing
    from billing.invoices import invoice_for
    from billing.models import ModelPrice
    from billing.rollups import rollup_usage

    target = 10_000
    caller = make_caller(
        requests_per_minute=1_000_000, tokens_per_minute=10**9, tokens_per_day=10**10,
        max_concurrent_requests=512,
    )  # fmt: skip
    answered: dict[str, dict] = {}  # request id -> usage in the response body

    async def send(url: str, n: int, *, kill=None, kill_after: int = 0, concurrency: int = 24):
        """Send ``n`` requests to ``url``; call ``kill`` once ``kill_after`` more are answered."""
        start_count = len(answered)
        queue = iter(range(n))
        async with httpx.AsyncClient(timeout=10) as client:

            async def worker():
                for i in queue:
                    try:
                        r = await client.post(
                            f"{url}/v1/chat/completions",
                            json={"model": MODEL, "messages": MSG, "max_tokens": 1 + i % 7},
                            headers={"Authorization": f"Bearer {caller.key}"},
                        )
                    except httpx.HTTPError:
                        continue
                    if r.status_code == 200:
                        answered[r.headers["x-request-id"]] = r.json()["usage"]
                    if kill and len(answered) - start_count >= kill_after:
                        kill()

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    # A soft monthly budget of 2 cents with alerts at 25, 50 and 100%: the run spends ~3 cents.
    from django.core import mail

    from billing.alerts import check_budgets, deliver_pending
    from billing.models import Alert
    from tenants import services

    settings.SWITCHYARD_ALERT_EMAILS = ["billing-ops@switchyard.test"]
    services.budget_set(
        tenant=caller.tenant, period="monthly", limit_micro_usd=20_000,
        alert_thresholds=[25, 50, 100],
    )  # fmt: skip

    def alerts_run():
        check_budgets()
        deliver_pending()

    consumer = UsageConsumer()
    # Gateways cache prices and deployments for a second here (two seconds by default), so a
    # price change is scheduled two seconds ahead, as an operator would.
    web = GatewayProcess(SWITCHYARD_TABLE_CACHE_SECONDS="1")
    killed = []

    def kill_web():
        if not killed:
            killed.append("web")
            web.proc.send_signal(signal.SIGKILL)

    # 1. The web process dies by SIGKILL with requests in flight.
    asyncio.run(send(web.url, 3_000, kill=kill_web, kill_after=2_000))
    alerts_run()
    web.kill()
    assert 2_000 <= len(answered) < 3_000
    web = GatewayProcess(SWITCHYARD_TABLE_CACHE_SECONDS="1")
    try:
        # 2. The usage consumer dies by SIGKILL mid-run; a new one picks up its entries.
        def kill_consumer():
            if len(killed) == 1:
                killed.append("consumer")
                consumer.kill()

        asyncio.run(send(web.url, 3_000, kill=kill_consumer, kill_after=1_000))
        alerts_run()
        consumer = UsageConsumer()
        # 3. The price changes: requests that start from now on pay the new one.
        pricing.clear_cache()
        change = ModelPrice.objects.create(
            model=MODEL, input_micro_usd_per_mtok=130_000, output_micro_usd_per_mtok=510_000,
            cached_input_micro_usd_per_mtok=65_000,
            effective_from=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2),
        )  # fmt: skip
        while len(answered) < target:
            asyncio.run(send(web.url, target - len(answered)))
            alerts_run()
    finally:
        web.stop()
    assert killed == ["web", "consumer"]
    alerts_run()
    alerts_run()
    # Every threshold fired exactly once, by e-mail too, however often the check ran.
    fired = sorted(
        a.details["threshold_percent"] for a in Alert.objects.filter(tenant=caller.tenant)
    )
    assert fired == [25, 50, 100]
    assert len([m for m in mail.outbox if caller.tenant.slug in m.subject]) == 3

    records: dict = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        records = {r.request_id: r for r in UsageRecord.objects.filter(tenant=caller.tenant)}
        if set(answered) <= set(records):
            break
        time.sleep(0.2)
    consumer.kill()
    drain()  # anything the consumer had left unacknowledged
    records = {r.request_id: r for r in UsageRecord.objects.filter(tenant=caller.tenant)}
    ids = list(
        UsageRecord.objects.filter(tenant=caller.tenant).values_list("request_id", flat=True)
    )
    assert len(ids) == len(set(ids)), "a request was metered twice"
    missing = set(answered) - set(records)
    assert not missing, f"{len(missing)} answered requests have no usage record"

    old = (100_000, 400_000)
    new = (130_000, 510_000)
    seen = {old: 0, new: 0}
    for rid, usage in answered.items():
        rec = records[rid]
        assert (rec.input_tokens, rec.output_tokens) == (
            usage["prompt_tokens"], usage["completion_tokens"],
        )  # fmt: skip
        unit = new if rec.created >= change.effective_from else old
        seen[unit] += 1
        assert (rec.input_price, rec.output_price) == unit, rid
        exact = (rec.input_tokens * unit[0] + rec.output_tokens * unit[1] + 500_000) // 1_000_000
        assert rec.cost_micro_usd == exact, rid
    assert seen[old] >= 6_000 - 1_000 and seen[new] >= 1_000

    total = sum(r.cost_micro_usd for r in records.values())
    rollup_usage()
    today = dt.datetime.now(dt.UTC).date()
    body = httpx.get(
        f"{caller.base_url}/v1/usage", params={"start": str(today), "end": str(today)},
        headers={"Authorization": f"Bearer {caller.key}"}, timeout=30,
    ).json()  # fmt: skip
    assert body["total"]["cost_micro_usd"] == total
    assert body["total"]["requests"] == len(records)
    assert invoice_for(tenant=caller.tenant, month=today.replace(day=1)).total_micro_usd == total
