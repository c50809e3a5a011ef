"""The routing pages in a real browser (Debian's Chromium through Playwright): an admin adds a
deployment, a group and a rule, tests a route, and watches a dead deployment go into cooldown
on the live deployments page without reloading it."""

import re

import pytest
from playwright.sync_api import expect

from serving.models import Deployment, ModelGroup, RoutingRule
from serving.routing.health_checks import check_deployments
from switchyard.redis_client import get_redis
from tenants import services
from tests.console.conftest import login

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def admin(tier):
    r = get_redis()
    for key in r.scan_iter("sy:dep:br-*"):
        r.delete(key)
    services.tier_update(tier=tier, allowed_models=["smollm2-135m-instruct", "auto"])
    services.tenant_create(name="Acme", slug="acme", tier=tier)
    return services.operator_set(username="alice", role="admin", password="alice-pass-123")


def test_admin_configures_routing_and_tests_a_route(page, live_server, shot, admin):
    login(page, live_server, "alice", "alice-pass-123")
    page.click("header >> text=Routing")
    page.wait_for_url(f"{live_server.url}/routing/")
    page.click("text=New deployment")
    page.fill("#id_name", "br-worker")
    page.fill("#id_model", "smollm2-135m-instruct")
    page.fill("#id_base_url", "http://127.0.0.1:9/v1")
    page.fill("#id_quality", "1.7")
    page.check("input[name=capabilities][value=code]")
    page.click("button:has-text('Save deployment')")
    expect(page.locator(".errors", has_text="less than or equal to 1.0")).to_be_visible()
    shot("routing-deployment-form-errors")
    page.fill("#id_quality", "0.9")
    page.click("button:has-text('Save deployment')")
    page.wait_for_url(f"{live_server.url}/routing/")
    row = page.locator('tr[data-deployment="br-worker"]')
    expect(row.locator(".badge", has_text="healthy")).to_be_visible()

    # Nothing listens on port 9: the active check finds it down, and the page, polling,
    # shows the cooldown without a reload.
    assert not {r.deployment: r.ok for r in check_deployments()}["br-worker"]
    page.wait_for_selector('tr[data-deployment="br-worker"] .badge.suspended')
    assert "cooldown" in row.locator(".health").text_content()
    shot("routing-deployments-cooldown")

    page.click("text=Rules and groups")
    page.click("text=New group")
    page.fill("#id_name", "fast")
    page.select_option("#id_strategy", "power_of_two")
    page.check("input[name=members][value=br-worker]")
    page.click("button:has-text('Save group')")
    page.wait_for_url(f"{live_server.url}/routing/rules/")
    assert ModelGroup.objects.get(name="fast").strategy == "power_of_two"

    page.click("text=New rule")
    page.fill("#id_name", "auto-to-fast")
    page.fill("#id_position", "5")
    page.select_option("#id_target", "fast")
    page.fill("#id_requested_models", "auto")
    page.click("button:has-text('Save rule')")
    page.wait_for_url(f"{live_server.url}/routing/rules/")
    expect(page.locator('tr[data-rule="auto-to-fast"]', has_text="requested auto")).to_be_visible()
    assert RoutingRule.objects.get(name="auto-to-fast").target == "fast"
    shot("routing-rules")

    page.click("text=Test a route")
    page.select_option("#id_tenant", label="acme")
    page.fill("#id_model", "auto")
    page.fill("#id_prompt", "What is the capital of France?")
    page.click("button:has-text('Test route')")
    result = page.locator("#route-result")
    result.wait_for()
    assert "rule auto-to-fast" in re.sub(r"\s+", " ", result.text_content())
    assert "model=fast; deployment=br-worker; rule=auto-to-fast" in result.text_content()
    assert "power_of_two over 1 deployment(s): br-worker" in result.text_content()
    shot("routing-test-route")
    assert Deployment.objects.get(name="br-worker").capabilities == ["code"]
