"""Console routing pages with the Django test client: deployments with live health, rules
and groups, the dry-run route test. alice is an admin, bob a viewer (tests/conftest.py)."""

from __future__ import annotations

import pytest

from serving.models import Deployment, ModelGroup, RoutingRule
from serving.routing.deployments import deployment_set
from serving.routing.health import DeploymentHealthSync
from serving.routing.health_checks import check_deployments
from serving.routing.services import routing_rule_set
from switchyard.redis_client import get_redis
from tenants import services
from tenants.models import AuditEvent

PAGES = ["/routing/", "/routing/rules/", "/routing/test/"]
ADMIN_PAGES = ["/routing/deployments/new/", "/routing/rules/new/", "/routing/groups/new/"]
DEP = {
    "name": "cv-worker", "model": "smollm2-135m-instruct", "kind": "local_worker",
    "base_url": "http://127.0.0.1:9/v1", "weight": 2, "max_concurrency": 8,
    "context_window": 8192, "timeout_seconds": 30, "quality": 0.9,
    "health_check": "health", "enabled": "on", "capabilities": ["code"],
}  # fmt: skip


@pytest.fixture(autouse=True)
def _no_stale_health():
    r = get_redis()
    for key in r.scan_iter("sy:dep:cv-*"):
        r.delete(key)


@pytest.mark.parametrize("url", PAGES)
def test_routing_pages_render_for_admin_and_viewer(client, alice, bob, tenant_a, url):
    for user in (alice, bob):
        client.force_login(user)
        assert client.get(url).status_code == 200


@pytest.mark.parametrize("url", ADMIN_PAGES)
def test_viewers_cannot_open_or_post_routing_forms(client, bob, url):
    client.force_login(bob)
    assert client.get(url).status_code == 403
    assert client.post(url, {}).status_code == 403


def test_admin_creates_a_deployment_and_bad_input_is_a_form_error(client, alice):
    client.force_login(alice)
    bad = {**DEP, "base_url": "not a url", "quality": "1.5"}
    resp = client.post("/routing/deployments/new/", bad)
    assert resp.status_code == 200
    assert "Enter a valid URL." in resp.content.decode()
    assert "less than or equal to 1.0" in resp.content.decode()
    assert not Deployment.objects.filter(name="cv-worker").exists()

    resp = client.post("/routing/deployments/new/", {**DEP, "api_key": "sk-upstream-secret"})
    assert resp.status_code == 302
    dep = Deployment.objects.get(name="cv-worker")
    assert (dep.weight, dep.quality, dep.capabilities, dep.has_api_key) == (2, 0.9, ["code"], True)
    assert (
        "sk-upstream-secret"
        not in client.get("/routing/deployments/cv-worker/edit/").content.decode()
    )
    assert AuditEvent.objects.filter(
        action="deployment.create", object_repr__startswith="cv-worker"
    ).exists()

    resp = client.post("/routing/deployments/cv-worker/edit/", {**DEP, "weight": 5, "api_key": ""})
    assert resp.status_code == 302
    dep.refresh_from_db()
    assert dep.weight == 5 and dep.has_api_key  # an empty key field keeps the stored key


def test_deployment_list_shows_live_cooldown_from_the_health_check(client, bob):
    deployment_set(name="cv-dead", model="smollm2-135m-instruct", base_url="http://127.0.0.1:9/v1")
    client.force_login(bob)
    assert "healthy" in client.get("/routing/", HTTP_HX_REQUEST="true").content.decode()
    results = {r.deployment: r for r in check_deployments()}
    assert not results["cv-dead"].ok
    row = client.get("/routing/", HTTP_HX_REQUEST="true").content.decode()
    assert "cooldown" in row and "unreachable" in row
    assert DeploymentHealthSync(get_redis()).snapshot(["cv-dead"])["cv-dead"].cooling()


