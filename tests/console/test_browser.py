"""The console in a real browser (Debian's Chromium through Playwright): log in, create a
tenant, issue a key and copy it, revoke it, set a budget, manage tiers, and a viewer who cannot
change anything. Every page is photographed into test-artifacts/screenshots/."""

import re

import pytest
from playwright.sync_api import expect

from billing.models import UsageRecord
from tenants import auth, services
from tenants.models import Budget, Tenant, Tier
from tests.console.conftest import login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def cast(tier):
    """The cast of tests/conftest.py, made inside this transactional test's database."""
    admin = services.operator_set(username="alice", role="admin", password="alice-pass-123")
    viewer = services.operator_set(username="bob", role="viewer", password="bob-pass-123")
    return admin, viewer


def accept_next_dialog(page, expected: str) -> None:
    """Accept the next confirm() and check that it says what it is about to do."""

    def on_dialog(dialog):
        assert expected in dialog.message, dialog.message
        dialog.accept()

    page.once("dialog", on_dialog)


def test_login_page_and_bad_password(page, live_server, shot, cast):
    page.goto(f"{live_server.url}/tenants/")
    assert "/login/?next=/tenants/" in page.url
    shot("login")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "wrong")
    page.click("button[type=submit]")
    expect(page.locator(".errorlist")).to_be_visible()
    shot("login-error")
    page.fill("#id_password", "alice-pass-123")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/tenants/")
    page.click("text=Log out")
    page.wait_for_url(re.compile(r".*/login/$"))


def test_admin_creates_tenant_issues_copies_and_revokes_key(page, live_server, shot, cast):
    login(page, live_server, "alice", "alice-pass-123")
    assert page.locator('[data-figure="tenants_total"]').text_content() == "0"
    shot("dashboard")

    page.click("header >> text=Tenants")
    page.click("text=New tenant")
    page.fill("#id_name", "Acme Browser")
    page.fill("#id_slug", "acme-browser")
    page.select_option("#id_tier", "standard")
    page.fill("#id_contact_email", "not-an-email")
    page.click("button:has-text('Create tenant')")
    expect(page.locator(".errors", has_text="Enter a valid email address.")).to_be_visible()
    assert not Tenant.objects.filter(slug="acme-browser").exists()
    shot("tenant-form-errors")
    page.fill("#id_contact_email", "ops@acme.test")
    page.click("button:has-text('Create tenant')")
    page.wait_for_url(re.compile(r".*/tenants/acme-browser/$"))
    expect(page.locator(".messages", has_text="Tenant acme-browser created.")).to_be_visible()

    # Issue a key: shown once, selectable, with a working copy button.
    page.fill("#key-form #id_name", "production")
    page.click("button:has-text('Issue key')")
    raw = page.locator("#new-key").input_value()
    assert raw.startswith("sy-")
    assert page.locator("#new-key").get_attribute("readonly") is not None
    expect(page.locator(".warning", has_text="shown only once")).to_be_visible()
    page.click("#copy-key")
    page.wait_for_selector("#copy-key:has-text('Copied')")
    assert page.evaluate("navigator.clipboard.readText()") == raw
    shot("key-created")
    auth.clear_cache()
    assert auth.authenticate_key(raw).tenant.slug == "acme-browser"

    page.click("text=Done")
    page.wait_for_url(re.compile(r".*/tenants/acme-browser/$"))
    assert raw not in page.content()
    expect(page.locator("td.mono", has_text=raw[:9])).to_be_visible()  # the prefix, not the key

    # A budget in dollars; a negative one is refused on the form.
    page.fill("#budget-form #id_limit_usd", "-5")
    page.click("button:has-text('Set budget')")
    expect(
        page.locator("#budget-form .errors", has_text="greater than or equal to 0")
    ).to_be_visible()
    page.fill("#budget-form #id_limit_usd", "25")
    page.select_option("#budget-form #id_hard", "hard")
    page.click("button:has-text('Set budget')")
    expect(page.locator(".messages", has_text="Daily budget saved.")).to_be_visible()
    assert Budget.objects.get().limit_micro_usd == 25_000_000
    expect(page.locator("td", has_text="$25.00").first).to_be_visible()
    shot("tenant-detail")

    accept_next_dialog(page, "Revoke")
    page.click("button:has-text('Revoke')")
    page.wait_for_selector(".badge.revoked")
    auth.clear_cache()
    with pytest.raises(auth.AuthFailure) as err:
        auth.authenticate_key(raw)
    assert err.value.reason == "revoked"

    accept_next_dialog(page, "Suspend acme-browser?")
    page.click("button:has-text('Suspend')")
    page.wait_for_selector("h1 .badge.suspended")
    assert not Tenant.objects.get(slug="acme-browser").is_active
    accept_next_dialog(page, "Activate acme-browser?")
    page.click("button:has-text('Activate')")
    page.wait_for_selector("h1 .badge.active")

    # Deleting a tenant with usage is refused with the reason.
    UsageRecord.objects.create(
        request_id="req-browser-1", tenant=Tenant.objects.get(slug="acme-browser"),
        model="smollm2-135m-instruct", input_tokens=3, output_tokens=5,
    )  # fmt: skip
    accept_next_dialog(page, "Delete acme-browser")
    page.click("button:has-text('Delete')")
    expect(
        page.locator(".messages .error", has_text="cannot be deleted; suspend it instead")
    ).to_be_visible()
    assert Tenant.objects.filter(slug="acme-browser").exists()
    shot("tenant-delete-refused")

    page.click("text=Edit")
    page.fill("#id_name", "Acme Browser Ltd")
    shot("tenant-edit")
    page.click("button:has-text('Save')")
    page.wait_for_selector("h1:has-text('Acme Browser Ltd')")

    page.click("header >> text=Audit log")
    expect(page.locator("td.mono", has_text="api_key.revoke").first).to_be_visible()
    expect(page.locator(".diff ins", has_text="Acme Browser Ltd")).to_be_visible()
    shot("audit-log")


