"""Reads of usage figures: the rollups plus the raw records above the rollup watermark, in one
SQL statement (one snapshot), so every page and API that reads through here agrees to the
micro-dollar with the raw records and with each other, however recent the last rollup run.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from django.db import connection

from billing.models import UsageRecord

GROUPS = (
    "bucket",
    "tenant_id",
    "model",
    "deployment",
    "api_key_id",
    "input_price",
    "output_price",
    "cached_input_price",
)
SUMS = ("requests", "input_tokens", "output_tokens", "cached_tokens", "cost_micro_usd")


@dataclass(frozen=True)
class UsageRow:
    """One group's sums; the group fields not asked for are ``None``."""

    bucket: dt.datetime | None
    tenant_id: int | None
    model: str | None
    deployment: str | None
    api_key_id: int | None
    input_price: int | None
    output_price: int | None
    cached_input_price: int | None
    requests: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_micro_usd: int


def _aligned(value: dt.datetime, granularity: str) -> bool:
    value = value.astimezone(dt.UTC)
    if granularity == "day" and (value.hour, value.minute) != (0, 0):
        return False
    return (value.minute, value.second, value.microsecond) == (0, 0, 0)


def usage(
    *,
    start: dt.datetime,
    end: dt.datetime,
    granularity: str = "day",
    group_by: Sequence[str] = ("bucket",),
    tenant_id: int | None = None,
) -> list[UsageRow]:
    """Usage sums over ``[start, end)`` grouped by ``group_by`` (names from :data:`GROUPS`;
    ``bucket`` is the start of the UTC hour or day). ``start`` and ``end`` must fall on bucket
    boundaries. With ``tenant_id``, only that tenant's usage: tenant-facing callers always pass
    it."""
    if granularity not in ("hour", "day"):
        raise ValueError("granularity is 'hour' or 'day'")
    if not (_aligned(start, granularity) and _aligned(end, granularity)):
        raise ValueError(f"start and end must fall on {granularity} boundaries (UTC)")
    unknown = set(group_by) - set(GROUPS)
    if unknown:
        raise ValueError(f"cannot group by {sorted(unknown)}")
    cols = [c for c in GROUPS if c in group_by]
    tenant_sql = " AND tenant_id = %(tenant)s" if tenant_id is not None else ""
    select = ", ".join(cols + [f"sum({s})::bigint" for s in SUMS])
    group = f"GROUP BY {', '.join(cols)} ORDER BY {', '.join(cols)}" if cols else ""
    sql = f"""
    WITH w AS (
        SELECT coalesce((SELECT last_record_id FROM billing_rollupstate WHERE id = 1), 0) AS hi
    ), u AS (
        SELECT bucket, tenant_id, model, deployment, api_key_id, input_price, output_price,
               cached_input_price, requests, input_tokens, output_tokens, cached_tokens,
               cost_micro_usd
        FROM billing_usagerollup
        WHERE granularity = %(g)s AND bucket >= %(start)s AND bucket < %(end)s{tenant_sql}
        UNION ALL
        SELECT date_trunc(%(g)s, created, 'UTC'), tenant_id, model, deployment, api_key_id,
               input_price, output_price, cached_input_price, 1, input_tokens, output_tokens,
               cached_tokens, cost_micro_usd
        FROM billing_usagerecord
        WHERE id > (SELECT hi FROM w) AND created >= %(start)s AND created < %(end)s{tenant_sql}
    )
    SELECT {select} FROM u {group}
    """
    params = {"g": granularity, "start": start, "end": end, "tenant": tenant_id}
    with connection.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall()
    out = []
    for row in rows:
        fields = dict.fromkeys(GROUPS)
        fields.update(zip(cols, row[: len(cols)], strict=True))
        sums = [int(v or 0) for v in row[len(cols) :]]
        if not cols and sums[0] == 0:
            continue
        out.append(UsageRow(**fields, **dict(zip(SUMS, sums, strict=True))))
    return out


def usage_records(
    *, start: dt.datetime, end: dt.datetime, tenant_id: int | None = None
) -> Iterator[UsageRecord]:
    """Raw usage records created in ``[start, end)``, oldest first, streamed in chunks."""
    qs = UsageRecord.objects.filter(created__gte=start, created__lt=end).select_related("tenant")
    if tenant_id is not None:
        qs = qs.filter(tenant_id=tenant_id)
    return qs.order_by("created", "id").iterator(chunk_size=2000)
