"""Console pages with the Django test client: who sees what, who may change what, and what the
forms refuse. alice is an operator admin, bob a viewer, charlie has no operator role."""

import re

import pytest

from billing.models import UsageRecord
from tenants import auth, services
from tenants.models import ApiKey, AuditEvent, Budget, Tenant, Tier

PAGES = [
    "/",
    "/tenants/",
    "/tenants/?q=ac&status=active&tier=standard",
    "/tenants/acme/",
    "/tenants/acme/requests/",
    "/tiers/",
    "/audit/",
    "/audit/?action=tenant&q=acme",
    "/traffic/",
    "/playground/",
]
# Tiers are addressed by primary key ({tier} is the standard tier's).
ADMIN_ONLY_PAGES = ["/tenants/new/", "/tenants/acme/edit/", "/tiers/new/", "/tiers/{tier}/edit/"]

TIER_DATA = {
    "name": "pro",
    "requests_per_minute": 600,
    "tokens_per_minute": 1_000_000,
    "tokens_per_day": 20_000_000,
    "max_concurrent_requests": 16,
    "max_output_tokens": 0,
    "allowed_models": ["smollm2-135m-instruct"],
    "default_model": "smollm2-135m-instruct",
    "fairness_weight": 2,
    "semantic_cache_threshold": 0.9,
    "semantic_cache_ttl_seconds": 600,
    "allow_model_override": "on",
}


@pytest.fixture
def as_alice(client, alice, tenant_a):
    client.force_login(alice)
    return client


@pytest.fixture
def as_bob(client, bob, tenant_a):
    client.force_login(bob)
    return client


# ---- who may see ---------------------------------------------------------------------------


@pytest.mark.parametrize("url", PAGES)
def test_every_page_renders_for_admin_and_viewer(client, alice, bob, tenant_a, url):
    for user in (alice, bob):
        client.force_login(user)
        assert client.get(url).status_code == 200, user.username


@pytest.mark.parametrize("url", ADMIN_ONLY_PAGES)
def test_forms_render_for_admin_and_are_refused_to_viewer(client, alice, bob, tenant_a, url):
    url = url.format(tier=tenant_a.tier.pk)
    client.force_login(alice)
    assert client.get(url).status_code == 200
    client.force_login(bob)
    r = client.get(url)
    assert r.status_code == 403 and b"change nothing" in r.content


@pytest.mark.parametrize("url", PAGES + ADMIN_ONLY_PAGES)
def test_anonymous_is_sent_to_login(client, tenant_a, url):
    r = client.get(url.format(tier=tenant_a.tier.pk))
    assert r.status_code == 302 and r["Location"].startswith("/login/?next=")


def test_login_and_logout(client, alice):
    r = client.post("/login/", {"username": "alice", "password": "alice-pass-123"})
    assert r.status_code == 302 and r["Location"] == "/"
    assert client.get("/").status_code == 200
    assert client.post("/logout/").status_code == 302
    assert client.get("/").status_code == 302


def test_wrong_password_is_refused(client, alice):
    r = client.post("/login/", {"username": "alice", "password": "nope"})
    assert r.status_code == 200 and b"correct username and password" in r.content


def test_non_operator_gets_a_clear_403(client, charlie, tenant_a):
    client.force_login(charlie)
    for url in ("/", "/tenants/", "/tenants/acme/", "/audit/"):
        r = client.get(url)
        assert r.status_code == 403 and b"no operator role" in r.content
    r = client.post("/tenants/acme/suspend/")
    assert r.status_code == 403
    tenant_a.refresh_from_db()
    assert tenant_a.is_active


def test_dashboard_shows_real_figures(as_alice, tenant_b, tenant_a):
    services.tenant_suspend(tenant=tenant_b)
    services.api_key_create(tenant=tenant_a, name="one")
    key, _ = services.api_key_create(tenant=tenant_a, name="two")
    services.api_key_revoke(key=key)
    services.budget_set(tenant=tenant_a, period="monthly", limit_micro_usd=5_000_000, hard=True)
    body = as_alice.get("/").content.decode()
    assert re.search(r'data-figure="tenants_total">2<', body)
    assert "1 active · 1 suspended" in body
    assert re.search(r'data-figure="keys_active">1<', body) and "of 2 issued" in body
    assert re.search(r'data-figure="budgets">1<', body) and "1 hard" in body


# ---- viewers change nothing ----------------------------------------------------------------