def test_rules_and_groups_are_created_ordered_and_validated(client, alice, tier):
    deployment_set(name="cv-a", model="smollm2-135m-instruct", base_url="http://127.0.0.1:9/v1")
    client.force_login(alice)
    resp = client.post("/routing/groups/new/", {"name": "fast", "strategy": "least_connections",
                                                "members": ["cv-a"]})  # fmt: skip
    assert resp.status_code == 302
    assert ModelGroup.objects.get(name="fast").members.get().name == "cv-a"

    rule = {"position": 20, "name": "long", "enabled": "on", "target": "fast",
            "min_prompt_tokens": 100, "max_prompt_tokens": 10}  # fmt: skip
    resp = client.post("/routing/rules/new/", rule)
    assert "Must be at least the minimum." in resp.content.decode()
    resp = client.post("/routing/rules/new/", {**rule, "max_prompt_tokens": "", "tier": tier.pk})
    assert resp.status_code == 302
    client.post("/routing/rules/new/", {"position": 10, "name": "first", "enabled": "on",
                                        "target": "fast", "requested_models": "auto, fast"})  # fmt: skip
    assert list(RoutingRule.objects.values_list("name", flat=True)) == ["first", "long"]
    assert RoutingRule.objects.get(name="first").requested_models == ["auto", "fast"]
    page = client.get("/routing/rules/").content.decode()
    assert page.index('data-rule="first"') < page.index('data-rule="long"')
    assert "prompt ≥ 100 tokens" in page

    pk = RoutingRule.objects.get(name="long").pk
    assert client.post(f"/routing/rules/{pk}/delete/").status_code == 302
    assert not RoutingRule.objects.filter(name="long").exists()
    assert AuditEvent.objects.filter(action="routing_rule.delete").exists()


def test_the_dry_run_explains_the_decision_without_calling_a_model(client, bob, tenant_a):
    deployment_set(name="cv-big", model="cv-long", base_url="http://127.0.0.1:9/v1")
    deployment_set(name="cv-small", model="smollm2-135m-instruct", base_url="http://127.0.0.1:9/v1")
    routing_rule_set(name="long-prompts", position=1, min_prompt_tokens=1000, target="cv-long")
    services.tier_update(tier=tenant_a.tier, allowed_models=["smollm2-135m-instruct", "auto"])
    tenant_a.refresh_from_db()
    client.force_login(bob)
    form = {"tenant": tenant_a.pk, "model": "auto", "prompt": "word " * 2000, "max_tokens": 16}
    page = client.post("/routing/test/", form).content.decode()
    assert "rule <strong>long-prompts</strong>" in page
    assert "model=cv-long; deployment=cv-big; rule=long-prompts" in page

    page = client.post("/routing/test/", {**form, "prompt": "hi"}).content.decode()
    assert "rule `long-prompts` skipped: prompt ~" in page
    assert "tier-default" in page

    page = client.post("/routing/test/", {**form, "metadata": "no equals sign"}).content.decode()
    assert "Write key=value, one a line" in page


def test_the_dry_run_says_why_a_request_would_be_refused(client, bob, tenant_a):
    client.force_login(bob)
    form = {"tenant": tenant_a.pk, "model": "auto", "prompt": "hi"}
    page = client.post("/routing/test/", form).content.decode()
    assert "Refused: 404" in page and "model_not_found" in page
    page = client.post("/routing/test/", {**form, "model": "smollm2-135m-instruct"}).content
    assert "No deployment is serving" in page.decode()
    assert "no rule matched: the tier" in page.decode()  # the reasons up to the refusal


def test_admin_sets_a_tiers_quality_floor_and_request_budget(client, alice, bob, tier):
    client.force_login(bob)
    assert client.post(f"/routing/tiers/{tier.pk}/", {"quality_floor": 0.5}).status_code == 403
    client.force_login(alice)
    resp = client.post(f"/routing/tiers/{tier.pk}/", {"quality_floor": 1.5})
    assert "less than or equal to 1.0" in resp.content.decode()
    resp = client.post(f"/routing/tiers/{tier.pk}/",
                       {"quality_floor": 0.9, "request_budget_usd": "0.0025"})  # fmt: skip
    assert resp.status_code == 302
    tier.refresh_from_db()
    assert (tier.quality_floor, tier.request_budget_micro_usd) == (0.9, 2500)
    assert f'data-tier="{tier.name}"' in client.get("/routing/rules/").content.decode()
    assert AuditEvent.objects.filter(action="tier.update", after__quality_floor=0.9).exists()
