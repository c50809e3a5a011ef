"""``GET /v1/usage?start=YYYY-MM-DD&end=YYYY-MM-DD``: a tenant's own usage per day and model.

Authenticated with the tenant's API key exactly like the gateway's endpoints; the figures come
from :func:`billing.selectors.usage` filtered by the key's tenant (the same reader as invoices
and the console), so they agree to the micro-dollar and never include another tenant.
"""

from __future__ import annotations

import datetime as dt

from asgiref.sync import sync_to_async
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from billing import selectors
from serving.gateway.authentication import authenticate
from serving.gateway.errors import GatewayError, invalid

MAX_DAYS = 366


def parse_day(value: str | None, param: str) -> dt.date:
    """A ``YYYY-MM-DD`` query parameter, or a 400 naming ``param``."""
    if not value:
        raise invalid(f"Missing query parameter '{param}' (a date, YYYY-MM-DD).", param=param)
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise invalid(
            f"Query parameter '{param}' must be a date as YYYY-MM-DD; got {value[:40]!r}.",
            param=param,
            code="invalid_date",
        ) from None


def parse_range(start: str | None, end: str | None) -> tuple[dt.date, dt.date]:
    """Both days inclusive, at most :data:`MAX_DAYS` apart."""
    first, last = parse_day(start, "start"), parse_day(end, "end")
    if last < first:
        raise invalid("'end' must not be before 'start'.", param="end", code="invalid_date")
    if (last - first).days + 1 > MAX_DAYS:
        raise invalid(
            f"Ask for at most {MAX_DAYS} days at a time.", param="end", code="range_too_long"
        )
    return first, last


def day_start(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def usage_report(*, tenant_id: int, first: dt.date, last: dt.date) -> dict:
    """The tenant's usage per UTC day, model and unit prices over ``[first, last]``."""
    rows = selectors.usage(
        start=day_start(first),
        end=day_start(last + dt.timedelta(days=1)),
        granularity="day",
        group_by=("bucket", "model", "input_price", "output_price", "cached_input_price"),
        tenant_id=tenant_id,
    )
    data = [
        {
            "date": r.bucket.astimezone(dt.UTC).date().isoformat(),
            "model": r.model,
            "requests": r.requests,
            "input_tokens": r.input_tokens,
            "output_tokens": r.output_tokens,
            "cached_tokens": r.cached_tokens,
            "cost_micro_usd": r.cost_micro_usd,
            "unit_prices": {
                "input_micro_usd_per_mtok": r.input_price,
                "output_micro_usd_per_mtok": r.output_price,
                "cached_input_micro_usd_per_mtok": r.cached_input_price,
            },
        }
        for r in rows
    ]
    total = {
        k: sum(d[k] for d in data)
        for k in ("requests", "input_tokens", "output_tokens", "cached_tokens", "cost_micro_usd")
    }
    return {
        "object": "usage",
        "start": first.isoformat(),
        "end": last.isoformat(),
        "data": data,
        "total": total,
    }


@csrf_exempt  # key-authenticated API: no cookies, no CSRF
async def usage(request) -> JsonResponse:
    if request.method != "GET":
        resp = GatewayError(405, "Method not allowed; use GET.", code="method_not_allowed")
        out = resp.response()
        out["Allow"] = "GET"
        return out
    try:
        auth = await authenticate(request.headers.get("Authorization"))
        unknown = sorted(set(request.GET) - {"start", "end"})
        if unknown:
            raise GatewayError(
                400,
                f"Unknown query parameter {unknown[0][:64]!r}; /v1/usage takes start and end.",
                param=unknown[0][:64],
                code="unknown_parameter",
            )
        first, last = parse_range(request.GET.get("start"), request.GET.get("end"))
    except GatewayError as exc:
        return exc.response()
    report = await sync_to_async(usage_report, thread_sensitive=False)(
        tenant_id=auth.tenant.pk, first=first, last=last
    )
    return JsonResponse(report)
