"""Budget alerts: each threshold fires once per period, by e-mail and webhook, from the same
spend figure the gateway's hard stop uses."""

import datetime as dt

import pytest
from django.core import mail

from billing.alerts import check_budgets, deliver_pending
from billing.models import Alert, BillingProfile, UsageRecord
from billing.spend import budget_key, budget_spend
from tenants import services

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
_n = iter(range(10**6))


def spend(tenant, micro_usd: int, at=NOW - dt.timedelta(hours=1)) -> None:
    UsageRecord.objects.create(
        request_id=f"req_alert_{next(_n)}", tenant=tenant, model="m", input_tokens=1,
        cost_micro_usd=micro_usd, created=at,
    )  # fmt: skip


@pytest.fixture
def budget(tenant_a, no_budget_counters, webhook, settings):
    settings.SWITCHYARD_ALERT_EMAILS = ["billing-ops@switchyard.test"]
    BillingProfile.objects.create(tenant=tenant_a, webhook_url=webhook.url)
    return services.budget_set(
        tenant=tenant_a,
        period="monthly",
        limit_micro_usd=10_000_000,
        alert_thresholds=[50, 80, 100],
    )


def run(now=NOW) -> list[Alert]:
    created = check_budgets(now)
    deliver_pending()
    return created


def test_each_threshold_fires_once_per_period_by_mail_and_webhook(budget, tenant_a, webhook):
    spend(tenant_a, 4_000_000)
    assert run() == [] and mail.outbox == [] and webhook.bodies == []

    spend(tenant_a, 1_500_000)  # 55%
    (alert,) = run()
    assert alert.details["threshold_percent"] == 50
    assert "$5.50 of its monthly budget of $10.00" in alert.message
    assert len(mail.outbox) == 1
    assert sorted(mail.outbox[0].to) == ["billing-ops@switchyard.test", "ops@acme.test"]
    assert "50% of the monthly budget" in mail.outbox[0].subject
    assert [b["details"]["threshold_percent"] for b in webhook.bodies] == [50]
    assert (
        webhook.bodies[0]["tenant"] == "acme"
        and webhook.bodies[0]["type"] == "switchyard.alert.budget"
    )

    # Nothing new: nothing sent again, however often it runs.
    assert run() == [] and run() == []
    assert len(mail.outbox) == 1 and len(webhook.bodies) == 1

    spend(tenant_a, 5_000_000)  # 105%: both remaining thresholds
    assert sorted(a.details["threshold_percent"] for a in run()) == [80, 100]
    assert len(mail.outbox) == 3 and len(webhook.bodies) == 3
    assert Alert.objects.filter(tenant=tenant_a).count() == 3

    # A new period starts from zero: no alert until it is spent again.
    next_month = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
    assert run(next_month) == []
    spend(tenant_a, 6_000_000, at=next_month - dt.timedelta(hours=1))
    assert [a.details["threshold_percent"] for a in run(next_month)] == [50]


def test_alerts_use_the_gateways_live_counter(budget, tenant_a, no_budget_counters):
    """The gateway's Redis counter (reservations included) is the figure, not the records."""
    spend(tenant_a, 1_000_000)
    assert budget_spend(budget, NOW) == 1_000_000
    no_budget_counters.set(budget_key(tenant_a.pk, "monthly", NOW), 8_100_000)
    assert budget_spend(budget, NOW) == 8_100_000
    assert sorted(a.details["threshold_percent"] for a in run()) == [50, 80]


def test_failed_webhook_is_retried_without_a_second_alert_or_mail(budget, tenant_a, webhook):
    webhook.status = 500
    spend(tenant_a, 5_000_000)
    (alert,) = run()
    alert.refresh_from_db()
    assert alert.email_sent and alert.webhook_sent is None and "500" in alert.delivery_error
    webhook.status = 200
    assert run() == []
    alert.refresh_from_db()
    assert alert.webhook_sent and alert.delivery_error == ""
    assert len(mail.outbox) == 1 and len(webhook.bodies) == 2  # the failed try and the retry
    assert deliver_pending() == 0


def test_daily_budget_period_is_the_utc_day(tenant_a, no_budget_counters):
    daily = services.budget_set(tenant=tenant_a, period="daily", limit_micro_usd=1_000_000,
                                alert_thresholds=[100])  # fmt: skip
    spend(tenant_a, 2_000_000, at=NOW - dt.timedelta(days=1))  # yesterday does not count
    assert check_budgets(NOW) == []
    spend(tenant_a, 1_000_000)
    (alert,) = check_budgets(NOW)
    assert alert.details["budget_id"] == daily.pk and "for 2026-11-20" in alert.message


def test_gateway_seed_figure_is_the_records_sum_rolled_up_or_not(tenant_a, tenant_b):
    from billing.ledger import spend_in_db
    from billing.periods import period_start
    from billing.rollups import rollup_usage

    month = period_start("monthly", NOW)
    spend(tenant_a, 1_000_000)
    spend(tenant_a, 7, at=month - dt.timedelta(seconds=1))  # last month: not counted
    spend(tenant_b, 5)
    rollup_usage()
    spend(tenant_a, 250_001)  # not rolled up yet
    assert spend_in_db(tenant_a.pk, month) == 1_250_001
    assert spend_in_db(tenant_a.pk, NOW - dt.timedelta(minutes=30)) == 0  # any instant: raw
    assert spend_in_db(tenant_a.pk, NOW - dt.timedelta(hours=2)) == 1_250_001
