"""Attack: data PostgreSQL cannot store (a NUL character, over-long strings, malformed numbers)
in a logged field. Before, one such entry failed its whole ingest batch, the batch was retried
forever, no tenant's request log landed again and the Redis stream grew without bound.

Defence: ingestion (switchyard.streams) stores what it sanitises, parks what it still cannot
store in the dead-letter table and always empties the stream; producers cap stream length."""

from __future__ import annotations

import datetime as dt
import logging

import httpx
import pytest

from billing.models import UsageRecord
from billing.usage import USAGE_STREAM, usage_ingestor
from serving.models import DeadLetter, RequestLog
from serving.request_log import REQUEST_LOG_STREAM, request_log_ingestor
from switchyard.streams import DEAD_LETTER_COUNTS, stream_add
from tests.gateway_fixtures import MODEL, GatewayProcess

NUL = "\x00"


def drain(r) -> None:
    """What the Celery beat tasks do every two seconds."""
    request_log_ingestor.drain(r)
    usage_ingestor.drain(r)


def pending(r, stream: str, group: str) -> int:
    return r.xpending(stream, group)["pending"]


def chat(caller, content: str, **extra) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 8}
    return caller.post("/chat/completions", json=body | extra)


def test_nul_in_tenant_fields_neither_blocks_ingestion_nor_loses_honest_rows(
    make_caller, clean_redis, price
):
    hostile = make_caller(slug="hostile", log_bodies=True)
    honest = make_caller(slug="honest")
    r = clean_redis

    # The hostile tenant's requests: NUL in the model name (refused, still logged), in the
    # prompt and the user field (logged bodies), in JSON escapes, at every depth.
    refused = chat(hostile, "hi", model=f"smoll{NUL}m2")
    assert refused.status_code in (400, 404) and "error" in refused.json()
    served = chat(hostile, f"a{NUL}b", user=f"u{NUL}")
    assert served.status_code == 200
    raw = httpx.post(
        f"{hostile.base_url}/v1/chat/completions",
        content=b'{"model": "' + MODEL.encode() + b'", "max_tokens": 4, "messages": '
        b'[{"role": "user", "content": "x\\u0000y"}], "user": "\\u0000"}',
        headers={"Authorization": f"Bearer {hostile.key}", "Content-Type": "application/json"},
    )
    assert raw.status_code == 200
    # Entries no gateway should produce but a stream may hold (an older gateway, a bug): a
    # tenant that does not exist, a malformed status, a body that is not JSON.
    now = dt.datetime.now(dt.UTC).isoformat()
    stream_add(r, REQUEST_LOG_STREAM, {
        "request_id": "req_poison_orphan", "tenant_id": "987654", "endpoint": "chat.completions",
        "status_code": "200", "created": now,
    })  # fmt: skip
    stream_add(r, REQUEST_LOG_STREAM, {
        "request_id": "req_poison_fields", "tenant_id": str(hostile.tenant.pk),
        "endpoint": f"chat{NUL}" * 40, "model": NUL * 500, "status_code": "2x0",
        "latency_ms": "nan", "input_tokens": "9" * 40, "request_body": '{"a": [[[[',
        "created": "yesterday", "route": "r" * 1000,
    })  # fmt: skip

    honest_ids = []
    for i in range(3):
        resp = chat(honest, f"honest question {i}")
        assert resp.status_code == 200
        honest_ids.append(resp.headers["x-request-id"])

    drain(r)

    # Honest rows landed: request log and usage.
    assert RequestLog.objects.filter(request_id__in=honest_ids).count() == 3
    assert UsageRecord.objects.filter(request_id__in=honest_ids).count() == 3
    # The hostile tenant's rows landed too, cleaned (logs and usage are never lost to NUL).
    logged = RequestLog.objects.filter(tenant=hostile.tenant)
    assert logged.filter(status_code=refused.status_code).exists()
    assert logged.filter(request_id=served.headers["x-request-id"]).exists()
    assert logged.filter(request_id=raw.headers["x-request-id"]).exists()
    assert UsageRecord.objects.filter(tenant=hostile.tenant).count() == 2
    for row in logged:
        assert NUL not in row.model and NUL not in row.endpoint and NUL not in row.route
        assert NUL not in repr(row.request_body)
    fields = RequestLog.objects.get(request_id="req_poison_fields")
    assert (fields.status_code, fields.latency_ms, fields.input_tokens) == (0, 0.0, 2**31 - 1)
    assert fields.endpoint == "chat" * 8 and fields.model == "" and len(fields.route) == 255
    assert fields.request_body == {"unparsed": '{"a": [[[['}
    # What could not be stored is in the dead-letter table, with the reason.
    (dead,) = DeadLetter.objects.filter(stream=REQUEST_LOG_STREAM)
    assert dead.payload["request_id"] == "req_poison_orphan" and "IntegrityError" in dead.error
    assert int(r.hget(DEAD_LETTER_COUNTS, REQUEST_LOG_STREAM)) == 1
    # Nothing is left pending or queued: the next drain has nothing to retry.
    for stream, group in (
        (REQUEST_LOG_STREAM, "requestlog-ingest"),
        (USAGE_STREAM, "usage-ingest"),
    ):
        assert r.xlen(stream) == 0 and pending(r, stream, group) == 0
    assert request_log_ingestor.drain(r) == 0 and usage_ingestor.drain(r) == 0

    # Operators see it in Prometheus (the gateway's /metrics, read from Redis at scrape time).
    text = httpx.get(f"{honest.base_url}/metrics").text
    assert 'switchyard_ingest_dead_letters_total{stream="sy:requestlog"} 1.0' in text
    assert 'switchyard_stream_length{stream="sy:usage"} 0.0' in text

    # Ingestion keeps going for everyone afterwards.
    later = chat(honest, "still there?")
    drain(r)
    assert RequestLog.objects.filter(request_id=later.headers["x-request-id"]).exists()


