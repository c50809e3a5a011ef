"""Attack: an operator (or a tenant, through what it sends and the console later shows) puts
hostile text in a name: a quote that closes inline JavaScript (stored XSS between operators),
markup, a ``/`` that broke the tier list's URLs (a 500), NUL, unicode.

Defence: no data in inline scripts (confirmations read a data attribute), everything escaped,
objects with free-text names addressed by primary key in URLs, query parameters cleaned; viewers
change nothing and every form needs its CSRF token. Each page is rendered for real with the
Django test client, and once in Chromium to prove the payload does not run."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.test import Client
from django.utils.html import escape

from billing import services as billing_services
from billing.models import Alert, UsageRecord
from serving.models import DeadLetter, ModelGroup, RequestLog, RoutingRule
from serving.routing.deployments import deployment_set
from serving.routing.services import model_group_set, routing_rule_set
from tenants import services
from tenants.models import AuditEvent, Tier
from tests.console.cache_data import add_entry
from tests.console.conftest import browser, login, page  # noqa: F401 - fixtures

SCRIPT = "x'</script><script>window.__pwned=1</script>"
IMG = '"><img src=x onerror=window.__pwned=2>'
OTHERS = ["a/b", "../..", "ünïcødé 名前 ✓", "%2F?q=1#frag", "{{ x }} {% y %}", 'q"uote\\']
NAMES = [SCRIPT, IMG, *OTHERS]
# What must never reach a page unescaped.
RAW = ["<script>window.__pwned", "<img src=x onerror", "</script><script>"]

TIER_DATA = {
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
}


def hostile_world(tier) -> dict:
    """Every console object with a free-text field, filled with hostile text: made through the
    services (and, for what tenants control, the way ingestion stores it)."""
    tiers = [services.tier_create(name=n, description=IMG, log_bodies=True) for n in NAMES]
    tenant = services.tenant_create(name=SCRIPT, slug="hostile", tier=tiers[0])
    services.api_key_create(tenant=tenant, name=IMG)
    services.budget_set(tenant=tenant, period="daily", limit_micro_usd=1_000_000, hard=True)
    dep = deployment_set(name="dep-hostile", model=SCRIPT, upstream_model=IMG,
                         base_url="http://127.0.0.1:9/v1")  # fmt: skip
    groups = [model_group_set(name=n, strategy="weighted", members=[dep.name], description=IMG)
              for n in NAMES]  # fmt: skip
    rule = routing_rule_set(name="hostile-rule", target=SCRIPT, tier=tiers[1],
                            metadata_key=IMG, metadata_value=SCRIPT, requested_models=[IMG])  # fmt: skip
    billing_services.price_set(model=SCRIPT, deployment=IMG, input_micro_usd_per_mtok=1,
                               output_micro_usd_per_mtok=2)  # fmt: skip
    billing_services.tenant_terms_set(tenant=tenant, model=SCRIPT, discount_bp=100)
    now = dt.datetime.now(dt.UTC)
    RequestLog.objects.create(
        request_id="req_hostile", client_request_id=SCRIPT, tenant=tenant, endpoint=IMG[:32],
        model=SCRIPT, deployment=IMG, status_code=400, error_code=SCRIPT, route=IMG,
        request_body={"model": SCRIPT}, created=now,
    )  # fmt: skip
    UsageRecord.objects.create(
        request_id="req_hostile", tenant=tenant, model=SCRIPT, deployment=IMG, input_tokens=1,
        output_tokens=1, cost_micro_usd=5, created=now,
    )  # fmt: skip
    Alert.objects.create(kind="budget", tenant=tenant, dedupe_key="hostile", subject=SCRIPT,
                         message=IMG, delivery_error=SCRIPT)  # fmt: skip
    letter = DeadLetter.objects.create(stream="sy:requestlog", entry_id="1-0",
                                       payload={"request_id": SCRIPT, "model": IMG}, error=IMG)  # fmt: skip
    add_entry(tenant, SCRIPT)
    return {"tiers": tiers, "tenant": tenant, "dep": dep, "groups": groups, "rule": rule,
            "letter": letter}  # fmt: skip


def pages(world) -> list[str]:
    slug, month = world["tenant"].slug, dt.datetime.now(dt.UTC).strftime("%Y-%m")
    urls = [
        "/", "/tenants/", f"/tenants/?q={SCRIPT}", f"/tenants/{slug}/", f"/tenants/{slug}/edit/",
        f"/tenants/{slug}/requests/", f"/tenants/{slug}/requests/?q={SCRIPT}", "/tiers/",
        "/tiers/new/", "/audit/", f"/audit/?q={SCRIPT}", "/traffic/", f"/traffic/?q={IMG}",
        "/playground/", "/billing/", f"/billing/?tenant={slug}", "/billing/alerts/",
        "/billing/invoices/", f"/billing/invoices/{slug}/{month}/", "/billing/prices/",
        "/billing/calculator/", "/cache/", f"/tenants/{slug}/cache/",
        f"/tenants/{slug}/cache/?q={SCRIPT}", "/routing/", "/routing/rules/", "/routing/test/",
        f"/routing/deployments/{world['dep'].name}/edit/", f"/routing/rules/{world['rule'].pk}/edit/",
        "/dead-letters/", f"/dead-letters/?stream={SCRIPT}",
    ]  # fmt: skip
    urls += [f"/tiers/{t.pk}/edit/" for t in world["tiers"]]
    urls += [f"/routing/tiers/{t.pk}/" for t in world["tiers"]]
    urls += [f"/routing/groups/{g.pk}/edit/" for g in world["groups"]]
    return urls


def is_form(url: str) -> bool:
    """Pages that change something: admins only."""
    return "/edit/" in url or url.endswith("/new/") or url.startswith("/routing/tiers/")


def assert_safe(resp, url: str) -> str:
    assert resp.status_code == 200, (url, resp.status_code)
    body = resp.content.decode()
    for raw in RAW:
        assert raw not in body, (url, raw)
    return body


def test_hostile_names_render_escaped_on_every_page(client, alice, bob, tier):
    world = hostile_world(tier)
    for user in (alice, bob):
        client.force_login(user)
        for url in pages(world):
            if user == bob and is_form(url):
                assert client.get(url).status_code == 403, url
            else:
                assert_safe(client.get(url), url)
    client.force_login(alice)
    tiers = assert_safe(client.get("/tiers/"), "/tiers/")
    for name in NAMES:
        assert escape(name) in tiers
    # The confirmation text travels in an escaped attribute, not in JavaScript.
    assert f'data-confirm="Delete tier {escape(SCRIPT)}?"' in tiers
    assert "onsubmit=" not in tiers and "confirm(" not in tiers.split("</head>")[1]
    letters = assert_safe(client.get("/dead-letters/"), "/dead-letters/")
    assert escape(IMG) in letters


def test_hostile_names_through_the_console_forms(client, alice, tier):
    client.force_login(alice)
    for name in NAMES:
        r = client.post("/tiers/new/", TIER_DATA | {"name": name, "description": SCRIPT})
        assert r.status_code == 302, (name, r.content.decode()[:500])
        r = client.post("/routing/groups/new/", {"name": name, "strategy": "weighted"})
        assert r.status_code == 302, name
    assert_safe(client.get("/tiers/"), "/tiers/")
    assert_safe(client.get("/routing/rules/"), "/routing/rules/")
    for t in Tier.objects.filter(name__in=NAMES):
        assert_safe(client.get(f"/tiers/{t.pk}/edit/"), t.name)
        assert_safe(client.get(f"/routing/tiers/{t.pk}/"), t.name)
    for g in ModelGroup.objects.filter(name__in=NAMES):
        assert_safe(client.get(f"/routing/groups/{g.pk}/edit/"), g.name)
    # Edit and delete the tier named with a slash through its own URLs.
    slash = Tier.objects.get(name="a/b")
    r = client.post(f"/tiers/{slash.pk}/edit/", TIER_DATA | {"name": "a/b", "fairness_weight": 3})
    assert r.status_code == 302
    assert client.post(f"/tiers/{slash.pk}/delete/").status_code == 302
    assert not Tier.objects.filter(name="a/b").exists()
    # NUL is refused by the forms with a message, never a 500.
    for url, data in (
        ("/tiers/new/", TIER_DATA | {"name": "nul\x00tier"}),
        ("/routing/groups/new/", {"name": "nul\x00group", "strategy": "weighted"}),
        ("/tenants/new/", {"name": "nul\x00", "slug": "nul", "tier": "standard"}),
    ):
        r = client.post(url, data)
        assert r.status_code == 200 and "Null characters are not allowed." in r.content.decode()
    assert not Tier.objects.filter(name__startswith="nul").exists()


def test_nul_and_markup_in_query_parameters_never_500(client, alice, tenant_a):
    client.force_login(alice)
    DeadLetter.objects.create(stream="sy:usage", entry_id="1-0", payload={}, error="x")
    for url in (
        "/tenants/?q=%00&status=%00&tier=%00", "/audit/?q=a%00b&action=%00",
        "/traffic/?q=%00&model=%00&status=%00", "/tenants/acme/requests/?q=%00&model=x%00",
        "/dead-letters/?stream=%00&page=%00", "/billing/alerts/?kind=%00&page=%00",
        "/billing/invoices/?month=%00", "/billing/?tenant=%00&start=%00",
        "/billing/export.csv?tenant=%00", "/tenants/acme/cache/?q=%00",
        "/billing/calculator/?api_usd_per_mtok=%00", f"/tenants/?q={'x' * 5000}",
    ):  # fmt: skip
        r = client.get(url)
        assert r.status_code in (200, 400, 404), (url, r.status_code)
        assert "<script>" not in r.content.decode().split("</head>")[-1]


def admin_posts(world) -> list[tuple[str, dict]]:
    """One POST per console action that changes something."""
    slug, tier = world["tenant"].slug, world["tiers"][0]
    key = world["tenant"].api_keys.first()
    budget = world["tenant"].budgets.first()
    entry = world["tenant"].semantic_cache_entries.first()
    return [
        ("/tenants/new/", {"name": "X", "slug": "x", "tier": "standard"}),
        (f"/tenants/{slug}/edit/", {"name": "Hacked", "slug": slug, "tier": "standard"}),
        (f"/tenants/{slug}/suspend/", {}), (f"/tenants/{slug}/activate/", {}),
        (f"/tenants/{slug}/delete/", {}), (f"/tenants/{slug}/keys/new/", {"name": "k"}),
        (f"/tenants/{slug}/keys/{key.pk}/revoke/", {}),
        (f"/tenants/{slug}/budgets/set/", {"period": "monthly", "limit_usd": "5", "hard": "soft",
                                           "alert_thresholds": "50"}),
        (f"/tenants/{slug}/budgets/{budget.pk}/delete/", {}),
        ("/tiers/new/", TIER_DATA | {"name": "pro"}),
        (f"/tiers/{tier.pk}/edit/", TIER_DATA | {"name": "renamed"}),
        (f"/tiers/{tier.pk}/delete/", {}),
        (f"/tenants/{slug}/cache/purge/", {}), (f"/tenants/{slug}/cache/pool/", {"cache_shared_pool": "on"}),
        (f"/tenants/{slug}/cache/entries/{entry.pk}/delete/", {}),
        ("/routing/deployments/new/", {"name": "d2", "model": "m", "kind": "local_worker",
                                       "base_url": "http://127.0.0.1:9/v1", "weight": 1}),
        (f"/routing/deployments/{world['dep'].name}/edit/", {"model": "m"}),
        ("/routing/rules/new/", {"position": 1, "name": "r2", "target": SCRIPT}),
        (f"/routing/rules/{world['rule'].pk}/edit/", {"position": 1, "target": SCRIPT}),
        (f"/routing/rules/{world['rule'].pk}/delete/", {}),
        ("/routing/groups/new/", {"name": "g2", "strategy": "weighted"}),
        (f"/routing/groups/{world['groups'][0].pk}/edit/", {"strategy": "cheapest"}),
        (f"/routing/tiers/{tier.pk}/", {"quality_floor": 0.5}),
        ("/billing/prices/add/", {"model": "m", "input_usd_per_mtok": "1", "output_usd_per_mtok": "1"}),
        ("/billing/terms/add/", {"tenant": slug, "discount_percent": "10"}),
        ("/billing/contacts/", {"tenant": slug, "alert_emails": "a@b.test"}),
        (f"/dead-letters/{world['letter'].pk}/retry/", {}),
        (f"/dead-letters/{world['letter'].pk}/delete/", {}),
    ]  # fmt: skip


def test_viewers_change_nothing(client, bob, tier):
    world = hostile_world(tier)
    client.force_login(bob)
    counts = (AuditEvent.objects.count(), DeadLetter.objects.count(), RoutingRule.objects.count())
    for url, data in admin_posts(world):
        r = client.post(url, data)
        assert r.status_code == 403, url
        assert b"Viewers can look at everything but change nothing" in r.content
    assert counts == (
        AuditEvent.objects.count(),
        DeadLetter.objects.count(),
        RoutingRule.objects.count(),
    )
    world["tenant"].refresh_from_db()
    assert world["tenant"].is_active and world["tenant"].name == SCRIPT


def test_every_console_change_needs_its_csrf_token(alice, tier):
    world = hostile_world(tier)
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    before = AuditEvent.objects.count(), DeadLetter.objects.count()
    for url, data in admin_posts(world) + [("/logout/", {})]:
        r = client.post(url, data)
        assert r.status_code == 403 and b"CSRF" in r.content, url
    assert (AuditEvent.objects.count(), DeadLetter.objects.count()) == before
    # With the token from the page, the same change goes through (the check is not vacuous).
    page_html = client.get("/dead-letters/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page_html).group(1)
    r = client.post(f"/dead-letters/{world['letter'].pk}/delete/", {"csrfmiddlewaretoken": token})
    assert r.status_code == 302 and not DeadLetter.objects.exists()


def test_admin_retries_a_dead_letter(client, alice, tenant_a):
    client.force_login(alice)
    now = dt.datetime.now(dt.UTC).isoformat()
    fields = {"request_id": "req_dl", "tenant_id": "987654", "status_code": "200",
              "endpoint": "chat.completions", "created": now}  # fmt: skip
    letter = DeadLetter.objects.create(stream="sy:requestlog", entry_id="1-0", payload=fields,
                                       error="IntegrityError: tenant gone")  # fmt: skip
    r = client.post(f"/dead-letters/{letter.pk}/retry/", follow=True)
    assert "still cannot be stored" in r.content.decode()
    assert DeadLetter.objects.get().error.startswith("IntegrityError")
    letter.payload["tenant_id"] = str(tenant_a.pk)  # the cause fixed
    letter.save()
    r = client.post(f"/dead-letters/{letter.pk}/retry/", follow=True)
    assert "stored." in r.content.decode() and not DeadLetter.objects.exists()
    assert RequestLog.objects.get(request_id="req_dl").tenant == tenant_a


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_hostile_tier_name_does_not_run_in_a_browser(page, live_server, tier):  # noqa: F811
    world = hostile_world(tier)
    admin = services.operator_set(username="alice", role="admin", password="alice-pass-123")
    assert admin
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    login(page, live_server, "alice", "alice-pass-123")
    slug = world["tenant"].slug
    for url in ("/tiers/", "/routing/rules/", f"/tenants/{slug}/", f"/tenants/{slug}/cache/",
                "/dead-letters/", "/traffic/", "/billing/alerts/", "/billing/prices/"):  # fmt: skip
        page.goto(f"{live_server.url}{url}")
        assert page.evaluate("typeof window.__pwned") == "undefined", url
    # The inline handler the name used to break: the confirm shows the name as text, and
    # dismissing it keeps the tier.
    page.goto(f"{live_server.url}/tiers/")
    messages: list[str] = []

    def on_dialog(dialog):
        messages.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    row = page.locator("tr", has_text="window.__pwned=1").first
    row.locator("button:has-text('Delete')").click()
    page.wait_for_timeout(300)
    assert messages == [f"Delete tier {SCRIPT}?"]
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert Tier.objects.filter(name=SCRIPT).exists()
    assert not errors, errors
