"""The billing pages in a real browser (Debian's Chromium through Playwright): the usage
dashboard and its charts, a tenant's invoice, budget status and alerts, and the calculator."""

import datetime as dt

import pytest
from playwright.sync_api import expect

from billing.alerts import check_budgets
from billing.models import UsageRecord
from tenants import services
from tests.console.conftest import login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def billed(tenant_a, tenant_b):
    services.operator_set(username="alice", role="admin", password="alice-pass-123")
    now = dt.datetime.now(dt.UTC)
    for i, (tenant, cost) in enumerate(
        [(tenant_a, 1_234_567), (tenant_a, 400_000), (tenant_b, 90_000)]
    ):
        UsageRecord.objects.create(
            request_id=f"req_browser_{i}", tenant=tenant, model="smollm2-135m-instruct",
            input_tokens=1000 * (i + 1), output_tokens=300, cost_micro_usd=cost,
            input_price=100_000, output_price=400_000, cached_input_price=100_000,
            created=now,
        )  # fmt: skip
    services.budget_set(tenant=tenant_a, period="monthly", limit_micro_usd=2_000_000)
    from switchyard.redis_client import get_redis

    r = get_redis()
    for key in r.scan_iter("sy:budget:*"):
        r.delete(key)
    check_budgets()


def test_operator_reads_usage_invoice_alerts_and_calculator(page, live_server, shot, billed):
    login(page, live_server, "alice", "alice-pass-123")
    page.click("header >> text=Billing")
    page.wait_for_selector('svg[data-chart="spend"]')
    assert page.locator('svg[data-chart="spend"] rect.bar').count() == 30  # one bar a day
    assert page.locator('svg[data-chart="spend-by-tenant"] rect.bar').count() == 2
    assert page.locator('[data-figure="spend"]').text_content() == "$1.72"
    assert page.locator('[data-figure="requests"]').text_content() == "3"
    shot("billing-usage")

    page.select_option("#id_tenant", "bravo")
    page.click("#usage-filter button[type=submit]")
    page.wait_for_url("**tenant=bravo**")
    assert page.locator('[data-figure="spend"]').text_content() == "$0.09"
    assert page.locator("#export-csv").get_attribute("href").endswith("&tenant=bravo")

    page.click(".tabs >> text=Budgets & alerts")
    row = page.locator('#budget-status tr[data-tenant="acme"]')
    assert "$1.63" in row.text_content() and "82%" in row.text_content()
    assert page.locator("#alerts tr[data-kind=budget]").count() == 2  # 50% and 80%
    assert "80% of the monthly budget" in page.locator("#alerts").text_content()
    shot("billing-alerts")

    page.click(".tabs >> text=Invoices")
    page.click("#invoices >> text=Invoice >> nth=0")
    assert page.locator("#invoice-total").text_content() == "$1.63"
    assert page.locator("#invoice-total").get_attribute("data-micro-usd") == "1634567"
    shot("billing-invoice")

    page.click(".tabs >> text=Prices")
    page.fill("#price-form #id_model", "smollm2-135m-instruct")
    page.fill("#price-form #id_input_usd_per_mtok", "0.12")
    page.fill("#price-form #id_output_usd_per_mtok", "0.48")
    page.click("#price-form button[type=submit]")
    assert "in force" in page.locator("#price-lists").text_content()
    assert "$0.48" in page.locator("#price-lists").text_content()
    shot("billing-prices")

    page.click(".tabs >> text=Self-hosting calculator")
    page.fill("#id_api_usd_per_mtok", "4")
    page.fill("#id_gpu_usd_per_hour", "3.6")
    page.fill("#id_utilisation_percent", "50")
    page.fill("#id_tokens_per_second", "1000")
    page.click("#calculator button[type=submit]")
    page.wait_for_selector('svg[data-chart="crossover"] polyline.self')
    assert page.locator('[data-figure="break_even"]').text_content() == "657.0 Mtok/month"
    shot("billing-calculator")
    page.fill("#id_utilisation_percent", "0")
    page.click("#calculator button[type=submit]")
    expect(page.locator("#calculator .errors").first).to_be_visible()
