"""GET /v1/usage: a tenant's own usage per day and model, with the unit prices used; it agrees
exactly with the invoice and the raw records, and never shows another tenant's data."""

import datetime as dt

import httpx

from billing import pricing
from billing.invoices import invoice_for
from billing.models import ModelPrice, TenantPriceOverride, UsageRecord
from billing.rollups import rollup_usage
from tests.serving.gateway.conftest import MODEL
from tests.serving.gateway.test_metering import drain

MSG = [{"role": "user", "content": "how much did this cost"}]


def get_usage(caller, **params) -> httpx.Response:
    return httpx.get(
        f"{caller.base_url}/v1/usage",
        params=params,
        headers={"Authorization": f"Bearer {caller.key}"},
        timeout=30,
    )


def today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


def test_usage_agrees_with_records_and_invoice_and_is_tenant_scoped(make_caller, price):
    a = make_caller("usage-a", requests_per_minute=1000)
    b = make_caller("usage-b", requests_per_minute=1000)
    # Tenant A has 20% off from now on; B pays list prices.
    TenantPriceOverride.objects.create(
        tenant=a.tenant, discount_bp=2000, effective_from=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    )
    pricing.clear_cache()
    for i in range(6):
        a.client().chat.completions.create(model=MODEL, messages=MSG, max_tokens=3 + i)
    b.client().chat.completions.create(model=MODEL, messages=MSG, max_tokens=50)
    drain()
    rollup_usage()
    # One more request after the rollup ran: still counted (raw records above the watermark).
    a.client().chat.completions.create(model=MODEL, messages=MSG, max_tokens=9)
    drain()

    r = get_usage(a, start=today(), end=today())
    assert r.status_code == 200, r.text
    body = r.json()
    (row,) = body["data"]
    records = UsageRecord.objects.filter(tenant=a.tenant)
    assert row["requests"] == records.count() == 7
    assert row["model"] == MODEL and row["date"] == today()
    assert row["input_tokens"] == sum(x.input_tokens for x in records)
    assert row["output_tokens"] == sum(x.output_tokens for x in records)
    assert row["cost_micro_usd"] == sum(x.cost_micro_usd for x in records)
    assert row["unit_prices"] == {
        "input_micro_usd_per_mtok": 80_000,
        "output_micro_usd_per_mtok": 320_000,
        "cached_input_micro_usd_per_mtok": 80_000,
    }
    assert body["total"]["cost_micro_usd"] == row["cost_micro_usd"]
    now = dt.datetime.now(dt.UTC)
    invoice = invoice_for(tenant=a.tenant, month=now.date().replace(day=1))
    assert invoice.total_micro_usd == body["total"]["cost_micro_usd"]
    assert [(li.requests, li.output_price) for li in invoice.lines] == [(7, 320_000)]

    # B sees only its own single request, at list prices.
    (brow,) = get_usage(b, start=today(), end=today()).json()["data"]
    assert brow["requests"] == 1 and brow["unit_prices"]["output_micro_usd_per_mtok"] == 400_000


def test_price_change_shows_as_separate_rows_with_their_unit_prices(make_caller, price):
    a = make_caller("usage-p", requests_per_minute=1000)
    a.client().chat.completions.create(model=MODEL, messages=MSG, max_tokens=4)
    ModelPrice.objects.create(
        model=MODEL, input_micro_usd_per_mtok=200_000, output_micro_usd_per_mtok=900_000
    )
    a.client().chat.completions.create(model=MODEL, messages=MSG, max_tokens=4)
    drain()
    rows = get_usage(a, start=today(), end=today()).json()["data"]
    assert sorted(r["unit_prices"]["output_micro_usd_per_mtok"] for r in rows) == [400_000, 900_000]
    assert all(r["requests"] == 1 for r in rows)


def test_bad_dates_get_a_400_naming_the_param(make_caller):
    a = make_caller("usage-e")
    cases = [
        ({"end": today()}, "start", "Missing query parameter 'start'"),
        ({"start": "2026-13-01", "end": today()}, "start", "YYYY-MM-DD"),
        ({"start": today(), "end": "yesterday"}, "end", "YYYY-MM-DD"),
        ({"start": "2026-11-20", "end": "2026-11-19"}, "end", "must not be before"),
        ({"start": "2024-01-01", "end": "2026-01-01"}, "end", "at most 366 days"),
    ]
    for params, param, text in cases:
        r = get_usage(a, **params)
        assert r.status_code == 400, params
        err = r.json()["error"]
        assert err["param"] == param and text in err["message"]
        assert err["type"] == "invalid_request_error"


def test_usage_needs_a_valid_key(make_caller, gateway):
    r = httpx.get(f"{gateway.url}/v1/usage", params={"start": today(), "end": today()})
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    r = httpx.get(
        f"{gateway.url}/v1/usage",
        params={"start": today(), "end": today()},
        headers={"Authorization": "Bearer sy-not-a-real-key"},
    )
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    a = make_caller("usage-m")
    r = httpx.post(f"{a.base_url}/v1/usage", headers={"Authorization": f"Bearer {a.key}"})
    assert r.status_code == 405 and r.headers["Allow"] == "GET"
