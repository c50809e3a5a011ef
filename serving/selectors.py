"""Reads of gateway traffic for the console."""

from __future__ import annotations

import datetime as dt

from django.db.models import Avg, Count, Q, Sum
from django.utils import timezone

from billing.models import UsageRecord
from serving.models import RequestLog


def traffic_figures(*, hours: int = 24) -> dict[str, float | int | None]:
    """Requests, errors, latency, tokens and spend over the last ``hours`` (all tenants)."""
    since = timezone.now() - dt.timedelta(hours=hours)
    logs = RequestLog.objects.filter(created__gte=since).aggregate(
        requests=Count("id"),
        errors=Count("id", filter=Q(status_code__gte=400)),
        latency=Avg("latency_ms"),
        ttft=Avg("ttft_ms"),
    )
    usage = UsageRecord.objects.filter(created__gte=since).aggregate(
        input=Sum("input_tokens"), output=Sum("output_tokens"), spend=Sum("cost_micro_usd")
    )
    return {
        "requests": logs["requests"],
        "errors": logs["errors"],
        "avg_latency_ms": round(logs["latency"], 1) if logs["latency"] is not None else None,
        "avg_ttft_ms": round(logs["ttft"], 1) if logs["ttft"] is not None else None,
        "input_tokens": usage["input"] or 0,
        "output_tokens": usage["output"] or 0,
        "spend_usd": (usage["spend"] or 0) / 1_000_000,
    }


def request_log(*, tenant=None, status: str = "", model: str = "", q: str = "", limit: int = 100):
    """Newest request-log rows, filtered. ``status`` is "ok", "error" or an HTTP code."""
    qs = RequestLog.objects.select_related("tenant").order_by("-created")
    if tenant is not None:
        qs = qs.filter(tenant=tenant)
    if status == "ok":
        qs = qs.filter(status_code__lt=400)
    elif status == "error":
        qs = qs.filter(status_code__gte=400)
    elif status.isdigit():
        qs = qs.filter(status_code=int(status))
    if model:
        qs = qs.filter(model=model)
    if q:
        qs = qs.filter(
            Q(request_id__icontains=q)
            | Q(client_request_id__icontains=q)
            | Q(error_code__icontains=q)
        )
    return qs[:limit]
