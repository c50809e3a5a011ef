"""Hourly and daily usage rollups, built from raw usage records; idempotent and re-runnable.

How a run works (:func:`rollup_usage`):

1. Under a brief ``SHARE`` lock on the usage table (it waits for in-flight inserts to commit
   and holds new ones back for a moment) read the highest record id, ``high``. Every record
   with ``id <= high`` is now committed and visible.
2. In one transaction: find the (tenant, hour) buckets touched by records with
   ``last_record_id < id <= high``; recompute each touched hour from *all* raw records of that
   tenant and hour with ``id <= high`` (delete, then insert the sums); recompute each touched
   (tenant, day) from its hours; set ``last_record_id = high``.

So the rollups always hold exactly the records with ``id <= last_record_id``, a late record
(ingested hours after its request started) re-opens its old bucket, and running twice changes
nothing. Readers add the raw records above the watermark (:mod:`billing.selectors`) in the same
statement, so figures are exact to the last ingested record.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db import connection, transaction
from django.utils import timezone

from billing.models import RollupState

_SUMS = """count(*), sum(input_tokens), sum(output_tokens), sum(cached_tokens),
    sum(cost_micro_usd)"""
_KEY = "tenant_id, model, deployment, api_key_id, input_price, output_price, cached_input_price"
_COLUMNS = f"""granularity, bucket, {_KEY}, requests, input_tokens, output_tokens,
    cached_tokens, cost_micro_usd"""


@dataclass(frozen=True)
class RollupRun:
    records: int
    hours: int
    days: int
    watermark: int


def _high_water_mark() -> int:
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("LOCK TABLE billing_usagerecord IN SHARE MODE")
        cur.execute("SELECT coalesce(max(id), 0) FROM billing_usagerecord")
        return int(cur.fetchone()[0])


def rollup_usage() -> RollupRun:
    """Bring the hourly and daily rollups up to the newest committed usage record."""
    high = _high_water_mark()
    with transaction.atomic(), connection.cursor() as cur:
        # One run at a time: the state row is the lock.
        cur.execute(
            "INSERT INTO billing_rollupstate (id, last_record_id, updated) "
            "VALUES (1, 0, now()) ON CONFLICT (id) DO NOTHING"
        )
        state = RollupState.objects.select_for_update().get(pk=1)
        low = state.last_record_id
        if high <= low:
            return RollupRun(0, 0, 0, low)
        if low == 0:
            run = _rollup_everything(cur, high)
            RollupState.objects.filter(pk=1).update(last_record_id=high, updated=timezone.now())
            return run
        cur.execute(
            """CREATE TEMP TABLE _dirty ON COMMIT DROP AS
               SELECT tenant_id, date_trunc('hour', created, 'UTC') AS hour, count(*) AS n
               FROM billing_usagerecord WHERE id > %s AND id <= %s
               GROUP BY 1, 2""",
            [low, high],
        )
        return _recompute_dirty(cur, high)


def _day_floor(t: dt.datetime) -> dt.datetime:
    return t.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def rollup_recompute(*, start: dt.datetime, end: dt.datetime) -> RollupRun:
    """Recompute every bucket in ``[start, end)`` from the raw records (rollups only ever add
    records by themselves: after deleting or correcting records by hand, run this over their
    time range). ``start`` and ``end`` are rounded out to whole UTC days."""
    start = _day_floor(start)
    end = _day_floor(end) + (dt.timedelta(days=1) if end > _day_floor(end) else dt.timedelta())
    with transaction.atomic(), connection.cursor() as cur:
        state = RollupState.objects.select_for_update().filter(pk=1).first()
        if state is None:
            return RollupRun(0, 0, 0, 0)
        high = state.last_record_id
        cur.execute(
            """CREATE TEMP TABLE _dirty ON COMMIT DROP AS
               SELECT tenant_id, hour, sum(n) AS n FROM (
                   SELECT tenant_id, date_trunc('hour', created, 'UTC') AS hour, 1 AS n
                   FROM billing_usagerecord
                   WHERE created >= %(start)s AND created < %(end)s AND id <= %(high)s
                   UNION ALL
                   SELECT tenant_id, bucket, 0 FROM billing_usagerollup
                   WHERE granularity = 'hour' AND bucket >= %(start)s AND bucket < %(end)s
               ) b GROUP BY 1, 2""",
            {"start": start, "end": end, "high": high},
        )
        return _recompute_dirty(cur, high)


def _recompute_dirty(cur, high: int) -> RollupRun:
    """Recompute the (tenant, hour) buckets listed in the temp table ``_dirty`` and their days
    from the raw records with ``id <= high``; move the watermark to ``high``."""
    # Statistics on the small temp table keep the planner on the (tenant, created) index
    # instead of hashing the whole usage table.
    cur.execute("ANALYZE _dirty")
    cur.execute("SELECT count(*), coalesce(sum(n), 0) FROM _dirty")
    hours, records = cur.fetchone()
    cur.execute(
        """DELETE FROM billing_usagerollup r USING _dirty d
           WHERE r.granularity = 'hour' AND r.tenant_id = d.tenant_id AND r.bucket = d.hour"""
    )
    cur.execute(
        f"""INSERT INTO billing_usagerollup ({_COLUMNS})
            SELECT 'hour', d.hour, {", ".join("u." + c.strip() for c in _KEY.split(","))},
                   {_SUMS}
            FROM _dirty d JOIN billing_usagerecord u
              ON u.tenant_id = d.tenant_id
             AND u.created >= d.hour AND u.created < d.hour + interval '1 hour'
            WHERE u.id <= %s
            GROUP BY d.hour, {", ".join("u." + c.strip() for c in _KEY.split(","))}""",
        [high],
    )
    cur.execute(
        """CREATE TEMP TABLE _dirty_days ON COMMIT DROP AS
           SELECT DISTINCT tenant_id, date_trunc('day', hour, 'UTC') AS day FROM _dirty"""
    )
    cur.execute("ANALYZE _dirty_days")
    cur.execute("SELECT count(*) FROM _dirty_days")
    (days,) = cur.fetchone()
    cur.execute(
        """DELETE FROM billing_usagerollup r USING _dirty_days d
           WHERE r.granularity = 'day' AND r.tenant_id = d.tenant_id AND r.bucket = d.day"""
    )
    key = ", ".join("r." + c.strip() for c in _KEY.split(","))
    cur.execute(
        f"""INSERT INTO billing_usagerollup ({_COLUMNS})
            SELECT 'day', d.day, {key}, sum(r.requests), sum(r.input_tokens),
                   sum(r.output_tokens), sum(r.cached_tokens), sum(r.cost_micro_usd)
            FROM _dirty_days d JOIN billing_usagerollup r
              ON r.granularity = 'hour' AND r.tenant_id = d.tenant_id
             AND r.bucket >= d.day AND r.bucket < d.day + interval '1 day'
            GROUP BY d.day, {key}"""
    )
    # ON COMMIT DROP does not fire when this runs inside an outer transaction.
    cur.execute("DROP TABLE _dirty, _dirty_days")
    RollupState.objects.filter(pk=1).update(last_record_id=high, updated=timezone.now())
    return RollupRun(int(records), int(hours), int(days), high)


def _rollup_everything(cur, high: int) -> RollupRun:
    """The first run (or a rebuild): one pass over the table, hashed by bucket and key, instead
    of bucket-by-bucket index lookups."""
    key = ", ".join(c.strip() for c in _KEY.split(","))
    cur.execute("DELETE FROM billing_usagerollup")
    cur.execute(
        f"""INSERT INTO billing_usagerollup ({_COLUMNS})
            SELECT 'hour', date_trunc('hour', created, 'UTC'), {key}, {_SUMS}
            FROM billing_usagerecord WHERE id <= %s
            GROUP BY date_trunc('hour', created, 'UTC'), {key}""",
        [high],
    )
    cur.execute(
        f"""INSERT INTO billing_usagerollup ({_COLUMNS})
            SELECT 'day', date_trunc('day', bucket, 'UTC'), {key}, sum(requests),
                   sum(input_tokens), sum(output_tokens), sum(cached_tokens), sum(cost_micro_usd)
            FROM billing_usagerollup WHERE granularity = 'hour'
            GROUP BY date_trunc('day', bucket, 'UTC'), {key}"""
    )
    cur.execute(
        """SELECT coalesce(sum(requests) FILTER (WHERE granularity = 'hour'), 0),
                  count(DISTINCT (tenant_id, bucket)) FILTER (WHERE granularity = 'hour'),
                  count(DISTINCT (tenant_id, bucket)) FILTER (WHERE granularity = 'day')
           FROM billing_usagerollup"""
    )
    records, hours, days = cur.fetchone()
    return RollupRun(int(records), int(hours), int(days), high)


def rollup_rebuild() -> RollupRun:
    """Throw the rollups away and build them again from every raw record."""
    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute("DELETE FROM billing_usagerollup")
        RollupState.objects.update_or_create(pk=1, defaults={"last_record_id": 0})
    return rollup_usage()