def test_tenant_list_live_search_and_filters(page, live_server, shot, cast, tier):
    services.tenant_create(name="Acme", slug="acme", tier=tier, contact_email="ops@acme.test")
    bravo = services.tenant_create(name="Bravo", slug="bravo", tier=tier)
    services.tenant_suspend(tenant=bravo)
    login(page, live_server, "alice", "alice-pass-123")
    page.goto(f"{live_server.url}/tenants/")
    assert page.locator("#tenant-rows tr").count() == 2
    page.fill("#q", "acme")  # htmx swaps the rows as you type; no submit
    page.wait_for_function("document.querySelectorAll('#tenant-rows tr').length === 1")
    assert page.locator("#tenant-rows").text_content().count("Acme") == 1
    assert "q=acme" in page.url  # the filtered list has a URL of its own
    page.fill("#q", "")
    page.select_option("#status", "suspended")
    page.wait_for_selector("#tenant-rows >> text=Bravo")
    page.wait_for_function("document.querySelectorAll('#tenant-rows tr').length === 1")
    shot("tenant-list")


def test_admin_manages_tiers(page, live_server, shot, cast, tier):
    services.tenant_create(name="Acme", slug="acme", tier=tier)
    login(page, live_server, "alice", "alice-pass-123")
    page.click("header >> text=Tiers")
    page.click("text=New tier")
    page.fill("#id_name", "pro")
    page.fill("#id_requests_per_minute", "-1")
    page.click("button:has-text('Create tier')")
    expect(page.locator(".errors", has_text="greater than or equal to 0")).to_be_visible()
    shot("tier-form-errors")
    page.fill("#id_requests_per_minute", "600")
    page.check("input[name=allowed_models][value='smollm2-135m-instruct']")
    page.select_option("#id_default_model", "smollm2-135m-instruct")
    page.fill("#id_fairness_weight", "2.5")
    page.fill("#id_semantic_cache_threshold", "0.9")
    page.fill("#id_semantic_cache_ttl_seconds", "900")
    page.uncheck("#id_allow_model_override")
    shot("tier-form")
    page.click("button:has-text('Create tier')")
    page.wait_for_url(re.compile(r".*/tiers/$"))
    pro = Tier.objects.get(name="pro")
    assert (pro.requests_per_minute, pro.allowed_models, pro.fairness_weight) == (
        600, ["smollm2-135m-instruct"], 2.5)  # fmt: skip
    assert (pro.semantic_cache_ttl_seconds, pro.allow_model_override) == (900, False)

    page.click(f"a[href='/tiers/{pro.pk}/edit/']")
    page.fill("#id_tokens_per_day", "5000000")
    shot("tier-edit")
    page.click("button:has-text('Save')")
    page.wait_for_url(re.compile(r".*/tiers/$"))
    assert Tier.objects.get(name="pro").tokens_per_day == 5_000_000

    accept_next_dialog(page, "Delete tier standard?")
    page.locator("tr", has_text="standard").locator("button:has-text('Delete')").click()
    expect(page.locator(".messages .error", has_text="used by 1 tenant(s)")).to_be_visible()
    shot("tier-list")
    accept_next_dialog(page, "Delete tier pro?")
    page.locator("tr", has_text="pro").locator("button:has-text('Delete')").click()
    expect(page.locator(".messages", has_text="Tier pro deleted.")).to_be_visible()
    assert not Tier.objects.filter(name="pro").exists()


