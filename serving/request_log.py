"""The per-request log: queued on a Redis stream by the gateway, written in batches by Celery."""

from __future__ import annotations

import datetime as dt
import json

from serving.models import RequestLog
from switchyard.streams import StreamIngestor

REQUEST_LOG_STREAM = "sy:requestlog"


def _rows(events: list[dict[str, str]]) -> list[RequestLog]:
    rows = []
    for e in events:
        rows.append(
            RequestLog(
                request_id=e["request_id"],
                tenant_id=int(e["tenant_id"]) if e.get("tenant_id") else None,
                api_key_id=int(e["api_key_id"]) if e.get("api_key_id") else None,
                endpoint=e.get("endpoint", ""),
                model=e.get("model", ""),
                deployment=e.get("deployment", ""),
                status_code=int(e["status_code"]),
                error_code=e.get("error_code", ""),
                stream=e.get("stream") == "1",
                input_tokens=int(e.get("input_tokens") or 0),
                output_tokens=int(e.get("output_tokens") or 0),
                cost_micro_usd=int(e.get("cost_micro_usd") or 0),
                latency_ms=float(e.get("latency_ms") or 0),
                ttft_ms=float(e["ttft_ms"]) if e.get("ttft_ms") else None,
                cache=e.get("cache", "miss"),
                route=e.get("route", "")[:255],
                request_body=json.loads(e["request_body"]) if e.get("request_body") else None,
                response_body=json.loads(e["response_body"]) if e.get("response_body") else None,
                created=dt.datetime.fromisoformat(e["created"]),
            )
        )
    return rows


request_log_ingestor = StreamIngestor(
    stream=REQUEST_LOG_STREAM, group="requestlog-ingest", model=RequestLog, build=_rows
)
