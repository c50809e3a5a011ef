"""Billing pages with the Django test client: usage dashboard, budgets and alerts, invoices
(HTML and CSV), the raw usage export and the self-hosting calculator."""

import csv
import datetime as dt
import io

import pytest

from billing.alerts import record_alert
from billing.models import BillingProfile, ModelPrice, TenantPriceOverride, UsageRecord
from billing.rollups import rollup_usage
from tenants import services
from tenants.models import AuditEvent

NOW = dt.datetime.now(dt.UTC)
TODAY = NOW.date()
MONTH = TODAY.strftime("%Y-%m")
PAGES = [
    "/billing/",
    f"/billing/?start={TODAY}&end={TODAY}&tenant=acme",
    "/billing/alerts/",
    "/billing/alerts/?kind=budget",
    "/billing/invoices/",
    f"/billing/invoices/?month={MONTH}",
    f"/billing/invoices/acme/{MONTH}/",
    "/billing/calculator/",
    "/billing/prices/",
    "/billing/calculator/?api_usd_per_mtok=0.6&gpu_usd_per_hour=2.5&utilisation_percent=60&tokens_per_second=1000",
]
_n = iter(range(10**6))


def record(tenant, cost, *, at=None, model="smollm2-135m-instruct", tokens=(10, 5)):
    return UsageRecord.objects.create(
        request_id=f"req_cv_{next(_n)}", tenant=tenant, model=model, input_tokens=tokens[0],
        output_tokens=tokens[1], cost_micro_usd=cost, input_price=100_000, output_price=400_000,
        cached_input_price=100_000, created=at or NOW,
    )  # fmt: skip


@pytest.fixture
def usage(tenant_a, tenant_b):
    for _ in range(3):
        record(tenant_a, 3_333)  # 3 x 3,333 µ$ = 9,999 µ$: shown as $0.01
    record(tenant_a, 1_000_000, model="all-minilm-l6-v2")
    record(tenant_b, 777_777)
    rollup_usage()
    record(tenant_a, 2, tokens=(1, 1))  # not rolled up yet: still counted


@pytest.mark.parametrize("path", PAGES)
def test_operators_see_billing_pages_and_outsiders_do_not(client, alice, bob, charlie, usage, path):
    client.force_login(bob)
    assert client.get(path).status_code == 200
    client.force_login(charlie)
    assert client.get(path).status_code == 403
    client.logout()
    assert client.get(path).status_code == 302


def test_dashboard_totals_match_the_records(client, bob, usage, tenant_a):
    client.force_login(bob)
    page = client.get("/billing/").content.decode()
    total = sum(UsageRecord.objects.values_list("cost_micro_usd", flat=True))
    assert total == 9_999 + 1_000_000 + 777_777 + 2
    assert "$1.79</div>" in page and f"{total:,} µ$" in page
    assert 'data-chart="spend"' in page and "<rect" in page
    one = client.get(f"/billing/?tenant=acme&start={TODAY}&end={TODAY}").content.decode()
    assert "1,010,001 µ$" in one and "bravo" not in one.split("By tenant")[1].split("By model")[0]


def test_dashboard_refuses_bad_ranges_with_form_errors(client, bob, usage):
    client.force_login(bob)
    r = client.get("/billing/?start=2026-11-20&end=2026-11-01")
    assert r.status_code == 400 and "The end date is before the start date." in r.content.decode()
    r = client.get("/billing/?start=2020-01-01&end=2026-11-01")
    assert r.status_code == 400 and "at most 366 days" in r.content.decode()
    r = client.get("/billing/?start=yesterday")
    assert r.status_code == 400 and "Enter a valid date." in r.content.decode()
    r = client.get("/billing/?tenant=nobody")
    assert r.status_code == 400 and "Select a valid choice" in r.content.decode()


