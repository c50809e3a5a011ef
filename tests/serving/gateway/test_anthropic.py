"""The Anthropic API both ways, against real processes.

Outbound: the gateway calls a deployment of kind ``anthropic`` (the Messages API stand-in in
serving.anthropic_upstream) for OpenAI clients: translation of the request (system, turns,
tools, images, max_tokens, stop), the answer, streaming events, usage and stop reasons, and
the error paths. Inbound: the official ``anthropic`` SDK calls the gateway's ``/v1/messages``
(JSON and ``messages.stream``), through the same pipeline (limits, metering).
"""

from __future__ import annotations

import json

import anthropic
import httpx
import openai
import pytest
import pytest_asyncio

from billing.models import ModelPrice, UsageRecord
from billing.usage import usage_ingestor
from serving.gateway import upstream
from serving.gateway.validation import CHAT_PARAMS
from serving.models import Deployment
from serving.providers.anthropic import (
    DEFAULT_MAX_TOKENS,
    MessageStreamWriter,
    from_messages_request,
    to_messages_request,
)
from serving.request_log import request_log_ingestor
from serving.routing.deployments import Target, deployment_set
from serving.routing.failover import retryable
from switchyard.redis_client import get_redis
from tests.provider_fixtures import last_request, provider_url  # noqa: F401 - fixture
from tests.serving.gateway.conftest import MODEL

CLAUDE = "claude-test"
OP_KEY = "sk-ant-operator-secret"


def drain() -> None:
    usage_ingestor.drain(get_redis())
    request_log_ingestor.drain(get_redis())


@pytest.fixture
def claude(make_caller, provider_url):  # noqa: F811 - fixture
    """A tenant whose tier may call the local model and an Anthropic deployment."""
    deployment_set(
        name="claude",
        model=CLAUDE,
        kind="anthropic",
        base_url=f"{provider_url}/v1",
        api_key=OP_KEY,
        context_window=200_000,
        health_check="none",
        # Requests with tools or images need these capabilities (where the gateway has them).
        capabilities=[c for c in ("tools", "vision") if c in Deployment.Capability.values],
    )
    ModelPrice.objects.create(
        model=CLAUDE, input_micro_usd_per_mtok=3_000_000, output_micro_usd_per_mtok=15_000_000
    )
    return make_caller(allowed_models=[MODEL, CLAUDE], requests_per_minute=1000)


def _target(provider_url: str, prefix: str = "") -> Target:  # noqa: F811
    return Target(
        name="claude-direct",
        model=CLAUDE,
        upstream_model="claude-upstream",
        kind="anthropic",
        base_url=f"{provider_url}{prefix}/v1",
        api_key=OP_KEY,
        weight=1,
        max_concurrency=8,
        context_window=1000,
        timeout_seconds=10,
    )


# ---- outbound: OpenAI clients -> anthropic deployment -----------------------------------


def test_chat_completion_is_translated_both_ways(claude, provider_url):  # noqa: F811
    resp = claude.client().chat.completions.create(
        model=CLAUDE,
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first turn"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "hello there"},
        ],
        max_tokens=50,
        temperature=1.5,
        top_p=0.9,
        stop=["never"],
    )
    seen = last_request(provider_url)
    assert seen["path"] == "/v1/messages"
    assert seen["headers"]["x-api-key"] == OP_KEY
    assert seen["headers"]["anthropic-version"] == "2023-06-01"
    assert "authorization" not in seen["headers"]
    body = seen["body"]
    assert body["system"] == "be brief"
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][-1]["content"] == [{"type": "text", "text": "hello there"}]
    assert body["max_tokens"] == 50 and body["temperature"] == 1.0 and body["top_p"] == 0.9
    assert body["stop_sequences"] == ["never"]
    assert body["model"] == CLAUDE
    choice = resp.choices[0]
    assert choice.message.content == "echo: hello there"
    assert choice.finish_reason == "stop"
    assert resp.model == CLAUDE
    # input_tokens excludes cache reads at Anthropic; OpenAI's prompt_tokens includes them.
    assert resp.usage.prompt_tokens_details.cached_tokens == 2
    assert resp.usage.completion_tokens == 3
    assert resp.usage.prompt_tokens == (2 + 3) + (1 + 3) + (2 + 3) + 2 + 2


