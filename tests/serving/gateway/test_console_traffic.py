"""The console's gateway pages in a real browser, served by the ASGI gateway process:
the playground streams a chat through /v1 with a tenant key, the live traffic feed and the
tenant's request log show it, and the tenant page shows usage against its limits."""

import pytest

from serving.request_log import request_log_ingestor
from switchyard.redis_client import get_redis
from tenants import services
from tests.console.conftest import browser, page, shot  # noqa: F401 - fixtures

pytestmark = pytest.mark.browser


def test_playground_streams_through_the_gateway_and_traffic_shows_it(
    make_caller, gateway, page, shot
):
    caller = make_caller(slug="playco")
    services.operator_set(username="alice", role="admin", password="alice-pass-123")
    page.goto(f"{gateway.url}/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "alice-pass-123")
    page.click("button[type=submit]")
    page.wait_for_url(f"{gateway.url}/")
    page.goto(f"{gateway.url}/playground/")
    page.fill("#pg-key", caller.key)
    page.click("#pg-send")
    page.wait_for_function(
        "document.getElementById('output').textContent.includes('capital of France')"
    )
    page.wait_for_function("document.getElementById('pg-meta').textContent.includes('first token')")
    assert page.locator("#output").text_content() == "echo: What is the capital of France?"
    assert "deployment=instant" in page.locator("#pg-meta").text_content()
    shot("playground")

    page.fill("#pg-key", "sy-wrong")
    page.click("#pg-send")
    page.wait_for_function("document.getElementById('output').textContent.startsWith('Error')")

    request_log_ingestor.drain(get_redis())
    page.goto(f"{gateway.url}/traffic/")
    page.wait_for_selector("#request-rows >> text=playco")
    shot("traffic")
    page.goto(f"{gateway.url}/tenants/playco/requests/")
    assert page.locator("#request-rows tr").count() >= 1
    page.goto(f"{gateway.url}/tenants/playco/")
    usage = page.locator("#usage").text_content()
    assert "Requests this minute" in usage and "Tokens today" in usage
    shot("tenant-usage")
