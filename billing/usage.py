"""The durable usage path: one record per request that produced tokens, keyed by request id.

The gateway calls :func:`usage_event` + XADD before it finishes the response; Celery drains the
stream into ``UsageRecord`` (see switchyard.streams).
"""

from __future__ import annotations

import datetime as dt

from billing.models import UsageRecord
from billing.pricing import Price
from switchyard.streams import StreamIngestor

USAGE_STREAM = "sy:usage"


def usage_event(
    *,
    request_id: str,
    tenant_id: int,
    api_key_id: int | None,
    client_request_id: str = "",
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
        "client_request_id": client_request_id,
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
    }


def _rows(events: list[dict[str, str]]) -> list[UsageRecord]:
    return [
        UsageRecord(
            request_id=e["request_id"],
            tenant_id=int(e["tenant_id"]),
            api_key_id=int(e["api_key_id"]) if e.get("api_key_id") else None,
            model=e["model"],
            deployment=e.get("deployment", ""),
            input_tokens=int(e["input_tokens"]),
            output_tokens=int(e["output_tokens"]),
            cached_tokens=int(e.get("cached_tokens") or 0),
            cost_micro_usd=int(e["cost_micro_usd"]),
            input_price=int(e.get("input_price") or 0),
            output_price=int(e.get("output_price") or 0),
            cached_input_price=int(e.get("cached_input_price") or 0),
            cache=e.get("cache") or "miss",
            saved_micro_usd=int(e.get("saved_micro_usd") or 0),
            created=dt.datetime.fromisoformat(e["created"]),
        )
        for e in events
    ]


usage_ingestor = StreamIngestor(
    stream=USAGE_STREAM, group="usage-ingest", model=UsageRecord, build=_rows, copy=True
)
