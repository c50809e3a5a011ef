"""Helpers for billing tests: usage records written straight to the table (the gateway path
has its own tests in tests/serving/gateway)."""

from __future__ import annotations

import datetime as dt
import itertools
import random

import pytest

from billing import pricing
from billing.models import UsageRecord

_ids = itertools.count()


def make_records(
    tenant,
    *,
    n: int,
    start: dt.datetime,
    span: dt.timedelta,
    seed: int = 0,
    models=("smollm2-135m-instruct", "other-model"),
    deployments=("dep-a", "dep-b"),
    keys=(None,),
) -> list[UsageRecord]:
    """``n`` records spread over ``[start, start + span)`` with varied tokens and prices."""
    rnd = random.Random(seed)
    rows = []
    for _ in range(n):
        inp, out = rnd.randint(1, 3000), rnd.randint(0, 800)
        cached = rnd.randint(0, inp // 2)
        price = pricing.Price("m", rnd.choice([100_000, 150_000]), 400_000, 50_000, None)
        rows.append(
            UsageRecord(
                request_id=f"req_t{next(_ids)}_{rnd.getrandbits(40):x}",
                tenant=tenant,
                api_key_id=rnd.choice(keys),
                model=rnd.choice(models),
                deployment=rnd.choice(deployments),
                input_tokens=inp,
                output_tokens=out,
                cached_tokens=cached,
                cost_micro_usd=price.cost(inp, out, cached),
                input_price=price.input_per_mtok,
                output_price=price.output_per_mtok,
                cached_input_price=price.cached_input_per_mtok,
                created=start + span * rnd.random(),
            )
        )
    UsageRecord.objects.bulk_create(rows)
    return rows


@pytest.fixture(autouse=True)
def _fresh_price_cache():
    pricing.clear_cache()
    yield
    pricing.clear_cache()


class WebhookReceiver:
    """A real HTTP server on loopback that records what is POSTed to it and answers with
    ``status`` (changeable mid-test)."""

    def __init__(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        receiver = self
        self.bodies: list[dict] = []
        self.status = 200

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def no_budget_counters():
    """No gateway budget counters in Redis: the spend figure starts from the records."""
    from switchyard.redis_client import get_redis

    r = get_redis()

    def wipe():
        keys = list(r.scan_iter("sy:budget:*"))
        if keys:
            r.delete(*keys)

    wipe()
    yield r
    wipe()
