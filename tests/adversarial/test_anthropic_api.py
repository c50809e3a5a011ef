"""Attacks on the Anthropic side of the gateway: malformed Messages requests, bad keys,
oversized bodies, provider secrets in upstream errors, broken upstream streams, and OpenAI
requests an Anthropic deployment cannot honour. Each gets a clear 4xx/5xx in the caller's
API's error shape (Anthropic's on /v1/messages, OpenAI's on /v1/chat/completions); nothing
crashes (no 500), leaks or goes unmetered."""

from __future__ import annotations

import httpx
import pytest

from billing.models import ModelPrice, UsageRecord
from serving.routing.deployments import deployment_set
from tests.gateway_fixtures import MODEL
from tests.provider_fixtures import provider_url  # noqa: F401 - fixture
from tests.serving.gateway.test_anthropic import CLAUDE, OP_KEY, drain

BASE = {"model": MODEL, "max_tokens": 5}
MALFORMED = [
    {**BASE, "messages": [1]},
    {**BASE, "messages": {"role": "user"}},
    {**BASE, "messages": [{"role": "system", "content": "obey me"}]},
    {**BASE, "messages": [{"role": "user", "content": None}]},
    {**BASE, "messages": [{"role": "user", "content": [1]}]},
    {**BASE, "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
    {**BASE, "messages": [{"role": "user", "content": [{"type": "image", "source": 5}]}]},
    {**BASE, "messages": [{"role": "user", "content": [{"type": "document"}]}]},
    {
        **BASE,
        "messages": [
            {"role": "assistant", "content": [{"type": "tool_use", "id": 1, "input": "x"}]}
        ],
    },
    {**BASE, "messages": [{"role": "user", "content": [{"type": "tool_result", "content": 5}]}]},
    {**BASE, "messages": [{"role": "user", "content": "hi"}], "system": 5},
    {**BASE, "messages": [{"role": "user", "content": "hi"}], "tools": "all"},
    {**BASE, "messages": [{"role": "user", "content": "hi"}], "tool_choice": "auto"},
    {**BASE, "messages": [{"role": "user", "content": "hi"}], "max_tokens": "many"},
    {**BASE, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**30},
    {**BASE, "messages": [{"role": "user", "content": "hi"}], "stop_sequences": 5},
    {**BASE, "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"},
    {"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
    {**BASE, "model": ["x"], "messages": []},
]


def _post(url: str, key: str, body=None, **kw) -> httpx.Response:
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01", **kw.pop("headers", {})}
    return httpx.post(f"{url}/v1/messages", json=body, headers=headers, timeout=30, **kw)


def _anthropic_error(resp: httpx.Response, status: int, kind: str) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == kind and body["error"]["message"]
    return body


@pytest.mark.parametrize("body", MALFORMED)
def test_malformed_messages_requests_are_400s(caller, body):
    _anthropic_error(_post(caller.base_url, caller.key, body), 400, "invalid_request_error")


def test_bodies_that_are_not_objects_too_deep_or_too_big(caller):
    url, key = caller.base_url, caller.key
    for raw in (b"[1]", b"nope", b"[" * 5000 + b"]" * 5000, b'{"model": NaN}'):
        resp = _post(url, key, content=raw, headers={"content-type": "application/json"})
        _anthropic_error(resp, 400, "invalid_request_error")
    huge = {**BASE, "messages": [{"role": "user", "content": "x" * (5 * 1024 * 1024)}]}
    resp = _post(url, key, huge)
    assert resp.status_code == 413
    assert "error" in resp.json()


def test_bad_keys_and_methods(caller):
    body = {**BASE, "messages": [{"role": "user", "content": "hi"}]}
    _anthropic_error(_post(caller.base_url, "sk-guess", body), 401, "authentication_error")
    _anthropic_error(_post(caller.base_url, "", body), 401, "authentication_error")
    # A Basic Authorization does not fall back to x-api-key.
    resp = _post(caller.base_url, caller.key, body, headers={"Authorization": "Basic eDp5"})
    _anthropic_error(resp, 401, "authentication_error")
    resp = httpx.get(f"{caller.base_url}/v1/messages", headers={"x-api-key": caller.key})
    _anthropic_error(resp, 405, "invalid_request_error")
    # A model outside the tenant's tier is not served.
    resp = _post(caller.base_url, caller.key, {**body, "model": CLAUDE})
    assert resp.status_code in (403, 404) and resp.json()["type"] == "error"


@pytest.fixture
def claude_at(make_caller, provider_url):  # noqa: F811 - fixture
    def make(prefix: str):
        deployment_set(
            name=f"claude{prefix.replace('/', '-')}",
            model=CLAUDE,
            kind="anthropic",
            base_url=f"{provider_url}{prefix}/v1",
            api_key=OP_KEY,
            health_check="none",
        )
        ModelPrice.objects.get_or_create(
            model=CLAUDE,
            defaults={
                "input_micro_usd_per_mtok": 1_000_000,
                "output_micro_usd_per_mtok": 1_000_000,
            },
        )
        return make_caller(allowed_models=[CLAUDE], default_model=CLAUDE)

    return make


def test_provider_secrets_never_reach_the_tenant(claude_at):
    caller = claude_at("/unauth")
    body = {"model": CLAUDE, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    resp = _post(caller.base_url, caller.key, body)
    _anthropic_error(resp, 502, "api_error")
    assert OP_KEY not in resp.text and "sk-ant" not in resp.text
    openai_resp = caller.post("/chat/completions", {"model": CLAUDE, "messages": body["messages"]})
    assert openai_resp.status_code == 502
    assert openai_resp.json()["error"]["code"] == "upstream_auth_failed"
    assert "sk-ant" not in openai_resp.text


def test_upstream_error_mid_stream_ends_with_an_error_event_and_is_metered(claude_at):
    caller = claude_at("/streamerror")
    body = {
        "model": CLAUDE,
        "max_tokens": 50,
        "stream": True,
        "messages": [{"role": "user", "content": "many words to stream here"}],
    }
    with httpx.stream(
        "POST",
        f"{caller.base_url}/v1/messages",
        json=body,
        headers={"x-api-key": caller.key},
        timeout=30,
    ) as resp:
        assert resp.status_code == 200
        rid = resp.headers["x-request-id"]
        text = resp.read().decode()
    events = [line[7:] for line in text.splitlines() if line.startswith("event: ")]
    assert events[0] == "message_start" and events[-1] == "error"
    assert "message_stop" not in events
    assert '"type":"api_error"' in text
    drain()
    rec = UsageRecord.objects.get(request_id=rid)
    assert rec.output_tokens > 0 and rec.input_tokens > 0


def test_openai_requests_an_anthropic_deployment_cannot_honour(claude_at):
    caller = claude_at("")
    msgs = [{"role": "user", "content": "hi"}]
    resp = caller.post("/chat/completions", {"model": CLAUDE, "messages": msgs, "n": 3})
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["param"] == "n" and set(err) == {"message", "type", "param", "code"}


def test_a_malformed_anthropic_answer_is_a_clear_502(claude_at):
    """A provider (or a man in the middle) answering garbage with a 200: the tenant gets an
    upstream error, never a 500 or a silently cut answer."""
    caller = claude_at("/garbage")
    msgs = [{"role": "user", "content": "hi"}]
    resp = caller.post("/chat/completions", {"model": CLAUDE, "messages": msgs})
    assert resp.status_code == 502
    assert resp.json()["error"]["code"] == "upstream_error"
    with httpx.stream(
        "POST",
        f"{caller.base_url}/v1/chat/completions",
        json={"model": CLAUDE, "messages": msgs, "stream": True},
        headers={"Authorization": f"Bearer {caller.key}"},
        timeout=30,
    ) as streamed:
        text = streamed.read().decode()
    assert streamed.status_code == 200
    assert '"code":"upstream_error"' in text.replace(" ", "") and "[DONE]" not in text
    resp = _post(caller.base_url, caller.key, {"model": CLAUDE, "max_tokens": 5, "messages": msgs})
    _anthropic_error(resp, 502, "api_error")
