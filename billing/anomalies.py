"""Per-tenant usage anomalies: an hour's spend or request count far above its own history.

For each tenant and metric (``spend`` in micro-dollars, ``requests``), the last complete UTC
hour ``x`` is compared with the trailing baseline: the hourly values of the
``SWITCHYARD_ANOMALY_BASELINE_HOURS`` (168) hours before it, counting hours without usage as
zero, from the tenant's first hour with usage on (at least ``MIN_BASELINE_HOURS`` of history
are needed). With ``m`` the baseline's median and ``MAD`` its median absolute deviation::

    scale = max(1.4826 * MAD, 0.1 * m, FLOOR[metric])
    z     = (x - m) / scale

``1.4826 * MAD`` estimates the standard deviation of normal data but, unlike it, a few past
spikes barely move it (robust). The floors keep a flat or idle history from making any small
hour an "anomaly": 10% of the median, and at least 5 requests or $0.01 an hour. An alert is
recorded when ``z >= SWITCHYARD_ANOMALY_Z`` (6), once per tenant, metric and hour, and its text
gives x, m, MAD and z.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import defaultdict
from dataclasses import dataclass

from django.conf import settings

from billing import selectors
from billing.alerts import record_alert
from billing.models import Alert
from billing.money import usd_cents
from tenants.models import Tenant

MIN_BASELINE_HOURS = 24
FLOOR = {"spend": 10_000, "requests": 5}
HOUR = dt.timedelta(hours=1)


@dataclass(frozen=True)
class Score:
    value: int
    median: float
    mad: float
    scale: float
    z: float
    baseline_hours: int


def robust_z(value: int, baseline: list[int], floor: float) -> Score:
    """The robust z-score of ``value`` against ``baseline`` (see the module docstring)."""
    m = statistics.median(baseline)
    mad = statistics.median(abs(v - m) for v in baseline)
    scale = max(1.4826 * mad, 0.1 * m, floor)
    return Score(value, m, mad, scale, (value - m) / scale, len(baseline))


def _fmt(metric: str, v: float) -> str:
    return usd_cents(round(v)) if metric == "spend" else f"{v:,.0f} requests"


def check_anomalies(now: dt.datetime | None = None) -> list[Alert]:
    """Score the last complete hour of every tenant with usage; record alerts."""
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    hour = now.replace(minute=0, second=0, microsecond=0) - HOUR
    window = settings.SWITCHYARD_ANOMALY_BASELINE_HOURS
    start = hour - window * HOUR
    rows = selectors.usage(
        start=start, end=hour + HOUR, granularity="hour", group_by=("bucket", "tenant_id")
    )
    series: dict[int, dict[dt.datetime, tuple[int, int]]] = defaultdict(dict)
    for r in rows:
        series[r.tenant_id][r.bucket] = (r.cost_micro_usd, r.requests)
    threshold = settings.SWITCHYARD_ANOMALY_Z
    created = []
    tenants = Tenant.objects.in_bulk(list(series))
    for tenant_id, by_hour in series.items():
        if hour not in by_hour:
            continue
        first = min(by_hour)
        hours = [first + i * HOUR for i in range(int((hour - first) / HOUR))]
        if len(hours) < MIN_BASELINE_HOURS:
            continue
        for i, metric in enumerate(("spend", "requests")):
            baseline = [by_hour.get(h, (0, 0))[i] for h in hours]
            score = robust_z(by_hour[hour][i], baseline, FLOOR[metric])
            if score.z < threshold:
                continue
            tenant = tenants[tenant_id]
            what = "Spend" if metric == "spend" else "Request rate"
            alert = record_alert(
                kind=Alert.Kind.ANOMALY,
                tenant=tenant,
                dedupe_key=f"anomaly:{tenant_id}:{metric}:{hour:%Y%m%d%H}",
                subject=f"[Switchyard] {tenant.slug}: {what.lower()} anomaly {hour:%Y-%m-%d %H}:00",
                message=(
                    f"{what} of tenant {tenant.name} ({tenant.slug}) in the hour "
                    f"{hour:%Y-%m-%d %H}:00-{hour + HOUR:%H}:00 UTC was "
                    f"{_fmt(metric, score.value)}, against a median of "
                    f"{_fmt(metric, score.median)} an hour over the previous "
                    f"{score.baseline_hours} hours (median absolute deviation "
                    f"{_fmt(metric, score.mad)}; scale used {_fmt(metric, score.scale)}). "
                    f"Robust z-score {score.z:.1f}; alerts start at {threshold:g}."
                ),
                details={
                    "metric": metric,
                    "hour": hour.isoformat(),
                    "value": score.value,
                    "median": score.median,
                    "mad": score.mad,
                    "scale": score.scale,
                    "z": round(score.z, 2),
                    "threshold": threshold,
                    "baseline_hours": score.baseline_hours,
                },
            )
            if alert:
                created.append(alert)
    return created
