"""Console pages with the Django test client: who sees what, who may change what."""

import re

import pytest

from billing.models import UsageRecord
from tenants import auth, services
from tenants.models import ApiKey, AuditEvent, Budget, Tenant, Tier

PAGES = ["/", "/tenants/", "/tenants/acme/", "/tiers/", "/audit/", "/tenants/?q=ac&status=active"]


@pytest.fixture
def as_alice(client, alice, tenant_a):
    client.force_login(alice)
    return client


@pytest.fixture
def as_bob(client, bob, tenant_a):
    client.force_login(bob)
    return client


@pytest.mark.parametrize("url", PAGES)
def test_every_page_renders_for_admin_and_viewer(client, alice, bob, tenant_a, url):
    for user in (alice, bob):
        client.force_login(user)
        assert client.get(url).status_code == 200


def test_anonymous_is_sent_to_login(client, db):
    r = client.get("/tenants/")
    assert r.status_code == 302 and r["Location"].startswith("/login/")


def test_non_operator_gets_403(client, charlie):
    client.force_login(charlie)
    r = client.get("/")
    assert r.status_code == 403 and b"no operator role" in r.content


def test_dashboard_shows_real_figures(as_alice, tenant_b):
    body = as_alice.get("/").content.decode()
    assert re.search(r'data-figure="tenants_total">2<', body)


def test_viewer_sees_no_edit_controls_and_cannot_post(as_bob, tenant_a):
    page = as_bob.get("/tenants/acme/").content.decode()
    assert "Issue key" not in page and "Suspend" not in page and "New tenant" not in page
    posts = [
        ("/tenants/new/", {"name": "X", "slug": "x", "tier": "standard"}),
        ("/tenants/acme/suspend/", {}),
        ("/tenants/acme/delete/", {}),
        ("/tenants/acme/keys/new", {"name": "k"}),
        (
            "/tenants/acme/budgets/set",
            {"period": "daily", "limit_usd": "5", "alert_thresholds": "50"},
        ),
        ("/tiers/new/", {"name": "t"}),
        ("/tiers/standard/delete/", {}),
    ]
    for url, data in posts:
        assert as_bob.post(url, data).status_code == 403, url
    tenant_a.refresh_from_db()
    assert tenant_a.is_active and not Tenant.objects.filter(slug="x").exists()
    assert not ApiKey.objects.exists() and not Budget.objects.exists()


def test_create_tenant_and_duplicate_slug_error(as_alice, tier):
    r = as_alice.post("/tenants/new/", {"name": "Zed", "slug": "zed", "tier": "standard"})
    assert r.status_code == 302 and Tenant.objects.filter(slug="zed").exists()
    r = as_alice.post("/tenants/new/", {"name": "Zed 2", "slug": "zed", "tier": "standard"})
    assert r.status_code == 200 and b"already exists" in r.content
    assert Tenant.objects.filter(slug="zed").count() == 1


def test_tier_form_rejects_negative_limits_and_unknown_models(as_alice):
    data = {
        "name": "bad",
        "requests_per_minute": -1,
        "tokens_per_minute": 10,
        "tokens_per_day": 10,
        "max_concurrent_requests": 1,
        "fairness_weight": 1,
        "semantic_cache_threshold": 0.95,
        "semantic_cache_ttl_seconds": 3600,
        "allowed_models": ["gpt-9"],
    }
    r = as_alice.post("/tiers/new/", data)
    body = r.content.decode()
    assert r.status_code == 200
    assert "greater than or equal to 0" in body and "gpt-9 is not one of the available" in body
    assert not Tier.objects.filter(name="bad").exists()


def test_key_is_shown_once_and_never_again(as_alice, tenant_a):
    r = as_alice.post("/tenants/acme/keys/new", {"name": "prod"})
    assert r.status_code == 200 and r["Cache-Control"] == "no-store"
    raw = re.search(r'value="(sy-[^"]+)"', r.content.decode()).group(1)
    auth.clear_cache()
    assert auth.authenticate_key(raw).tenant == tenant_a
    for url in PAGES:
        assert raw not in as_alice.get(url).content.decode()
    assert raw not in str(list(AuditEvent.objects.values()))


def test_revoke_key(as_alice, tenant_a):
    key, raw = services.api_key_create(tenant=tenant_a, name="ci")
    r = as_alice.post(f"/tenants/acme/keys/{key.pk}/revoke")
    assert r.status_code == 302
    auth.clear_cache()
    with pytest.raises(auth.AuthFailure):
        auth.authenticate_key(raw)


def test_budget_form(as_alice, tenant_a):
    r = as_alice.post(
        "/tenants/acme/budgets/set",
        {"period": "monthly", "limit_usd": "12.50", "hard": "on", "alert_thresholds": "80, 50"},
    )
    assert r.status_code == 302
    b = Budget.objects.get(tenant=tenant_a)
    assert (b.limit_micro_usd, b.hard, b.alert_thresholds) == (12_500_000, True, [50, 80])
    assert "$12.50" in as_alice.get("/tenants/acme/").content.decode()
    r = as_alice.post(
        "/tenants/acme/budgets/set",
        {"period": "daily", "limit_usd": "-3", "alert_thresholds": "50"},
    )
    assert r.status_code == 400 and Budget.objects.filter(tenant=tenant_a).count() == 1


def test_delete_refused_with_reason_when_tenant_has_usage(as_alice, tenant_a):
    UsageRecord.objects.create(request_id="r1", tenant=tenant_a, model="m", input_tokens=1)
    r = as_alice.post("/tenants/acme/delete/", follow=True)
    assert b"has usage records" in r.content
    assert Tenant.objects.filter(slug="acme").exists()


def test_suspend_and_activate(as_alice, tenant_a):
    as_alice.post("/tenants/acme/suspend/")
    tenant_a.refresh_from_db()
    assert not tenant_a.is_active
    as_alice.post("/tenants/acme/activate/")
    tenant_a.refresh_from_db()
    assert tenant_a.is_active


def test_audit_log_shows_changes(as_alice, tenant_a, alice):
    services.tenant_update(tenant=tenant_a, name="Acme Corp", actor=alice)
    body = as_alice.get("/audit/?action=tenant.update").content.decode()
    assert "tenant.update" in body and "Acme Corp" in body and "alice" in body


def test_htmx_search_returns_rows_only(as_alice, tenant_b):
    r = as_alice.get("/tenants/?q=brav", HTTP_HX_REQUEST="true")
    body = r.content.decode()
    assert "<tr>" in body and "Bravo" in body and "Acme" not in body and "<html" not in body


def test_traffic_and_request_log_pages(as_alice, tenant_a):
    from serving.models import RequestLog

    RequestLog.objects.create(request_id="req_x", tenant=tenant_a, endpoint="chat.completions",
                              model="smollm2-135m-instruct", status_code=429,
                              error_code="rate_limit_exceeded")
    body = as_alice.get("/traffic/").content.decode()
    assert "req_x" in body and "rate_limit_exceeded" in body
    rows = as_alice.get("/traffic/?status=ok", HTTP_HX_REQUEST="true").content.decode()
    assert "req_x" not in rows
    assert "req_x" in as_alice.get("/tenants/acme/requests/?status=error").content.decode()
    assert "Requests this minute" in as_alice.get("/tenants/acme/").content.decode()
    assert as_alice.get("/playground/").status_code == 200