def test_viewer_sees_no_edit_controls(as_bob, tenant_a):
    services.api_key_create(tenant=tenant_a, name="k")
    services.budget_set(tenant=tenant_a, period="daily", limit_micro_usd=1_000_000)
    pages = "".join(
        as_bob.get(u).content.decode() for u in ("/tenants/", "/tenants/acme/", "/tiers/")
    )
    for control in (
        ">New tenant<",
        ">Issue key<",
        ">Revoke<",
        ">Suspend<",
        ">Delete<",
        ">Set budget<",
        ">Remove<",
        ">Edit<",
        ">New tier<",
    ):
        assert control not in pages, control
    assert '<form method="post" action="/tenants' not in pages


def test_viewer_posts_get_403_and_change_nothing(as_bob, tenant_a):
    key, raw = services.api_key_create(tenant=tenant_a, name="live")
    budget = services.budget_set(tenant=tenant_a, period="daily", limit_micro_usd=1_000_000)
    before = AuditEvent.objects.count()
    posts = [
        ("/tenants/new/", {"name": "X", "slug": "x", "tier": "standard"}),
        ("/tenants/acme/edit/", {"name": "Hacked", "slug": "acme", "tier": "standard"}),
        ("/tenants/acme/suspend/", {}),
        ("/tenants/acme/activate/", {}),
        ("/tenants/acme/delete/", {}),
        ("/tenants/acme/keys/new/", {"name": "k"}),
        (f"/tenants/acme/keys/{key.pk}/revoke/", {}),
        (
            "/tenants/acme/budgets/set/",
            {"period": "monthly", "limit_usd": "5", "hard": "soft", "alert_thresholds": "50"},
        ),
        (f"/tenants/acme/budgets/{budget.pk}/delete/", {}),
        ("/tiers/new/", TIER_DATA),
        (f"/tiers/{tenant_a.tier.pk}/edit/", TIER_DATA | {"name": "standard"}),
        (f"/tiers/{tenant_a.tier.pk}/delete/", {}),
    ]
    for url, data in posts:
        r = as_bob.post(url, data)
        assert r.status_code == 403, url
        assert b"Viewers can look at everything but change nothing" in r.content
    tenant_a.refresh_from_db()
    assert tenant_a.is_active and tenant_a.name == "Acme"
    assert (
        not Tenant.objects.filter(slug="x").exists()
        and not Tier.objects.filter(name="pro").exists()
    )
    assert ApiKey.objects.get().revoked is None and Budget.objects.get().period == "daily"
    assert AuditEvent.objects.count() == before


def test_anonymous_post_changes_nothing(client, tenant_a):
    r = client.post("/tenants/acme/suspend/")
    assert r.status_code == 302 and r["Location"].startswith("/login/")
    tenant_a.refresh_from_db()
    assert tenant_a.is_active


def test_posts_need_a_csrf_token(alice, tenant_a):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alice)
    assert strict.post("/tenants/acme/suspend/").status_code == 403
    tenant_a.refresh_from_db()
    assert tenant_a.is_active


def test_state_changes_refuse_get(as_alice, tenant_a):
    assert as_alice.get("/tenants/acme/suspend/").status_code == 405
    assert as_alice.get("/tenants/acme/delete/").status_code == 405


# ---- tenants -------------------------------------------------------------------------------


def slug_error(response) -> str:
    """The error shown under the slug field."""
    body = response.content.decode()
    return re.search(r'id="id_slug".*?<ul class="errors"><li>([^<]*)</li>', body, re.S).group(1)


def test_create_tenant_and_duplicate_slug_error(as_alice, tier):
    r = as_alice.post("/tenants/new/", {"name": "Zed", "slug": "zed", "tier": "standard"})
    assert r.status_code == 302 and r["Location"] == "/tenants/zed/"
    assert Tenant.objects.filter(slug="zed").exists()
    assert "Tenant zed created." in as_alice.get("/tenants/zed/").content.decode()
    r = as_alice.post("/tenants/new/", {"name": "Zed 2", "slug": "zed", "tier": "standard"})
    assert r.status_code == 200 and slug_error(r) == "Tenant with this Slug already exists."
    assert Tenant.objects.filter(slug="zed").count() == 1


def test_tenant_form_refuses_bad_email_slug_and_tier(as_alice, tier):
    r = as_alice.post(
        "/tenants/new/",
        {"name": "Bad", "slug": "Not A Slug!", "tier": "gold", "contact_email": "not-an-email"},
    )
    body = r.content.decode()
    assert r.status_code == 200
    assert "Enter a valid email address." in body
    assert "Enter a valid “slug”" in body
    assert "Select a valid choice" in body
    assert not Tenant.objects.filter(name="Bad").exists()


