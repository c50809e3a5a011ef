"""The cache pages in a real browser: an admin reads a tenant's hit rates and savings, finds
and deletes an entry, purges the rest, opts the tenant into the shared pool and turns the
tier's exact cache off; a viewer sees the figures but no controls."""

import pytest

from serving.cache.models import SemanticCacheEntry
from tenants import services
from tenants.models import Tenant, Tier
from tests.console.cache_data import add_entry, add_traffic
from tests.console.conftest import login
from tests.console.test_browser import accept_next_dialog

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def cached_tenant(tier):
    services.operator_set(username="alice", role="admin", password="alice-pass-123")
    services.operator_set(username="bob", role="viewer", password="bob-pass-123")
    services.tier_update(tier=tier, log_bodies=True)
    acme = services.tenant_create(name="Acme", slug="acme", tier=tier)
    bravo = services.tenant_create(name="Bravo", slug="bravo", tier=tier)
    add_traffic(acme, [("miss", 500_000, 0), ("hit-exact", 0, 2_000_000),
                       ("hit-semantic", 0, 500_000), ("miss", 400_000, 0)])  # fmt: skip
    add_entry(acme, "What is the capital of France?", seed=1)
    add_entry(acme, "How tall is Mount Everest?", seed=2)
    add_entry(acme, "Convert 5 km to miles", seed=3)
    add_entry(bravo, "Bravo only", seed=4)
    return acme


def test_admin_reads_browses_and_purges_a_tenants_cache(page, live_server, shot, cached_tenant):
    login(page, live_server, "alice", "alice-pass-123")
    page.click("header >> text=Cache")
    row = page.locator('tr[data-tenant="acme"]')
    assert "1 (25%)" in row.text_content() and "$2.50" in row.text_content()
    shot("cache-overview")
    row.locator("a").click()
    page.wait_for_url(f"{live_server.url}/tenants/acme/cache/")
    assert page.locator("#exact-hits").text_content().strip() == "1 (25%)"
    assert page.locator("#semantic-hits").text_content().strip() == "1 (25%)"
    assert page.locator("#tokens-saved").text_content().strip() == "60"
    assert page.locator("#dollars-saved").text_content().startswith("$2.50")
    assert page.locator("#cache-entries tbody tr").count() == 3
    assert "Bravo only" not in page.content()
    shot("cache-tenant")

    page.fill("#id_q", "everest")
    page.click("text=Search")
    assert page.locator("#cache-entries tbody tr").count() == 1
    page.locator("#cache-entries tbody tr >> text=Delete").click()
    page.wait_for_selector("text=Cache entry deleted.")
    assert SemanticCacheEntry.objects.filter(tenant=cached_tenant).count() == 2

    accept_next_dialog(page, "Purge every cache entry of acme")
    page.click("#purge-cache")
    page.wait_for_selector("text=Purged 2 semantic and 0 exact entries of acme.")
    assert page.locator("#cache-entries tbody tr").text_content().strip() == "No entries."
    assert SemanticCacheEntry.objects.filter(tenant__slug="bravo").count() == 1

    page.check("#id_cache_shared_pool")
    page.click("#save-pool")
    page.wait_for_selector("text=acme now uses the shared cache.")
    assert page.locator("#pool").text_content().strip() == "shared"
    assert Tenant.objects.get(slug="acme").cache_shared_pool
    shot("cache-tenant-purged")

    page.click("text=edit tier")
    page.uncheck("#id_exact_cache_enabled")
    page.fill("#id_semantic_cache_threshold", "0.92")
    page.fill("#id_cache_hit_price_percent", "10")
    page.click("main button:text('Save')")
    page.wait_for_url(f"{live_server.url}/tiers/")
    tier = Tier.objects.get(name="standard")
    assert not tier.exact_cache_enabled and tier.semantic_cache_enabled
    assert (tier.semantic_cache_threshold, tier.cache_hit_price_percent) == (0.92, 10)


def test_viewer_sees_figures_but_no_controls(page, live_server, shot, cached_tenant):
    login(page, live_server, "bob", "bob-pass-123")
    page.goto(f"{live_server.url}/tenants/acme/cache/")
    assert page.locator("#exact-hits").text_content().strip() == "1 (25%)"
    assert page.locator("#purge-cache").count() == 0
    assert page.locator("#save-pool").count() == 0
    assert page.locator("#cache-entries >> text=Delete").count() == 0
    shot("cache-tenant-viewer")
