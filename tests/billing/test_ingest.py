"""The usage consumer's COPY path: a batch is stored once however often it is delivered, and a
bad entry (its tenant is gone, a malformed amount) is parked in the dead-letter table without
blocking the rest."""

import datetime as dt

import pytest

from billing.models import UsageRecord
from billing.pricing import Price
from billing.usage import USAGE_STREAM, usage_event, usage_ingestor
from serving.models import DeadLetter
from switchyard.redis_client import get_redis
from switchyard.streams import DEAD_LETTER_COUNTS, stream_add

pytestmark = pytest.mark.django_db(transaction=True)
PRICE = Price("m", 100_000, 400_000, 50_000, None)


def event(rid: str, tenant_id: int, tokens: int = 100) -> dict:
    return usage_event(
        request_id=rid, tenant_id=tenant_id, api_key_id=None, model="m", deployment="d",
        input_tokens=tokens, output_tokens=10, cached_tokens=20,
        cost_micro_usd=PRICE.cost(tokens, 10, 20), created=dt.datetime.now(dt.UTC), price=PRICE,
    )  # fmt: skip


@pytest.fixture
def stream():
    r = get_redis()
    r.delete(USAGE_STREAM, DEAD_LETTER_COUNTS)
    yield r
    r.delete(USAGE_STREAM, DEAD_LETTER_COUNTS)


def test_copy_ingest_is_exact_and_idempotent(tenant_a, stream):
    for i in range(300):
        stream.xadd(USAGE_STREAM, event(f"req_copy_{i}", tenant_a.pk, tokens=100 + i))
    for i in range(50):  # the same requests delivered again
        stream.xadd(USAGE_STREAM, event(f"req_copy_{i}", tenant_a.pk, tokens=100 + i))
    assert usage_ingestor.drain(stream) == 350
    rows = UsageRecord.objects.filter(tenant=tenant_a)
    assert rows.count() == 300
    rec = rows.get(request_id="req_copy_7")
    assert (rec.input_tokens, rec.cached_tokens, rec.input_price, rec.cached_input_price) == (
        107, 20, 100_000, 50_000,
    )  # fmt: skip
    assert rec.cost_micro_usd == PRICE.cost(107, 10, 20)
    assert stream.xlen(USAGE_STREAM) == 0


def test_bad_entries_go_to_the_dead_letter_table_and_the_rest_is_stored(tenant_a, stream):
    stream_add(stream, USAGE_STREAM, event("req_ok_1", tenant_a.pk))
    stream_add(stream, USAGE_STREAM, event("req_orphan", 987_654))
    stream_add(
        stream, USAGE_STREAM, event("req_bad_cost", tenant_a.pk) | {"cost_micro_usd": "1e3x"}
    )
    stream_add(stream, USAGE_STREAM, event("req_ok_2", tenant_a.pk))
    assert usage_ingestor.drain(stream) == 4
    assert set(UsageRecord.objects.values_list("request_id", flat=True)) == {"req_ok_1", "req_ok_2"}
    dead = {d.payload["request_id"]: d for d in DeadLetter.objects.filter(stream=USAGE_STREAM)}
    assert set(dead) == {"req_orphan", "req_bad_cost"}
    assert "IntegrityError" in dead["req_orphan"].error
    assert "ValueError" in dead["req_bad_cost"].error and dead["req_bad_cost"].entry_id
    assert (
        stream.xlen(USAGE_STREAM) == 0
        and not stream.xpending(USAGE_STREAM, "usage-ingest")["pending"]
    )
    assert int(stream.hget(DEAD_LETTER_COUNTS, USAGE_STREAM)) == 2


def test_nul_and_overlong_strings_are_stored_cleaned(tenant_a, stream):
    e = event("req_nul", tenant_a.pk) | {
        "model": "m\x00" + "x" * 300,
        "client_request_id": "c\x00id",
    }
    stream_add(stream, USAGE_STREAM, e)
    usage_ingestor.drain(stream)
    rec = UsageRecord.objects.get(request_id="req_nul")
    assert rec.model == ("m" + "x" * 300)[:128] and rec.client_request_id == "cid"
    assert not DeadLetter.objects.exists()
