"""The console's cache pages with the Django test client: figures, browsing, purge and the
shared-pool switch; viewers look, admins change, tenant B's entries are out of A's reach."""

import pytest

from serving.cache.models import SemanticCacheEntry
from tenants import services
from tenants.models import AuditEvent, Tier
from tests.console.cache_data import add_entry, add_traffic

PAGES = ["/cache/", "/tenants/acme/cache/", "/tenants/acme/cache/?q=france&page=2"]


@pytest.mark.parametrize("url", PAGES)
def test_cache_pages_render_for_admin_and_viewer_only(client, alice, bob, charlie, tenant_a, url):
    for user in (alice, bob):
        client.force_login(user)
        assert client.get(url).status_code == 200, user.username
    client.force_login(charlie)
    assert client.get(url).status_code == 403
    client.logout()
    assert client.get(url).status_code == 302


def test_tenant_page_shows_hit_rates_savings_and_entries(client, alice, tenant_a, tenant_b):
    services.tier_update(tier=tenant_a.tier, log_bodies=True)
    add_traffic(tenant_a, [("miss", 900_000, 0), ("hit-exact", 0, 900_000),
                           ("hit-semantic", 0, 1_100_000), ("hit-semantic", 0, 1_000_005)])  # fmt: skip
    add_entry(tenant_a, "What is the capital of France?")
    add_entry(tenant_b, "Bravo's secret question", seed=1)
    client.force_login(alice)
    html = client.get("/tenants/acme/cache/").content.decode()
    assert "1 (25%)" in html and "2 (50%)" in html  # exact, semantic hit rates of 4 requests
    saved = html.split('id="dollars-saved">')[1].split("</dd>")[0]
    assert saved.startswith("$3.00 (3,000,005 µ$)")
    assert '<dd id="tokens-saved">90</dd>' in html  # 3 hits x 30 tokens
    assert "What is the capital of France?" in html
    assert "Bravo's secret question" not in html
    overview = client.get("/cache/").content.decode()
    assert 'data-tenant="acme"' in overview and 'data-tenant="bravo"' in overview


def test_search_filters_entries(client, alice, tenant_a):
    services.tier_update(tier=tenant_a.tier, log_bodies=True)
    add_entry(tenant_a, "What is the capital of France?")
    add_entry(tenant_a, "How tall is Everest?", seed=2)
    client.force_login(alice)
    html = client.get("/tenants/acme/cache/?q=everest").content.decode()
    assert "Everest" in html and "France" not in html


def test_prompts_are_hidden_where_the_tier_keeps_no_bodies(client, alice, tenant_a):
    add_entry(tenant_a, "What is my secret diagnosis?")
    client.force_login(alice)
    html = client.get("/tenants/acme/cache/?q=secret").content.decode()
    assert "secret diagnosis" not in html and 'id="bodies-hidden"' in html
    assert 'data-entry="' in html  # the entry is still listed, and can be deleted


def test_admin_purges_a_tenants_entries_only(client, alice, tenant_a, tenant_b):
    add_entry(tenant_a, "a1")
    add_entry(tenant_a, "a2", seed=2)
    add_entry(tenant_b, "b1", seed=3)
    client.force_login(alice)
    r = client.post("/tenants/acme/cache/purge/", follow=True)
    assert "Purged 2 semantic and 0 exact entries" in r.content.decode()
    assert not SemanticCacheEntry.objects.filter(tenant=tenant_a).exists()
    assert SemanticCacheEntry.objects.filter(tenant=tenant_b).count() == 1
    assert AuditEvent.objects.filter(action="cache.purge", actor=alice).count() == 1


def test_admin_deletes_one_entry_but_not_another_tenants(client, alice, tenant_a, tenant_b):
    mine = add_entry(tenant_a, "a1")
    theirs = add_entry(tenant_b, "b1", seed=3)
    client.force_login(alice)
    assert client.post(f"/tenants/acme/cache/entries/{theirs.pk}/delete/").status_code == 404
    assert client.post(f"/tenants/acme/cache/entries/{mine.pk}/delete/").status_code == 302
    assert list(SemanticCacheEntry.objects.values_list("pk", flat=True)) == [theirs.pk]


def test_viewer_cannot_purge_delete_or_switch_pool(client, bob, tenant_a):
    entry = add_entry(tenant_a, "a1")
    client.force_login(bob)
    html = client.get("/tenants/acme/cache/").content.decode()
    assert "Purge all entries" not in html and "save-pool" not in html
    for url in ("/tenants/acme/cache/purge/", f"/tenants/acme/cache/entries/{entry.pk}/delete/",
                "/tenants/acme/cache/pool/"):  # fmt: skip
        assert client.post(url, {"cache_shared_pool": "on"}).status_code == 403
    assert SemanticCacheEntry.objects.filter(pk=entry.pk).exists()
    tenant_a.refresh_from_db()
    assert tenant_a.cache_shared_pool is False


def test_admin_switches_the_shared_pool(client, alice, tenant_a):
    client.force_login(alice)
    client.post("/tenants/acme/cache/pool/", {"cache_shared_pool": "on"})
    tenant_a.refresh_from_db()
    assert tenant_a.cache_shared_pool is True
    assert AuditEvent.objects.filter(action="tenant.update", tenant=tenant_a).exists()
    client.post("/tenants/acme/cache/pool/", {})
    tenant_a.refresh_from_db()
    assert tenant_a.cache_shared_pool is False


def test_tier_form_sets_cache_switches_price_and_cap(client, alice, tier):
    client.force_login(alice)
    data = {
        "name": "standard", "requests_per_minute": 60, "tokens_per_minute": 100_000,
        "tokens_per_day": 1_000_000, "max_concurrent_requests": 4, "max_output_tokens": 0,
        "fairness_weight": 1,
        "semantic_cache_threshold": 0.9, "semantic_cache_ttl_seconds": 120,
        "semantic_cache_enabled": "on", "cache_hit_price_percent": 10, "cache_max_entries": 500,
    }  # fmt: skip
    r = client.post(f"/tiers/{tier.pk}/edit/", data)
    assert r.status_code == 302, r.content.decode()[:2000]
    tier = Tier.objects.get(name="standard")
    assert (tier.exact_cache_enabled, tier.semantic_cache_enabled) == (False, True)
    assert (tier.semantic_cache_threshold, tier.semantic_cache_ttl_seconds) == (0.9, 120)
    assert (tier.cache_hit_price_percent, tier.cache_max_entries) == (10, 500)


def test_tier_form_refuses_a_price_over_100_percent(client, alice, tier):
    client.force_login(alice)
    r = client.post(f"/tiers/{tier.pk}/edit/", {"name": "standard", "cache_hit_price_percent": 150})
    assert r.status_code == 200
    assert "less than or equal to 100" in r.content.decode()
