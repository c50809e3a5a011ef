"""A hostile tenant against tools and structured output, through the real gateway: a prompt
smuggled into tool definitions, calls or tool results counts like any prompt; schemas built to
make the worker's grammar compiler blow up get a clear 400 (or are served) without stalling
another tenant's stream; tools and images cannot reach a deployment that cannot take them."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from serving.routing.deployments import deployment_set
from tests.gateway_fixtures import MODEL

ASK = [{"role": "user", "content": "Hello"}]
TEXT = "lorem ipsum dolor sit amet " * 8_000  # ~216 KB, ~50,000 tokens
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def _tools_upstream(upstream_url: str, **fields) -> None:
    deployment_set(name="instant", model=MODEL, base_url=f"{upstream_url}/tools/v1",
                   context_window=1_000_000, capabilities=["tools"], **fields)  # fmt: skip


SMUGGLED = {
    "tool description": {
        "tools": [{"type": "function", "function": {"name": "f", "description": TEXT}}]
    },
    "tool parameters": {
        "tools": [
            {
                "type": "function",
                "function": {"name": "f", "parameters": {"type": "object", "description": TEXT}},
            }
        ]
    },
    "call arguments": {
        "messages": [
            *ASK,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "f", "arguments": json.dumps({"x": TEXT})},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        ],
        "tools": [TOOL],
    },
    "tool result": {
        "messages": [*ASK, {"role": "tool", "tool_call_id": "c1", "content": TEXT}],
        "tools": [TOOL],
    },
}


@pytest.mark.parametrize("where", list(SMUGGLED))
def test_a_prompt_smuggled_into_tools_counts_against_the_limits(make_caller, upstream_url, where):
    """A tier allowing 20,000 tokens a minute refuses ~50,000 tokens of text wherever they
    hide, as it refuses them in a user message (before, tool definitions counted nothing)."""
    caller = make_caller(tokens_per_minute=20_000)
    _tools_upstream(upstream_url)
    body = {"model": MODEL, "messages": ASK, "max_tokens": 16, **SMUGGLED[where]}
    r = caller.post("/chat/completions", json=body)
    assert r.status_code == 429, r.text[:300]
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert "this request needs about" in r.json()["error"]["message"]
    small = {"model": MODEL, "messages": ASK, "max_tokens": 16, "tools": [TOOL]}
    assert caller.post("/chat/completions", json=small).status_code == 200


def test_tools_never_reach_a_deployment_without_the_capability(make_caller, upstream_url):
    """Smuggling tools past the capability check: tool messages alone, a named tool_choice,
    images in a text-and-image list: each is a 400 before the (failing) upstream is called."""
    caller = make_caller()
    deployment_set(name="instant", model=MODEL, base_url=f"{upstream_url}/fail/v1",
                   capabilities=[])  # fmt: skip
    image = {"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest"}}
    bodies = [
        {"messages": [*ASK, {"role": "tool", "tool_call_id": "x", "content": "hi"}]},
        {"messages": ASK, "tools": [TOOL], "tool_choice": "none"},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, image]}]},
    ]
    for extra in bodies:
        r = caller.post("/chat/completions", json={"model": MODEL, **extra})
        assert r.status_code == 400, r.text[:300]
        error = r.json()["error"]
        assert error["code"] == "unsupported_capability"
        assert set(error) >= {"message", "type", "param", "code"}


def _hostile_schemas() -> dict[str, dict]:
    chain: dict = {"type": "string"}
    for _ in range(19):  # as deep as the gateway's JSON depth limit lets a schema go
        chain = {"anyOf": [{"type": "array", "items": chain}, {"type": "integer"}]}
    wide = {
        "anyOf": [
            {
                "type": "object",
                "properties": {f"k{i}": {"type": "string", "pattern": f"(x|y)*{i}(x|y){{20}}"}},
                "required": [f"k{i}"],
            }
            for i in range(300)
        ]
    }
    return {
        "recursion": chain,
        "exponential regex": {"type": "string", "pattern": "(a|b)*a(a|b){60}"},
        "5,000 required properties": {
            "type": "object",
            "properties": {f"p{i}": {"type": "string"} for i in range(5000)},
            "required": [f"p{i}" for i in range(5000)],
        },
        "300 regex alternatives": wide,
        "bad type": {"type": "object", "properties": {"a": {"type": "strange"}}},
    }


def test_hostile_schemas_beside_an_honest_stream(make_caller, worker):
    """Each hostile schema is compiled off the worker's event loop and engine thread: it gets
    a 400 in OpenAI's shape or an answer (cut by max_tokens: finish_reason length, no 502),
    within a minute on a loaded machine, and an honest greedy request running beside them all
    gets the same answer, token for token, as alone."""
    honest, hostile = make_caller(), make_caller()
    deployment_set(name="instant", model=MODEL, base_url=f"{worker.url}/v1", kind="local_worker",
                   api_key=worker.token, capabilities=["tools"])  # fmt: skip
    prompt = [{"role": "user", "content": "Write a short poem about the sea."}]
    fair = {"model": MODEL, "messages": prompt, "max_tokens": 32, "temperature": 0}

    async def post(client: httpx.AsyncClient, key: str, body: dict) -> tuple[int, dict, float]:
        t0 = time.perf_counter()
        r = await client.post("/v1/chat/completions", json=body,
                              headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        return r.status_code, r.json(), time.perf_counter() - t0

    async def run():
        async with httpx.AsyncClient(base_url=honest.base_url, timeout=300) as client:
            alone = await post(client, honest.key, fair)
            attacks = [
                post(
                    client,
                    hostile.key,
                    {
                        "model": MODEL,
                        "messages": ASK,
                        "max_tokens": 8,
                        "temperature": 0,
                        "response_format": {
                            "type": "json_schema",
                            "json_schema": {"name": "x", "schema": schema},
                        },
                    },
                )  # fmt: skip
                for schema in _hostile_schemas().values()
            ]
            together = await asyncio.gather(post(client, honest.key, fair), *attacks)
            return alone, together

    alone, (beside, *attacked) = asyncio.run(run())
    assert alone[0] == beside[0] == 200
    assert beside[1]["choices"][0]["message"] == alone[1]["choices"][0]["message"]
    for name, (status, body, seconds) in zip(_hostile_schemas(), attacked, strict=True):
        assert status in (200, 400), (name, status, body)
        assert seconds < 60, (name, seconds)
        if status == 400:
            assert body["error"]["message"] and body["error"]["type"], name
    statuses = dict(zip(_hostile_schemas(), (a[0] for a in attacked), strict=True))
    assert statuses["bad type"] == 400
    bad = attacked[list(_hostile_schemas()).index("bad type")][1]["error"]
    assert bad["code"] == "invalid_schema" and set(bad) >= {"message", "type", "param", "code"}