def test_viewer_sees_everything_and_can_change_nothing(page, live_server, shot, cast, tier):
    acme = services.tenant_create(name="Acme", slug="acme", tier=tier)
    services.api_key_create(tenant=acme, name="production")
    services.budget_set(tenant=acme, period="monthly", limit_micro_usd=100_000_000, hard=True)
    login(page, live_server, "bob", "bob-pass-123")
    expect(page.locator("header .who", has_text="bob · viewer")).to_be_visible()
    page.goto(f"{live_server.url}/tenants/acme/")
    expect(page.locator("h2", has_text="API keys")).to_be_visible()
    expect(page.locator("td", has_text="$100.00").first).to_be_visible()
    assert page.locator("main form[method=post]").count() == 0
    for label in ("Edit", "Suspend", "Delete", "Revoke", "Issue key", "Set budget", "Remove"):
        assert (
            page.locator(f"main button:has-text('{label}'), main a:has-text('{label}')").count()
            == 0
        )
    shot("viewer-tenant-detail")
    page.goto(f"{live_server.url}/tenants/")
    assert page.locator("text=New tenant").count() == 0
    shot("viewer-tenants")
    page.goto(f"{live_server.url}/tiers/")
    assert (
        page.locator("main button, main a:has-text('Edit'), main a:has-text('New tier')").count()
        == 0
    )
    # A forged POST with a valid CSRF token from the page is still refused.
    status = page.evaluate(
        """async () => {
            const token = document.cookie.split('; ').find(c => c.startsWith('csrftoken=')).split('=')[1];
            const r = await fetch('/tenants/acme/suspend/', {method: 'POST',
                headers: {'X-CSRFToken': token}});
            return r.status;
        }"""
    )
    assert status == 403
    assert Tenant.objects.get(slug="acme").is_active
    page.goto(f"{live_server.url}/tenants/new/")
    expect(page.locator("h1", has_text="Not allowed")).to_be_visible()


def test_non_operator_gets_a_clear_refusal(page, live_server, shot, charlie):
    login(page, live_server, "charlie", "charlie-pass-123")
    expect(page.locator("h1", has_text="Not allowed")).to_be_visible()
    expect(page.locator("text=Your account has no operator role.")).to_be_visible()
    assert page.locator("header nav").count() == 0
    shot("forbidden")
