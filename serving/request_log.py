"""The per-request log: queued on a Redis stream by the gateway, written in batches by Celery.

Every field is read leniently (switchyard.streams): a tenant controls the model name, the
client request id and the bodies, and none of them may keep the log from landing."""

from __future__ import annotations

from serving.models import RequestLog
from switchyard.streams import (
    StreamIngestor,
    parse_json,
    to_datetime,
    to_float,
    to_int,
    to_optional_int,
)

REQUEST_LOG_STREAM = "sy:requestlog"


def _row(e: dict[str, str]) -> RequestLog:
    ttft = e.get("ttft_ms")
    return RequestLog(
        request_id=e["request_id"],  # the only field an entry cannot do without
        client_request_id=e.get("client_request_id", ""),
        tenant_id=to_optional_int(e.get("tenant_id")),
        api_key_id=to_optional_int(e.get("api_key_id")),
        endpoint=e.get("endpoint", ""),
        model=e.get("model", ""),
        deployment=e.get("deployment", ""),
        status_code=to_int(e.get("status_code"), 0),
        error_code=e.get("error_code", ""),
        stream=e.get("stream") == "1",
        input_tokens=max(0, to_int(e.get("input_tokens"))),
        output_tokens=max(0, to_int(e.get("output_tokens"))),
        cost_micro_usd=to_int(e.get("cost_micro_usd")),
        latency_ms=to_float(e.get("latency_ms")),
        ttft_ms=to_float(ttft) if ttft else None,
        cache=e.get("cache") or "miss",
        route=e.get("route", ""),
        request_body=parse_json(e.get("request_body")),
        response_body=parse_json(e.get("response_body")),
        created=to_datetime(e.get("created")),
    )


def _rows(events: list[dict[str, str]]) -> list[RequestLog]:
    # Strings are cut to their columns and cleaned by the ingestor (streams.fit_row).
    return [_row(e) for e in events]


# Registered in ServingConfig.ready().
request_log_ingestor = StreamIngestor(
    stream=REQUEST_LOG_STREAM, group="requestlog-ingest", model=RequestLog, build=_rows
)
