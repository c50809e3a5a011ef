"""Anomaly alerts: an hour far above the tenant's own trailing baseline (robust z-score)."""

import datetime as dt
import random

from billing.anomalies import check_anomalies, robust_z
from billing.models import Alert, UsageRecord
from billing.rollups import rollup_usage

NOW = dt.datetime(2026, 11, 20, 12, 5, tzinfo=dt.UTC)
LAST_HOUR = dt.datetime(2026, 11, 20, 11, 0, tzinfo=dt.UTC)


def traffic(tenant, *, hours: int, per_hour: tuple[int, int], cost: int, last_hour: int, seed=0):
    """``hours`` hours of steady traffic before the last complete hour, then ``last_hour``
    requests in it."""
    rnd = random.Random(seed)
    rows = []
    for h in range(hours, -1, -1):
        start = LAST_HOUR - dt.timedelta(hours=h)
        n = last_hour if h == 0 else rnd.randint(*per_hour)
        for i in range(n):
            rows.append(UsageRecord(
                request_id=f"req_an_{tenant.pk}_{h}_{i}", tenant=tenant, model="m",
                input_tokens=10, output_tokens=10, cost_micro_usd=cost,
                created=start + dt.timedelta(seconds=rnd.randint(0, 3599)),
            ))  # fmt: skip
    UsageRecord.objects.bulk_create(rows)


def test_robust_z_ignores_past_spikes_and_has_floors():
    base = [10, 11, 9, 10, 12, 10, 9, 500]  # one old spike barely moves median and MAD
    s = robust_z(30, base, floor=5)
    assert s.median == 10 and s.mad == 1 and s.scale == 5 and s.z == 4
    assert robust_z(3, [0] * 48, floor=5).z == 0.6  # an idle history: the floor decides


def test_spike_raises_one_alert_that_explains_the_figures(tenant_a, tenant_b):
    traffic(tenant_a, hours=72, per_hour=(8, 12), cost=2_000, last_hour=200)
    traffic(tenant_b, hours=72, per_hour=(8, 12), cost=2_000, last_hour=11, seed=1)
    rollup_usage()
    alerts = check_anomalies(NOW)
    assert {(a.tenant, a.details["metric"]) for a in alerts} == {
        (tenant_a, "spend"), (tenant_a, "requests"),
    }  # fmt: skip
    req = next(a for a in alerts if a.details["metric"] == "requests")
    assert req.details["value"] == 200 and req.details["baseline_hours"] == 72
    assert 8 <= req.details["median"] <= 12 and req.details["z"] >= 6
    assert "200 requests" in req.message and "previous 72 hours" in req.message
    assert f"Robust z-score {req.details['z']:.1f}" in req.message
    spend = next(a for a in alerts if a.details["metric"] == "spend")
    assert "$0.40" in spend.message  # 200 requests x $0.002
    # Scoring the same hour again records nothing new.
    assert check_anomalies(NOW + dt.timedelta(minutes=20)) == []
    assert Alert.objects.filter(kind="anomaly").count() == 2


def test_too_little_history_is_not_scored(tenant_a):
    traffic(tenant_a, hours=10, per_hour=(1, 2), cost=2_000, last_hour=500)
    assert check_anomalies(NOW) == []