def test_unstorable_usage_is_dead_lettered_not_billed_on_a_guess(make_caller, clean_redis, price):
    caller = make_caller(slug="payer")
    r = clean_redis
    ok = chat(caller, "hello")
    now = dt.datetime.now(dt.UTC).isoformat()
    base = {"tenant_id": str(caller.tenant.pk), "model": MODEL, "input_tokens": "1",
            "output_tokens": "1", "created": now}  # fmt: skip
    stream_add(r, USAGE_STREAM, base | {"request_id": "req_u_money", "cost_micro_usd": "12abc"})
    stream_add(r, USAGE_STREAM, base | {"request_id": "req_u_huge", "cost_micro_usd": "9" * 30})
    stream_add(r, USAGE_STREAM, base | {"request_id": f"req_u_nul{NUL}", "cost_micro_usd": "5",
                                        "model": f"m{NUL}"})  # fmt: skip
    drain(r)
    assert UsageRecord.objects.filter(request_id=ok.headers["x-request-id"]).exists()
    assert UsageRecord.objects.get(request_id="req_u_nul").model == "m"
    dead = {
        d.payload["request_id"]: d.error for d in DeadLetter.objects.filter(stream=USAGE_STREAM)
    }
    assert set(dead) == {"req_u_money", "req_u_huge"}
    assert r.xlen(USAGE_STREAM) == 0 and pending(r, USAGE_STREAM, "usage-ingest") == 0


@pytest.fixture(scope="module")
def capped_gateway(django_db_setup, django_db_blocker):
    """A second gateway process whose streams are capped at 100 entries."""
    gw = GatewayProcess(SWITCHYARD_STREAM_MAXLEN="100")
    yield gw
    gw.stop()


def test_streams_are_capped_when_ingestion_is_down(make_caller, capped_gateway, clean_redis):
    caller = make_caller(slug="flooder", requests_per_minute=100_000)
    with httpx.Client(base_url=f"{capped_gateway.url}/v1", timeout=30) as client:
        for i in range(320):  # refused requests: cheap, and each one is logged
            resp = client.post(
                "/chat/completions",
                json={
                    "model": f"no-such-model-{i}",
                    "messages": [{"role": "user", "content": "x"}],
                },
                headers={"Authorization": f"Bearer {caller.key}"},
            )
            assert resp.status_code in (400, 404)
    # Approximate trimming cuts whole stream nodes (100 entries by default).
    assert 100 <= clean_redis.xlen(REQUEST_LOG_STREAM) < 200


def test_drain_logs_an_error_near_the_cap(clean_redis, settings, caplog, transactional_db):
    settings.SWITCHYARD_STREAM_MAXLEN = 10
    for i in range(9):
        stream_add(clean_redis, REQUEST_LOG_STREAM, {"request_id": f"req_{i}", "status_code": "1"})
    with caplog.at_level(logging.ERROR, logger="switchyard.streams"):
        request_log_ingestor.drain(clean_redis)
    assert any("90% of SWITCHYARD_STREAM_MAXLEN=10" in m for m in caplog.messages)
    assert clean_redis.xlen(REQUEST_LOG_STREAM) == 0