def test_edit_tenant(as_alice, tenant_a, tenant_b):
    r = as_alice.post(
        "/tenants/acme/edit/",
        {"name": "Acme Corp", "slug": "acme", "tier": "standard", "contact_email": "x@acme.test"},
    )
    assert r.status_code == 302
    tenant_a.refresh_from_db()
    assert (tenant_a.name, tenant_a.contact_email) == ("Acme Corp", "x@acme.test")
    r = as_alice.post("/tenants/acme/edit/", {"name": "Acme", "slug": "bravo", "tier": "standard"})
    assert r.status_code == 200 and slug_error(r) == "Tenant with this Slug already exists."
    tenant_a.refresh_from_db()
    assert tenant_a.slug == "acme" and tenant_a.name == "Acme Corp"


def test_suspend_and_activate(as_alice, tenant_a):
    r = as_alice.post("/tenants/acme/suspend/", follow=True)
    assert b"suspended" in r.content
    tenant_a.refresh_from_db()
    assert not tenant_a.is_active
    as_alice.post("/tenants/acme/activate/")
    tenant_a.refresh_from_db()
    assert tenant_a.is_active


def test_delete_tenant_without_usage(as_alice, tenant_b):
    r = as_alice.post("/tenants/bravo/delete/", follow=True)
    assert r.redirect_chain[-1][0] == "/tenants/" and b"Tenant bravo deleted." in r.content
    assert not Tenant.objects.filter(slug="bravo").exists()


def test_delete_refused_with_reason_when_tenant_has_usage(as_alice, tenant_a):
    UsageRecord.objects.create(
        request_id="r1", tenant=tenant_a, model="smollm2-135m-instruct", input_tokens=1
    )
    r = as_alice.post("/tenants/acme/delete/", follow=True)
    assert b"has usage records and cannot be deleted; suspend it instead." in r.content
    assert Tenant.objects.filter(slug="acme").exists()


def test_list_search_and_filters(as_alice, tenant_a, tenant_b):
    services.tenant_suspend(tenant=tenant_b)
    body = as_alice.get("/tenants/?status=suspended").content.decode()
    assert "Bravo" in body and "ops@acme" not in body and ">Acme<" not in body
    body = as_alice.get("/tenants/?q=acme.test").content.decode()
    assert ">Acme<" in body and "Bravo" not in body


def test_htmx_search_returns_rows_only(as_alice, tenant_b):
    r = as_alice.get("/tenants/?q=brav", HTTP_HX_REQUEST="true")
    body = r.content.decode()
    assert "<tr>" in body and "Bravo" in body and "Acme" not in body and "<html" not in body
    # The back button restores the whole page, not a fragment.
    r = as_alice.get(
        "/tenants/?q=brav", HTTP_HX_REQUEST="true", HTTP_HX_HISTORY_RESTORE_REQUEST="true"
    )
    assert "<html" in r.content.decode()


# ---- tiers ---------------------------------------------------------------------------------


def test_create_and_edit_tier(as_alice):
    r = as_alice.post("/tiers/new/", TIER_DATA)
    assert r.status_code == 302
    pro = Tier.objects.get(name="pro")
    assert (pro.allowed_models, pro.fairness_weight, pro.semantic_cache_ttl_seconds) == (
        ["smollm2-135m-instruct"],
        2.0,
        600,
    )
    assert pro.allow_model_override
    edited = TIER_DATA | {
        "fairness_weight": 4,
        "allowed_models": [],
        "default_model": "",
        "blocklist": "foo, bar baz",
    }
    del edited["allow_model_override"]
    r = as_alice.post(f"/tiers/{pro.pk}/edit/", edited)
    assert r.status_code == 302
    pro.refresh_from_db()
    assert (pro.fairness_weight, pro.allowed_models, pro.blocklist) == (4.0, [], ["foo", "bar baz"])
    assert not pro.allow_model_override  # an unchecked box is False
    assert "pro" in as_alice.get("/tiers/").content.decode()


def test_tier_form_rejects_negative_limits_and_unknown_models(as_alice):
    data = TIER_DATA | {"name": "bad", "requests_per_minute": -1, "allowed_models": ["gpt-9"]}
    r = as_alice.post("/tiers/new/", data)
    body = r.content.decode()
    assert r.status_code == 200
    assert "greater than or equal to 0" in body and "gpt-9 is not one of the available" in body
    assert not Tier.objects.filter(name="bad").exists()