def test_max_tokens_default_and_stop_reasons(claude, provider_url):  # noqa: F811
    client = claude.client()
    resp = client.chat.completions.create(
        model=CLAUDE, messages=[{"role": "user", "content": "one two three four"}]
    )
    assert last_request(provider_url)["body"]["max_tokens"] == DEFAULT_MAX_TOKENS
    assert resp.choices[0].finish_reason == "stop"
    cut = client.chat.completions.create(
        model=CLAUDE, messages=[{"role": "user", "content": "one two three four"}], max_tokens=2
    )
    assert cut.choices[0].message.content == "echo: one"
    assert cut.choices[0].finish_reason == "length"
    stopped = client.chat.completions.create(
        model=CLAUDE, messages=[{"role": "user", "content": "one two three"}], stop="three"
    )
    assert stopped.choices[0].message.content == "echo: one two"
    assert stopped.choices[0].finish_reason == "stop"


def test_default_max_tokens_fits_the_context_window():
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert to_messages_request(body, 1000)["max_tokens"] == 1000
    assert to_messages_request(body, 100_000)["max_tokens"] == DEFAULT_MAX_TOKENS


def test_response_format_asks_for_json_in_the_system_prompt():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = {
        "model": "m",
        "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    }
    system = to_messages_request(body, 1000)["system"]
    assert system.startswith("sys\n\nAnswer with one JSON object") and json.dumps(schema) in system
    assert "response_format" not in to_messages_request(body, 1000)


def test_streaming_events_become_openai_chunks(claude):
    chunks = list(
        claude.client().chat.completions.create(
            model=CLAUDE,
            messages=[{"role": "user", "content": "stream these words"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: stream these words"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    # (With PII redaction on, held-back text may follow the finish chunk: the pipeline's.)
    assert finishes.count("stop") == 1 and set(finishes) == {None, "stop"}
    assert chunks[-1].usage.completion_tokens == 4
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == 2


def test_usage_is_metered_into_usage_records(claude):
    client = claude.client()
    raw = client.chat.completions.with_raw_response.create(
        model=CLAUDE, messages=[{"role": "user", "content": "meter me"}], max_tokens=10
    )
    usage = raw.parse().usage
    streamed = client.chat.completions.with_raw_response.create(
        model=CLAUDE, messages=[{"role": "user", "content": "meter me too"}], stream=True
    )
    list(streamed.parse())
    drain()
    rec = UsageRecord.objects.get(request_id=raw.headers["x-request-id"])
    assert (rec.input_tokens, rec.output_tokens) == (usage.prompt_tokens, usage.completion_tokens)
    assert rec.cached_tokens == 2 and rec.deployment == "claude" and rec.model == CLAUDE
    assert rec.cost_micro_usd > 0
    srec = UsageRecord.objects.get(request_id=streamed.headers["x-request-id"])
    assert srec.output_tokens == 4 and srec.cached_tokens == 2


def test_upstream_401_is_upstream_auth_failed(make_caller, provider_url):  # noqa: F811
    deployment_set(
        name="claude-unauth",
        model=CLAUDE,
        kind="anthropic",
        base_url=f"{provider_url}/unauth/v1",
        api_key=OP_KEY,
        health_check="none",
    )
    caller = make_caller(allowed_models=[CLAUDE], default_model=CLAUDE)
    resp = caller.post(
        "/chat/completions", {"model": CLAUDE, "messages": [{"role": "user", "content": "x"}]}
    )
    assert resp.status_code == 502
    err = resp.json()["error"]
    assert err["code"] == "upstream_auth_failed" and set(err) == {
        "message",
        "type",
        "param",
        "code",
    }
    assert "sk-ant" not in resp.text


def test_overloaded_529_is_a_retryable_deployment_fault(make_caller, provider_url):  # noqa: F811
    deployment_set(
        name="claude-overloaded",
        model=CLAUDE,
        kind="anthropic",
        base_url=f"{provider_url}/overloaded/v1",
        api_key=OP_KEY,
        health_check="none",
    )
    caller = make_caller(allowed_models=[CLAUDE], default_model=CLAUDE)
    with pytest.raises(openai.APIStatusError) as err:
        caller.client().chat.completions.create(
            model=CLAUDE, messages=[{"role": "user", "content": "x"}]
        )
    assert err.value.status_code == 502
    assert err.value.body["code"] == "upstream_error"


@pytest_asyncio.fixture(loop_scope="function")
async def upstream_sessions():
    """Tests that call serving.gateway.upstream in this process close its session after."""
    yield
    await upstream.close_sessions()


async def test_529_and_stream_error_events_are_classified(provider_url, upstream_sessions):  # noqa: F811
    body = {"model": "claude-upstream", "messages": [{"role": "user", "content": "a b c d"}]}
    kw = {"request_id": "r1", "tenant": "t", "weight": 1.0}
    with pytest.raises(upstream.GatewayError) as err:
        await upstream.post_json(
            _target(provider_url, "/overloaded"), "/chat/completions", body, **kw
        )
    assert retryable(err.value) and err.value.status == 502
    got = []
    with pytest.raises(upstream.GatewayError) as err:
        async for chunk in upstream.stream_chunks(
            _target(provider_url, "/streamerror"),
            "/chat/completions",
            {**body, "stream": True},
            **kw,
        ):
            got.append(chunk)
    assert err.value.code == "upstream_error" and "Overloaded" in err.value.message
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in got) == "echo: a"
    with pytest.raises(upstream.UpstreamAuthFailed):
        await upstream.post_json(_target(provider_url, "/unauth"), "/chat/completions", body, **kw)
    with pytest.raises(upstream.GatewayError) as err:
        await upstream.post_json(_target(provider_url), "/embeddings", {"input": "x"}, **kw)
    assert err.value.status == 400 and err.value.code == "unsupported_endpoint"


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


async def test_tools_and_images_are_translated(provider_url, upstream_sessions):  # noqa: F811
    """Tools, tool calls, tool results and image parts, through the real stand-in (the
    upstream adapter directly: the gateway's tool validation is another part's)."""
    kw = {"request_id": "r2", "tenant": "t", "weight": 1.0}
    target = _target(provider_url)
    png = "data:image/png;base64,iVBORw0KGgo="
    body = {
        "model": "claude-upstream",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is the weather here"},
                    {"type": "image_url", "image_url": {"url": png}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
                ],
            }
        ],
        "tools": TOOLS,
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "max_tokens": 100,
    }
    resp = await upstream.post_json(target, "/chat/completions", body, **kw)
    sent = last_request(provider_url)["body"]
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather in a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    assert sent["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    blocks = sent["messages"][0]["content"]
    assert blocks[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }
    assert blocks[2]["source"] == {"type": "url", "url": "https://example.com/a.jpg"}
    choice = resp["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}

    # The tool's result goes back as a tool_result block in a user turn.
    follow = {
        **body,
        "messages": [
            *body["messages"],
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "sunny 21C"},
        ],
    }
    resp = await upstream.post_json(target, "/chat/completions", follow, **kw)
    sent = last_request(provider_url)["body"]["messages"]
    assert sent[1]["content"][0]["type"] == "tool_use" and sent[1]["content"][0]["id"] == call["id"]
    assert sent[2]["content"] == [
        {"type": "tool_result", "tool_use_id": call["id"], "content": "sunny 21C"}
    ]
    assert resp["choices"][0]["message"]["content"] == "tool said: sunny 21C"

    # Streamed: tool-call deltas as they arrive, arguments in pieces.
    chunks = [
        c
        async for c in upstream.stream_chunks(
            target, "/chat/completions", {**body, "tool_choice": "required", "stream": True}, **kw
        )
    ]
    assert last_request(provider_url)["body"]["tool_choice"]["type"] == "any"
    calls = [
        d for c in chunks if c["choices"] for d in c["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert calls[0]["function"]["name"] == "get_weather" and calls[0]["id"].startswith("toolu_")
    args = "".join(d["function"]["arguments"] for d in calls)
    assert json.loads(args) == {"city": "Paris"} and len(calls) == 3
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "tool_calls"
    assert chunks[-1]["usage"]["prompt_tokens_details"]["cached_tokens"] == 2


@pytest.mark.skipif("tools" not in CHAT_PARAMS, reason="the gateway does not accept tools yet")
def test_openai_client_tools_through_the_gateway(claude):
    resp = claude.client().chat.completions.create(
        model=CLAUDE,
        messages=[{"role": "user", "content": "what is the weather in Paris"}],
        tools=TOOLS,
    )
    assert resp.choices[0].finish_reason == "tool_calls"
    assert resp.choices[0].message.tool_calls[0].function.name == "get_weather"
    chunks = list(
        claude.client().chat.completions.create(
            model=CLAUDE,
            messages=[{"role": "user", "content": "what is the weather in Paris"}],
            tools=TOOLS,
            stream=True,
        )
    )
    calls = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].function.name == "get_weather"
    assert json.loads("".join(d.function.arguments or "" for d in calls)) == {"city": "Paris"}
    assert "tool_calls" in [c.choices[0].finish_reason for c in chunks if c.choices]


@pytest.mark.skipif("tools" not in CHAT_PARAMS, reason="the gateway does not accept tools yet")
def test_sdk_tool_use_through_the_gateway_to_an_anthropic_deployment(claude):
    tool = {
        "name": "get_weather",
        "description": "Weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    client = _sdk(claude)
    ask = [{"role": "user", "content": "what is the weather in Paris"}]
    msg = client.messages.create(model=CLAUDE, max_tokens=50, tools=[tool], messages=ask)
    assert msg.stop_reason == "tool_use"
    use = next(b for b in msg.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "Paris"}
    follow = [
        *ask,
        {"role": "assistant", "content": [b.model_dump() for b in msg.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}],
        },
    ]
    done = client.messages.create(model=CLAUDE, max_tokens=50, tools=[tool], messages=follow)
    assert done.content[0].text == "tool said: sunny" and done.stop_reason == "end_turn"
    with client.messages.stream(model=CLAUDE, max_tokens=50, tools=[tool], messages=ask) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert next(b for b in final.content if b.type == "tool_use").input == {"city": "Paris"}


@pytest.mark.skipif(
    "vision" not in Deployment.Capability.values, reason="the gateway does not take images yet"
)
def test_images_through_the_gateway_both_ways(claude, provider_url):  # noqa: F811
    png = "iVBORw0KGgo="
    claude.client().chat.completions.create(
        model=CLAUDE,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "describe"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
                ],
            }
        ],
    )
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}}
    assert last_request(provider_url)["body"]["messages"][0]["content"][1] == image
    msg = _sdk(claude).messages.create(
        model=CLAUDE,
        max_tokens=20,
        messages=[{"role": "user", "content": [{"type": "text", "text": "describe"}, image]}],
    )
    assert last_request(provider_url)["body"]["messages"][0]["content"][1] == image
    assert msg.content[0].text == "echo: describe"


