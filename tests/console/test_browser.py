"""The console in a real browser: log in, create a tenant, issue and revoke a key, and a
viewer who cannot change anything. A screenshot of every page lands in
test-artifacts/screenshots/."""

import re

import pytest

from tenants import auth, services
from tenants.models import Tenant
from tests.console.conftest import login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def cast(tier):
    admin = services.operator_set(username="alice", role="admin", password="alice-pass-123")
    viewer = services.operator_set(username="bob", role="viewer", password="bob-pass-123")
    return admin, viewer


def test_login_page_and_bad_password(page, live_server, shot, cast):
    page.goto(f"{live_server.url}/")
    assert "/login/" in page.url
    shot("login")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "wrong")
    page.click("button[type=submit]")
    assert page.locator(".errorlist").is_visible()


def test_admin_creates_tenant_issues_and_revokes_key(page, live_server, shot, cast):
    login(page, live_server, "alice", "alice-pass-123")
    shot("dashboard")
    page.click("text=Tenants")
    page.click("text=New tenant")
    page.fill("#id_name", "Acme Browser")
    page.fill("#id_slug", "acme-browser")
    page.select_option("#id_tier", "standard")
    page.fill("#id_contact_email", "ops@acme.test")
    shot("tenant-form")
    page.click("button:has-text('Create tenant')")
    page.wait_for_url(re.compile(r".*/tenants/acme-browser/$"))
    assert Tenant.objects.filter(slug="acme-browser").exists()

    page.fill("#key-form #id_name", "production")
    page.click("button:has-text('Issue key')")
    key_input = page.locator("#new-key")
    raw = key_input.input_value()
    assert raw.startswith("sy-")
    assert page.locator("#copy-key").is_visible()
    shot("key-created")
    auth.clear_cache()
    assert auth.authenticate_key(raw).tenant.slug == "acme-browser"

    page.click("text=Done")
    assert raw not in page.content()
    page.fill("#budget-form #id_limit_usd", "25")
    page.check("#budget-form #id_hard")
    page.click("button:has-text('Set budget')")
    assert page.locator("text=$25.00").first.is_visible()
    shot("tenant-detail")

    page.once("dialog", lambda d: d.accept())
    page.click("button:has-text('Revoke')")
    page.wait_for_selector(".badge.revoked")
    auth.clear_cache()
    with pytest.raises(auth.AuthFailure) as err:
        auth.authenticate_key(raw)
    assert err.value.reason == "revoked"

    page.click("text=Tenants")
    page.fill("#q", "browser")
    page.wait_for_selector("#tenant-rows >> text=Acme Browser")
    shot("tenant-list")
    page.click("text=Tiers")
    shot("tier-list")
    page.click("text=New tier")
    shot("tier-form")
    page.click("text=Audit log")
    assert page.locator("td.mono", has_text="api_key.revoke").first.is_visible()
    shot("audit-log")


def test_viewer_sees_everything_and_can_change_nothing(page, live_server, shot, cast, tenant_a):
    login(page, live_server, "bob", "bob-pass-123")
    page.goto(f"{live_server.url}/tenants/acme/")
    assert page.locator("text=API keys").is_visible()
    assert page.locator("button:has-text('Issue key')").count() == 0
    assert page.locator("button:has-text('Suspend')").count() == 0
    page.goto(f"{live_server.url}/tenants/")
    assert page.locator("text=New tenant").count() == 0
    shot("viewer-tenants")
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
    tenant_a.refresh_from_db()
    assert tenant_a.is_active