def test_tier_form_refuses_duplicate_name_and_default_outside_allowed(as_alice, tier):
    r = as_alice.post("/tiers/new/", TIER_DATA | {"name": "standard"})
    assert b"Tier with this Name already exists." in r.content
    r = as_alice.post("/tiers/new/", TIER_DATA | {"default_model": "all-minilm-l6-v2"})
    assert b"The default model must be one of the allowed models." in r.content
    assert Tier.objects.count() == 1


def test_tier_delete_refused_while_in_use(as_alice, tier, tenant_a):
    r = as_alice.post(f"/tiers/{tier.pk}/delete/", follow=True)
    assert b"Tier standard is used by 1 tenant(s); move them first." in r.content
    assert Tier.objects.filter(name="standard").exists()
    spare = services.tier_create(name="spare")
    r = as_alice.post(f"/tiers/{spare.pk}/delete/", follow=True)
    assert b"Tier spare deleted." in r.content and not Tier.objects.filter(name="spare").exists()


# ---- API keys ------------------------------------------------------------------------------


def test_key_is_shown_once_and_never_again(as_alice, tenant_a):
    r = as_alice.post("/tenants/acme/keys/new/", {"name": "prod"})
    assert r.status_code == 200 and r["Cache-Control"] == "no-store"
    body = r.content.decode()
    raw = re.search(r'id="new-key" value="(sy-[^"]+)"', body).group(1)
    assert 'id="copy-key"' in body and "navigator.clipboard" in body and "readonly" in body
    assert "shown only once" in body
    auth.clear_cache()
    assert auth.authenticate_key(raw).tenant == tenant_a
    # Nowhere afterwards: no page, no session, no audit row.
    for url in PAGES:
        assert raw not in as_alice.get(url).content.decode(), url
    assert raw not in str(dict(as_alice.session.items()))
    assert raw not in str(list(AuditEvent.objects.values()))
    assert raw not in r.get("Location", "")


def test_key_list_shows_prefix_name_and_state(as_alice, tenant_a):
    import datetime as dt

    from django.utils import timezone

    services.api_key_create(tenant=tenant_a, name="live")
    old, _ = services.api_key_create(tenant=tenant_a, name="old")
    services.api_key_revoke(key=old)
    soon, _ = services.api_key_create(
        tenant=tenant_a, name="soon", expires=timezone.now() + dt.timedelta(seconds=1)
    )
    ApiKey.objects.filter(pk=soon.pk).update(expires=timezone.now() - dt.timedelta(seconds=1))
    body = as_alice.get("/tenants/acme/").content.decode()
    assert old.display in body
    for state in ("active", "revoked", "expired"):
        assert f'<span class="badge {state}">{state}</span>' in body
    assert body.count('data-revoke="') == 1  # only the active key can be revoked


def test_key_with_expiry_in_the_past_is_refused_on_the_form(as_alice, tenant_a):
    r = as_alice.post("/tenants/acme/keys/new/", {"name": "late", "expires": "2001-01-01T10:00"})
    assert r.status_code == 400 and b"The expiry must be in the future." in r.content
    assert 'id="new-key"' not in r.content.decode()
    assert not ApiKey.objects.exists()


def test_key_with_expiry(as_alice, tenant_a):
    r = as_alice.post("/tenants/acme/keys/new/", {"name": "temp", "expires": "2099-01-01T10:00"})
    assert r.status_code == 200
    key = ApiKey.objects.get()
    assert key.expires.year == 2099 and "2099-01-01 10:00" in r.content.decode()


def test_revoke_key(as_alice, tenant_a):
    key, raw = services.api_key_create(tenant=tenant_a, name="ci")
    r = as_alice.post(f"/tenants/acme/keys/{key.pk}/revoke/")
    assert r.status_code == 302
    auth.clear_cache()
    with pytest.raises(auth.AuthFailure) as err:
        auth.authenticate_key(raw)
    assert err.value.reason == "revoked"


def test_revoke_needs_the_keys_own_tenant(as_alice, tenant_a, tenant_b):
    key, _ = services.api_key_create(tenant=tenant_a, name="ci")
    assert as_alice.post(f"/tenants/bravo/keys/{key.pk}/revoke/").status_code == 404
    key.refresh_from_db()
    assert key.revoked is None


