"""The apps plug into the layers below them at start (AppConfig.ready()), since those never
import them: every stream's ingestor, the dead-letter table, the readiness check and the model
names a tier may allow are registered once Django is set up."""

from __future__ import annotations

from billing.usage import USAGE_STREAM, usage_ingestor
from serving.cache.writeback import CACHE_STREAM, semantic_write_ingestor
from serving.models import DeadLetter
from serving.readiness import model_workers_readiness
from serving.request_log import REQUEST_LOG_STREAM, request_log_ingestor
from serving.routing.catalog import model_names
from switchyard import health, streams
from tenants import services


def test_every_stream_has_its_ingestor_and_dead_letters_their_table():
    registered = dict(streams.INGESTORS)
    assert registered == {
        USAGE_STREAM: usage_ingestor,
        REQUEST_LOG_STREAM: request_log_ingestor,
        CACHE_STREAM: semantic_write_ingestor,
    }
    assert streams._dead_letter_model is DeadLetter


def test_readyz_asks_serving_about_its_model_workers():
    assert health.READINESS_CHECKS["model_workers"] is model_workers_readiness


def test_a_tier_may_allow_the_models_serving_knows(db):
    assert services.known_models() == model_names()
    assert "auto" in services.known_models()