def test_invoice_is_exact_and_rounds_only_at_display(client, bob, usage, tenant_a):
    client.force_login(bob)
    page = client.get(f"/billing/invoices/acme/{MONTH}/").content.decode()
    assert 'data-micro-usd="10001"' in page  # 3 x 3,333 + 2: one line, exact
    assert 'id="invoice-total" data-micro-usd="1010001">$1.01<' in page
    assert "$0.10 · $0.10 · $0.40" in page
    r = client.get(f"/billing/invoices/acme/{MONTH}.csv")
    assert r["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(r.content.decode())))
    assert [(x["model"], x["amount_micro_usd"], x["amount_usd"]) for x in rows] == [
        ("all-minilm-l6-v2", "1000000", "1.00"),
        ("smollm2-135m-instruct", "10001", "0.01"),
        ("TOTAL", "1010001", "1.01"),
    ]
    listing = client.get("/billing/invoices/").content.decode()
    assert "$1.01" in listing and "$0.78" in listing and "$1.79" in listing


def test_invoice_of_a_month_without_usage_and_bad_months(client, bob, usage):
    client.force_login(bob)
    assert (
        "No usage in this period." in client.get("/billing/invoices/acme/2020-01/").content.decode()
    )
    assert client.get("/billing/invoices/acme/2020-13x/").status_code == 404
    assert client.get(f"/billing/invoices/nobody/{MONTH}/").status_code == 404
    assert client.get("/billing/invoices/?month=junk").status_code == 404


def test_raw_usage_export_covers_the_range_and_the_tenant(client, bob, usage, tenant_a):
    client.force_login(bob)
    old = record(tenant_a, 5, at=NOW - dt.timedelta(days=40))
    r = client.get(f"/billing/export.csv?start={TODAY}&end={TODAY}&tenant=acme")
    assert r.status_code == 200 and "attachment" in r["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(r.streaming_content).decode())))
    assert len(rows) == 5 and {x["tenant"] for x in rows} == {"acme"}
    assert old.request_id not in {x["request_id"] for x in rows}
    assert sum(int(x["cost_micro_usd"]) for x in rows) == 1_010_001
    everyone = client.get(f"/billing/export.csv?start={TODAY - dt.timedelta(days=45)}&end={TODAY}")
    assert len(b"".join(everyone.streaming_content).decode().strip().splitlines()) == 1 + 7
    bad = client.get("/billing/export.csv?start=2026-11-20&end=2026-11-01")
    assert bad.status_code == 400


def test_alerts_page_shows_budget_status_and_alerts(client, bob, usage, tenant_a):
    services.budget_set(tenant=tenant_a, period="monthly", limit_micro_usd=2_000_000, hard=True)
    record_alert(kind="budget", tenant=tenant_a, dedupe_key="budget:x", subject="acme at 50%",
                 message="Tenant Acme has spent $1.01", details={})  # fmt: skip
    client.force_login(bob)
    page = client.get("/billing/alerts/").content.decode()
    assert "acme at 50%" in page and "Tenant Acme has spent $1.01" in page
    row = page.split('data-tenant="acme" data-period="monthly"')[1].split("</tr>")[0]
    assert "$1.01" in row and "$2.00" in row and "51%" in row


def test_calculator_gives_cost_per_mtok_and_break_even(client, bob):
    client.force_login(bob)
    page = client.get(
        "/billing/calculator/?api_usd_per_mtok=2&gpu_usd_per_hour=3.6&utilisation_percent=50"
        "&tokens_per_second=1000"
    ).content.decode()
    # 1000 tok/s x 50% x 3600 s = 1.8 Mtok per hour -> $3.60 / 1.8 = $2.0000 per Mtok: never wins
    assert 'data-figure="self_per_mtok">$2.0000<' in page
    assert 'data-figure="break_even">never<' in page
    page = client.get(
        "/billing/calculator/?api_usd_per_mtok=4&gpu_usd_per_hour=3.6&utilisation_percent=50"
        "&tokens_per_second=1000"
    ).content.decode()
    # one GPU month = 730 h x $3.60 = $2,628 = 657 Mtok at $4
    assert 'data-figure="break_even">657.0 Mtok/month<' in page and 'data-chart="crossover"' in page


def test_calculator_offers_the_engine_benchmark_and_refuses_bad_input(client, bob):
    client.force_login(bob)
    page = client.get("/billing/calculator/").content.decode()
    assert "output tok/s at 32 streams" in page  # parsed from benchmarks/RESULTS.md
    r = client.get(
        "/billing/calculator/?api_usd_per_mtok=-1&gpu_usd_per_hour=2&utilisation_percent=150"
    )
    text = r.content.decode()
    assert r.status_code == 400
    assert "greater than or equal to 0.000001" in text and "less than or equal to 100" in text
    assert "Pick a measured throughput or enter tokens per second." in text


# ---- prices, terms and alert contacts -------------------------------------------------------

PRICE = {"model": "smollm2-135m-instruct", "input_usd_per_mtok": "0.15",
         "output_usd_per_mtok": "0.6", "effective_from": "2026-01-01 00:00"}  # fmt: skip


def test_viewer_sees_prices_but_cannot_add(client, bob, db):
    client.force_login(bob)
    page = client.get("/billing/prices/").content.decode()
    assert "No price lists" in page and 'id="price-form"' not in page
    assert client.post("/billing/prices/add/", PRICE).status_code == 403
    assert client.post("/billing/terms/add/", {}).status_code == 403
    assert client.post("/billing/contacts/", {}).status_code == 403
    assert not ModelPrice.objects.exists()


def test_admin_adds_a_price_list_in_dollars_stored_in_micro_dollars(client, alice, db):
    client.force_login(alice)
    r = client.post("/billing/prices/add/", {**PRICE, "deployment": "gpu-east"})
    assert r.status_code == 302
    p = ModelPrice.objects.get()
    assert (p.input_micro_usd_per_mtok, p.output_micro_usd_per_mtok, p.deployment) == (
        150_000, 600_000, "gpu-east",
    )  # fmt: skip
    assert p.cached_input_micro_usd_per_mtok is None
    assert p.effective_from == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    page = client.get("/billing/prices/").content.decode()
    assert "$0.15" in page and "in force" in page and "gpu-east" in page
    assert AuditEvent.objects.filter(action="price.create", actor_repr="alice").exists()
    # The same instant twice is refused on the field.
    r = client.post("/billing/prices/add/", {**PRICE, "deployment": "gpu-east"})
    assert r.status_code == 400 and "A price already starts at that instant." in r.content.decode()


@pytest.mark.parametrize(
    "data, message",
    [
        ({**PRICE, "input_usd_per_mtok": "-1"}, "greater than or equal to 0"),
        ({**PRICE, "output_usd_per_mtok": "0.0000001"}, "no more than 6 decimal places"),
        ({k: v for k, v in PRICE.items() if k != "output_usd_per_mtok"}, "This field is required."),
        ({**PRICE, "effective_from": "soon"}, "Enter a valid date/time."),
    ],
)
def test_bad_price_input_gets_form_errors(client, alice, db, data, message):
    client.force_login(alice)
    r = client.post("/billing/prices/add/", data)
    assert r.status_code == 400 and message in r.content.decode()
    assert not ModelPrice.objects.exists()


def test_admin_sets_tenant_terms_and_alert_contacts(client, alice, tenant_a):
    client.force_login(alice)
    r = client.post("/billing/terms/add/", {"tenant": "acme", "discount_percent": "12.5",
                                             "output_usd_per_mtok": "0.3"})  # fmt: skip
    assert r.status_code == 302
    t = TenantPriceOverride.objects.get(tenant=tenant_a)
    assert (t.discount_bp, t.output_micro_usd_per_mtok, t.input_micro_usd_per_mtok) == (
        1250,
        300_000,
        None,
    )
    r = client.post("/billing/terms/add/", {"tenant": "acme", "discount_percent": "101"})
    assert r.status_code == 400 and "less than or equal to 100" in r.content.decode()

    r = client.post("/billing/contacts/", {"tenant": "acme", "alert_emails": "a@x.test, nope",
                                            "webhook_url": ""})  # fmt: skip
    assert (
        r.status_code == 400 and "&#x27;nope&#x27; is not an e-mail address." in r.content.decode()
    )
    r = client.post("/billing/contacts/", {"tenant": "acme", "alert_emails": "a@x.test ,b@x.test",
                                            "webhook_url": "https://hooks.acme.test/billing"})  # fmt: skip
    assert r.status_code == 302
    profile = BillingProfile.objects.get(tenant=tenant_a)
    assert profile.alert_emails == "a@x.test, b@x.test"
    assert profile.webhook_url == "https://hooks.acme.test/billing"
    assert "hooks.acme.test" in client.get("/billing/prices/").content.decode()


def test_calculator_offers_each_deployments_busiest_hour(client, bob, tenant_a):
    hour = NOW.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=3)
    for minute, out in ((5, 3_600), (40, 3_600)):  # 7,200 output tokens in that hour
        UsageRecord.objects.create(
            request_id=f"req_dep_{minute}", tenant=tenant_a, model="m", deployment="gpu-a",
            output_tokens=out, created=hour + dt.timedelta(minutes=minute),
        )  # fmt: skip
    UsageRecord.objects.create(request_id="req_dep_quiet", tenant=tenant_a, model="m",
                               deployment="gpu-a", output_tokens=36, created=hour - dt.timedelta(hours=1))  # fmt: skip
    rollup_usage()
    client.force_login(bob)
    page = client.get("/billing/calculator/").content.decode()
    assert "2.0 output tok/s: deployment gpu-a, busiest hour" in page
    r = client.get(
        "/billing/calculator/?api_usd_per_mtok=1&gpu_usd_per_hour=1&utilisation_percent=100&measured=2.0"
    )
    assert r.status_code == 200 and "at 2.0 tok/s" in r.content.decode()