# ---- inbound: the anthropic SDK -> /v1/messages ------------------------------------------


def _sdk(caller, **kw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=caller.base_url, api_key=caller.key, max_retries=0, **kw)


def test_sdk_messages_create(make_caller, price):
    caller = make_caller(requests_per_minute=1000)
    raw = _sdk(caller).messages.with_raw_response.create(
        model=MODEL,
        max_tokens=20,
        system="you echo",
        messages=[{"role": "user", "content": "hello anthropic world"}],
    )
    msg = raw.parse()
    assert msg.type == "message" and msg.role == "assistant" and msg.model == MODEL
    assert msg.content[0].type == "text" and msg.content[0].text == "echo: hello anthropic world"
    assert msg.stop_reason == "end_turn"
    assert msg.usage.output_tokens == 4 and msg.usage.input_tokens > 0
    drain()
    rec = UsageRecord.objects.get(request_id=raw.headers["x-request-id"])
    assert (rec.input_tokens, rec.output_tokens) == (msg.usage.input_tokens, 4)
    assert rec.cost_micro_usd > 0 and rec.tenant_id == caller.tenant.pk


def test_sdk_messages_stream(make_caller, price):
    caller = make_caller(requests_per_minute=1000)
    with _sdk(caller).messages.stream(
        model=MODEL, max_tokens=3, messages=[{"role": "user", "content": "one two three four"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: one two"
    assert final.content[0].text == text
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 3 and final.usage.input_tokens > 0


def test_sdk_bearer_and_errors(make_caller):
    caller = make_caller(requests_per_minute=1000)
    body = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    ok = httpx.post(
        f"{caller.base_url}/v1/messages",
        json=body,
        headers={"Authorization": f"Bearer {caller.key}"},
        timeout=30,
    )
    assert ok.status_code == 200 and ok.json()["type"] == "message"

    with pytest.raises(anthropic.AuthenticationError) as err:
        anthropic.Anthropic(
            base_url=caller.base_url, api_key="sk-wrong", max_retries=0
        ).messages.create(**body)
    assert err.value.status_code == 401
    assert err.value.body["type"] == "error"
    assert err.value.body["error"]["type"] == "authentication_error"

    with pytest.raises(anthropic.NotFoundError) as err:
        _sdk(caller).messages.create(**{**body, "model": "no-such-model"})
    assert err.value.body["error"]["type"] == "not_found_error"

    missing = httpx.post(
        f"{caller.base_url}/v1/messages",
        json={k: v for k, v in body.items() if k != "max_tokens"},
        headers={"x-api-key": caller.key},
        timeout=30,
    )
    assert missing.status_code == 400
    assert missing.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }
    with pytest.raises(anthropic.BadRequestError) as err:
        _sdk(caller).messages.create(**body, extra_body={"temperature": 5})
    assert err.value.body["error"]["type"] == "invalid_request_error"


def test_sdk_count_tokens(caller):
    client = _sdk(caller)
    short = client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    long = client.messages.count_tokens(
        model=MODEL, system="be kind", messages=[{"role": "user", "content": "hi " * 50}]
    )
    assert 0 < short.input_tokens < long.input_tokens
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(
            base_url=caller.base_url, api_key="sk-wrong", max_retries=0
        ).messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "hi"}])


