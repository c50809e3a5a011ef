"""The durable usage path: one record per request that produced tokens, keyed by request id.

The gateway calls :func:`usage_event` + :func:`switchyard.streams.stream_add` before it finishes
the response; Celery drains the stream into ``UsageRecord`` (see switchyard.streams). Fields are
read leniently (NUL stripped, strings cut to their columns); an entry that still cannot be stored
goes to the dead-letter table instead of blocking the stream.

The stream is capped like every other (``SWITCHYARD_STREAM_MAXLEN``): a trade-off, since past the
cap Redis drops the oldest entries, which here are unbilled usage. The cap only bites after
ingestion has been down for that many requests; ingestion logs an error from 80% of it and
``switchyard_stream_length`` shows it, so alert on that well before.
"""

from __future__ import annotations

import datetime as dt

from billing.models import UsageRecord
from billing.pricing import Price
from switchyard.streams import StreamIngestor, to_optional_int

USAGE_STREAM = "sy:usage"
# PostgreSQL advisory lock key (shared by ingestion, exclusive for budget reconciliation).
USAGE_INGEST_LOCK = 0x5359_5553  # "SYUS"


def usage_event(
    *,
    request_id: str,
    tenant_id: int,
    api_key_id: int | None,
    model: str,
    deployment: str,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int,
    cost_micro_usd: int,
    created: dt.datetime,
    price: Price | None = None,
    cache: str = "miss",
    saved_micro_usd: int = 0,
    client_request_id: str = "",
) -> dict[str, str]:
    """One stream entry; ``price`` (the unit prices charged) travels with it to the record."""
    prices = {}
    if price is not None:
        prices = {
            "input_price": str(price.input_per_mtok),
            "output_price": str(price.output_per_mtok),
            "cached_input_price": str(price.cached_input_per_mtok),
        }
    return {
        **prices,
        "request_id": request_id,
        "tenant_id": str(tenant_id),
        "api_key_id": "" if api_key_id is None else str(api_key_id),
        "model": model,
        "deployment": deployment,
        "input_tokens": str(input_tokens),
        "output_tokens": str(output_tokens),
        "cached_tokens": str(cached_tokens),
        "cost_micro_usd": str(cost_micro_usd),
        "created": created.isoformat(),
        "cache": cache,
        "saved_micro_usd": str(saved_micro_usd),
        "client_request_id": client_request_id,
    }


def _number(value: str | None) -> int:
    """A count or an amount: absent is 0, malformed raises (the entry is dead-lettered, to be
    seen and retried, rather than billed on a guess)."""
    return int(value) if value else 0


def _row(e: dict[str, str]) -> UsageRecord:
    return UsageRecord(
        request_id=e["request_id"],  # the key: an entry without one cannot be stored
        client_request_id=e.get("client_request_id", ""),
        tenant_id=int(e["tenant_id"]),  # a record without its tenant is dead-lettered
        api_key_id=to_optional_int(e.get("api_key_id")),
        model=e.get("model", ""),
        deployment=e.get("deployment", ""),
        input_tokens=_number(e.get("input_tokens")),
        output_tokens=_number(e.get("output_tokens")),
        cached_tokens=_number(e.get("cached_tokens")),
        cost_micro_usd=int(e["cost_micro_usd"]),
        input_price=_number(e.get("input_price")),
        output_price=_number(e.get("output_price")),
        cached_input_price=_number(e.get("cached_input_price")),
        cache=e.get("cache") or "miss",
        saved_micro_usd=_number(e.get("saved_micro_usd")),
        created=dt.datetime.fromisoformat(e["created"]),
    )


def _rows(events: list[dict[str, str]]) -> list[UsageRecord]:
    # Strings are cut to their columns and cleaned by the ingestor (streams.fit_row).
    return [_row(e) for e in events]


# Registered in BillingConfig.ready().
usage_ingestor = StreamIngestor(
    stream=USAGE_STREAM,
    group="usage-ingest",
    model=UsageRecord,
    build=_rows,
    copy=True,
    lenient_numbers=False,
    advisory_lock=USAGE_INGEST_LOCK,
)
