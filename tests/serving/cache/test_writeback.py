"""The semantic cache's write-behind: entries queued on a Redis stream by gateways are stored
in batches by the ingestor (real Redis, real PostgreSQL, the real MiniLM)."""

import datetime as dt

import pytest

from serving.cache.models import SemanticCacheEntry
from serving.cache.writeback import CACHE_STREAM, semantic_write, semantic_write_ingestor
from switchyard.redis_client import get_redis
from switchyard.streams import stream_add
from tests.console.cache_data import unit_vector


def _queue(tenant, prompt: str, answer: str, embedding=None) -> None:
    stream_add(
        get_redis(),
        CACHE_STREAM,
        semantic_write(
            tenant_id=tenant.pk, scope=f"t:{tenant.pk}", model="m", context_hash="0" * 64,
            prompt=prompt, response={"choices": [{"message": {"content": answer}}]},
            input_tokens=5, output_tokens=7, ttl_seconds=60, embedding=embedding,
            created=dt.datetime.now(dt.UTC),
        ),
    )  # fmt: skip


@pytest.fixture
def redis_clean():
    r = get_redis()
    r.delete(CACHE_STREAM)
    yield r
    r.delete(CACHE_STREAM)


@pytest.mark.slow  # the ingestor embeds with MiniLM
def test_queued_entries_are_stored_embedded_and_the_newest_answer_wins(tenant_a, redis_clean):
    given = unit_vector(3)
    _queue(tenant_a, "with a vector", "one", embedding=given)
    _queue(tenant_a, "embedded by the ingestor", "two")
    _queue(tenant_a, "embedded by the ingestor", "three")  # same prompt, newer answer
    assert semantic_write_ingestor.drain(redis_clean) == 3
    rows = {e.prompt: e for e in SemanticCacheEntry.objects.filter(tenant=tenant_a)}
    assert set(rows) == {"with a vector", "embedded by the ingestor"}
    assert list(rows["with a vector"].embedding) == pytest.approx(given, abs=1e-6)
    vec = list(rows["embedded by the ingestor"].embedding)
    assert sum(v * v for v in vec) == pytest.approx(1.0, abs=1e-3)  # MiniLM, normalised
    assert rows["embedded by the ingestor"].response["choices"][0]["message"]["content"] == (
        "three"
    )
    assert rows["with a vector"].expires > rows["with a vector"].created
    # A later answer for the same prompt replaces the stored one.
    _queue(tenant_a, "with a vector", "four", embedding=given)
    semantic_write_ingestor.drain(redis_clean)
    assert SemanticCacheEntry.objects.filter(tenant=tenant_a, prompt="with a vector").count() == 1
    assert redis_clean.xlen(CACHE_STREAM) == 0