def test_sdk_rate_limits_apply(make_caller):
    caller = make_caller(requests_per_minute=2)
    client = _sdk(caller)
    body = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    client.messages.create(**body)
    client.messages.create(**body)
    with pytest.raises(anthropic.RateLimitError) as err:
        client.messages.create(**body)
    assert err.value.body["error"]["type"] == "rate_limit_error"
    assert int(err.value.response.headers["retry-after"]) >= 1


def test_sdk_to_anthropic_deployment_streams_tool_use_and_metering(claude):
    """Both ways at once: the SDK calls /v1/messages for a model served by an Anthropic
    deployment."""
    client = _sdk(claude)
    msg = client.messages.create(
        model=CLAUDE, max_tokens=30, messages=[{"role": "user", "content": "round trip"}]
    )
    assert msg.content[0].text == "echo: round trip"
    assert msg.usage.cache_read_input_tokens == 2
    with client.messages.stream(
        model=CLAUDE, max_tokens=30, messages=[{"role": "user", "content": "streamed trip"}]
    ) as stream:
        assert "".join(stream.text_stream) == "echo: streamed trip"
        final = stream.get_final_message()
    assert final.usage.output_tokens == 3 and final.usage.cache_read_input_tokens == 2


def test_inbound_translation_of_tools_images_and_results():
    body = {
        "model": "m",
        "max_tokens": 10,
        "system": [{"type": "text", "text": "sys"}],
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u1"},
        "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "f", "disable_parallel_tool_use": True},
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "AA=="},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "42"}],
            },
        ],
    }
    out = from_messages_request(body)
    assert out["messages"][0] == {"role": "system", "content": "sys"}
    assert out["messages"][1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AA=="},
    }
    assert out["messages"][2]["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"a": 1}'}
    assert out["messages"][3] == {"role": "tool", "tool_call_id": "t1", "content": "42"}
    assert out["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert out["parallel_tool_calls"] is False
    assert out["stop"] == ["END"] and out["user"] == "u1"
    assert out["tools"][0]["function"]["parameters"] == {"type": "object"}
    # And an OpenAI tool-call stream becomes tool_use events.
    writer = MessageStreamWriter("m")
    events = writer.feed(
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "id": "c1", "function": {"name": "f", "arguments": '{"a"'}}
                        ]
                    },
                }
            ]
        }
    )
    events += writer.feed(
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]},
                    "finish_reason": "tool_calls",
                }
            ]
        }
    )
    events += writer.end(10, 4, 0)
    text = events.decode()
    assert '"content_block":{"type":"tool_use","id":"c1","name":"f","input":{}}' in text
    assert text.count("input_json_delta") == 2 and '"stop_reason":"tool_use"' in text


def test_active_health_checks_speak_the_providers_format(
    transactional_db,
    provider_url,  # noqa: F811 - fixture
    clean_redis,
):
    from serving.routing.health_checks import check_deployments

    common = {"model": CLAUDE, "kind": "anthropic", "base_url": f"{provider_url}/v1"}
    deployment_set(name="claude-probe", api_key=OP_KEY, health_check="completion", **common)
    deployment_set(name="claude-nokey", health_check="completion", **common)
    deployment_set(name="claude-passive", api_key=OP_KEY, **common)  # the default: /health
    deployment_set(
        name="azure-probe",
        model="gpt-azure",
        kind="azure_openai",
        base_url=provider_url,
        api_key="k",
        health_check="completion",
    )
    results = {r.deployment: r for r in check_deployments()}
    assert results["claude-probe"].ok and results["azure-probe"].ok
    assert not results["claude-nokey"].ok
    assert "claude-passive" not in results  # no /health next to a provider's base URL