# ---- budgets -------------------------------------------------------------------------------


def test_budget_set_replace_and_remove(as_alice, tenant_a):
    r = as_alice.post(
        "/tenants/acme/budgets/set/",
        {"period": "monthly", "limit_usd": "12.50", "hard": "hard", "alert_thresholds": "80, 50"},
    )
    assert r.status_code == 302
    b = Budget.objects.get(tenant=tenant_a)
    assert (b.limit_micro_usd, b.hard, b.alert_thresholds) == (12_500_000, True, [50, 80])
    assert "$12.50" in as_alice.get("/tenants/acme/").content.decode()
    as_alice.post(
        "/tenants/acme/budgets/set/",
        {"period": "monthly", "limit_usd": "0.000001", "hard": "soft", "alert_thresholds": "100"},
    )
    b.refresh_from_db()
    assert (b.limit_micro_usd, b.hard, b.alert_thresholds) == (1, False, [100])
    r = as_alice.post(f"/tenants/acme/budgets/{b.pk}/delete/", follow=True)
    assert b"Monthly budget removed." in r.content and not Budget.objects.exists()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"limit_usd": "-3"}, "greater than or equal to 0"),
        ({"limit_usd": "1.0000001"}, "no more than 6 decimal places"),
        ({"limit_usd": "ten"}, "Enter a number."),
        ({"alert_thresholds": "50, lots"}, "Use whole percentages"),
        ({"alert_thresholds": "0, 50"}, "between 1 and 1000 percent"),
        ({"period": "weekly"}, "Select a valid choice"),
    ],
)
def test_budget_form_errors_show_on_the_tenant_page(as_alice, tenant_a, data, message):
    good = {"period": "daily", "limit_usd": "5", "hard": "soft", "alert_thresholds": "50, 80"}
    r = as_alice.post("/tenants/acme/budgets/set/", good | data)
    body = r.content.decode()
    assert r.status_code == 400 and message in body
    assert 'id="usage"' in body and "Requests this minute" in body  # the whole page came back
    assert not Budget.objects.exists()


# ---- audit log -----------------------------------------------------------------------------


def test_audit_log_shows_who_what_and_the_change(as_alice, tenant_a, alice):
    services.tenant_update(tenant=tenant_a, name="Acme Corp", actor=alice)
    body = as_alice.get("/audit/?action=tenant.update").content.decode()
    assert "tenant.update" in body and "alice" in body
    assert "<del>&quot;Acme&quot;</del>" in body and "<ins>&quot;Acme Corp&quot;</ins>" in body
    assert "tier.create" not in body.split("<tbody>")[1]


def test_audit_log_search_and_pagination(as_alice, tier, alice):
    for i in range(55):
        services.tenant_create(name=f"T{i}", slug=f"t-{i:02d}", tier=tier, actor=alice)
    first = as_alice.get("/audit/?action=tenant.create").content.decode()
    # 56 creations (acme included): 50 on page 1, newest first; 6 on page 2.
    assert "Page 1 of 2" in first and "t-54" in first and "Older" in first
    second = as_alice.get("/audit/?action=tenant.create&page=2").content.decode()
    assert "Page 2 of 2" in second and "Newer" in second and "t-54" not in second
    found = as_alice.get("/audit/?q=t-07").content.decode()
    assert "t-07" in found and "t-08" not in found


# ---- request log -----------------------------------------------------------------------------


def test_request_log_shows_and_finds_the_client_request_id(as_bob, tenant_a, tenant_b):
    from serving.models import RequestLog

    for i, tenant in enumerate((tenant_a, tenant_a, tenant_b)):
        RequestLog.objects.create(
            request_id=f"req_server_{i}", client_request_id="client-dup-42", tenant=tenant,
            endpoint="chat.completions", status_code=200,
        )  # fmt: skip
    RequestLog.objects.create(
        request_id="req_other", tenant=tenant_a, endpoint="x", status_code=200
    )
    body = as_bob.get("/traffic/?q=client-dup").content.decode()
    assert body.count("client: client-dup-42") == 3 and "req_other" not in body
    # A repeated client id is only a label: every request keeps its own row and server id.
    body = as_bob.get("/tenants/acme/requests/?q=dup-42").content.decode()
    assert "req_server_0" in body and "req_server_1" in body and "req_server_2" not in body
    assert "req_server_1" in as_bob.get("/traffic/?q=req_server_1").content.decode()
