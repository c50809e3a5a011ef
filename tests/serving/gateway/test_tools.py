"""Tools, images and unknown parameters through the real gateway, with the official openai
client: tool calls relayed (JSON and streamed deltas, as they arrive) from a deployment with
the ``tools`` capability, a clear 400 from one without (before any upstream call), images only
to ``vision`` deployments, tool definitions and call arguments metered, and the tier's switch
for parameters Switchyard does not know."""

from __future__ import annotations

import json

import openai
import pytest

from billing.models import UsageRecord
from billing.usage import usage_ingestor
from serving.gateway.endpoints import CHAT
from serving.request_log import request_log_ingestor
from serving.routing.deployments import deployment_set
from switchyard.redis_client import get_redis
from tests.serving.gateway.conftest import MODEL

ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}},
            "required": ["query"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


def _serve(upstream_url: str, prefix: str = "/tools", **fields) -> None:
    fields.setdefault("capabilities", ["tools"])
    deployment_set(name="instant", model=MODEL, base_url=f"{upstream_url}{prefix}/v1",
                   context_window=4096, **fields)  # fmt: skip


def drain() -> None:
    usage_ingestor.drain(get_redis())
    request_log_ingestor.drain(get_redis())


def test_tool_calls_come_back_with_finish_reason_tool_calls(make_caller, upstream_url):
    client = make_caller().client()
    _serve(upstream_url)
    r = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER, TIME])
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [c.function.name for c in choice.message.tool_calls] == ["get_weather", "get_time"]
    assert json.loads(choice.message.tool_calls[0].function.arguments) == {
        "query": ASK[0]["content"]
    }
    one = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER, TIME], parallel_tool_calls=False
    )
    assert len(one.choices[0].message.tool_calls) == 1
    named = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )  # fmt: skip
    assert [c.function.name for c in named.choices[0].message.tool_calls] == ["get_time"]


def test_streamed_tool_call_deltas_are_relayed_as_they_arrive(make_caller, upstream_url):
    # PII redaction holds back what could still grow into a match (as for content): off here.
    client = make_caller(pii_redaction=False).client()
    _serve(upstream_url)
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=ASK,
            tools=[WEATHER, TIME],
            stream=True,
            stream_options={"include_usage": True},
        )  # fmt: skip
    )
    deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    arguments = json.dumps({"query": ASK[0]["content"]})
    # The upstream sends each call's head, then its arguments in pieces of 8 characters: the
    # gateway relays every delta, none merged or held back.
    per_call = 1 + -(-len(arguments) // 8)
    assert len(deltas) == 2 * per_call
    calls: dict[int, dict] = {}
    for d in deltas:
        call = calls.setdefault(d.index, {"name": None, "arguments": ""})
        if d.function.name:
            call["name"] = d.function.name
        call["arguments"] += d.function.arguments or ""
    assert calls == {
        0: {"name": "get_weather", "arguments": arguments},
        1: {"name": "get_time", "arguments": arguments},
    }
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage.completion_tokens > 0


def test_a_tool_result_goes_back_and_the_model_answers(make_caller, upstream_url):
    client = make_caller().client()
    _serve(upstream_url)
    first = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER], parallel_tool_calls=False
    )
    call = first.choices[0].message.tool_calls[0]
    messages = [
        *ASK,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "21 degrees and sunny"},
    ]
    r = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content  # the instant upstream echoes the last user turn


def test_without_the_tools_capability_a_clear_400_before_any_call(make_caller, upstream_url):
    client = make_caller().client()
    # A deployment that would fail every call: a 400 (not a 502) proves none was made.
    _serve(upstream_url, prefix="/fail", capabilities=[])
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER])
    body = err.value.body
    assert body["code"] == "unsupported_capability" and body["param"] == "tools"
    assert "`tools` capability" in body["message"] and MODEL in body["message"]
    history = [*ASK, {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=history)
    assert err.value.body["param"] == "messages[1]"


def test_images_go_only_to_vision_deployments(make_caller, upstream_url):
    client = make_caller().client()
    look = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, IMAGE]}]
    _serve(upstream_url, prefix="/echo", capabilities=["tools"])
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=look)
    assert err.value.body["code"] == "unsupported_capability"
    assert err.value.body["param"] == "messages[0].content[1]"
    assert "`vision`" in err.value.body["message"]
    _serve(upstream_url, prefix="/echo", capabilities=["vision"])
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=look)
    assert json.loads(raw.text)["x_received"]["messages"] == look  # forwarded as sent
    # Images are user content only, as at OpenAI.
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "system", "content": [IMAGE]}, *ASK]
        )
    assert err.value.body["param"] == "messages[0].content"


def test_a_group_routes_tool_requests_to_its_able_deployment(make_caller, upstream_url):
    """Of two deployments of one model, a request with tools goes to the one that can."""
    client = make_caller().client()
    _serve(upstream_url, prefix="/fail", capabilities=[])
    deployment_set(name="instant-tools", model=MODEL, base_url=f"{upstream_url}/tools/v1",
                   capabilities=["tools"], context_window=4096)  # fmt: skip
    try:
        for _ in range(4):
            raw = client.chat.completions.with_raw_response.create(
                model=MODEL, messages=ASK, tools=[WEATHER]
            )
            assert "deployment=instant-tools" in raw.headers["x-switchyard-route"]
    finally:
        deployment_set(name="instant-tools", enabled=False)


def test_tool_definitions_and_call_arguments_are_metered(make_caller, upstream_url, price):
    """Counted with the tokenizer when the upstream reports no usage: the definitions as
    prompt tokens, the calls' names and arguments as completion tokens."""
    caller = make_caller()
    client = caller.client()
    _serve(upstream_url, prefix="/tools-nousage")
    big = {**WEATHER, "function": {**WEATHER["function"], "description": "weather " * 300}}
    ids = []
    for tools in ([WEATHER], [big]):
        stream = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=ASK, tools=tools, stream=True
        )
        ids.append(stream.headers["x-request-id"])
        list(stream.parse())
    drain()
    small, large = (UsageRecord.objects.get(request_id=i) for i in ids)
    assert large.input_tokens - small.input_tokens >= 250  # 300 words of description
    assert small.output_tokens >= 10  # no content at all: the calls are what was produced
    assert small.output_tokens == large.output_tokens


def test_prompt_estimates_count_tools_calls_and_images():
    base = {"model": MODEL, "messages": ASK}
    with_tools = {**base, "tools": [WEATHER]}
    assert CHAT.estimate_prompt_tokens(with_tools) > CHAT.estimate_prompt_tokens(base)
    assert json.dumps([WEATHER], separators=(",", ":")) in CHAT.prompt_texts(with_tools)
    call = {"id": "c", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"query": "' + "x" * 300 + '"}'}}  # fmt: skip
    history = {**base, "messages": [*ASK, {"role": "assistant", "content": None,
                                           "tool_calls": [call]}]}  # fmt: skip
    assert CHAT.estimate_prompt_tokens(history) >= CHAT.estimate_prompt_tokens(base) + 100
    looking = {**base, "messages": [{"role": "user", "content": [IMAGE]}]}
    assert CHAT.estimate_prompt_tokens(looking) >= 1000


def test_unknown_parameters_follow_the_tier_switch(make_caller, upstream_url):
    strict = make_caller().client()
    lenient = make_caller(pass_unknown_params=True).client()
    _serve(upstream_url, prefix="/echo", capabilities=[], kind="openai_compatible")
    extra = {"reasoning_effort": "low", "prediction": {"type": "content", "content": "x"}}
    with pytest.raises(openai.BadRequestError) as err:
        strict.chat.completions.create(model=MODEL, messages=ASK, extra_body=extra)
    assert err.value.body["code"] == "unknown_parameter"
    assert err.value.body["param"] == "reasoning_effort"
    raw = lenient.chat.completions.with_raw_response.create(
        model=MODEL, messages=ASK, extra_body=extra
    )
    received = json.loads(raw.text)["x_received"]
    assert {k: received[k] for k in extra} == extra
    # A model worker takes only what it knows: such a request is not sent to one.
    _serve(upstream_url, prefix="/echo", capabilities=[], kind="local_worker")
    with pytest.raises(openai.BadRequestError) as err:
        lenient.chat.completions.create(model=MODEL, messages=ASK, extra_body=extra)
    assert err.value.body["code"] == "unknown_parameter"
    assert "OpenAI-compatible" in err.value.body["message"]


def test_tool_choice_and_tools_must_agree(make_caller, upstream_url):
    client = make_caller().client()
    _serve(upstream_url)
    cases = [
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
         "tool_choice.function.name"),
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]},
         "tools[0].function.name"),
        ({"tools": []}, "tools"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
    ]  # fmt: skip
    for extra, param in cases:
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model=MODEL, messages=ASK, **extra)
        assert err.value.body["param"] == param, extra
    # Without tools, "auto" and parallel_tool_calls say nothing (and are not sent on).
    r = client.chat.completions.create(
        model=MODEL, messages=ASK, tool_choice="auto", parallel_tool_calls=True
    )
    assert r.choices[0].finish_reason in ("stop", "length")


def test_response_format_is_forwarded(make_caller, upstream_url):
    client = make_caller().client()
    _serve(upstream_url)
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "strict": True,
           "schema": {"type": "object", "properties": {"answer": {"type": "string"}}}}}  # fmt: skip
    r = client.chat.completions.create(
        model=MODEL, messages=ASK, response_format=fmt, max_tokens=64
    )
    assert json.loads(r.choices[0].message.content)["response_format"] == fmt
    streamed = client.chat.completions.create(
        model=MODEL, messages=ASK, response_format={"type": "json_object"}, max_tokens=64,
        stream=True,
    )  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert json.loads(text)["response_format"] == {"type": "json_object"}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model=MODEL, messages=ASK,
            response_format={"type": "json_schema", "json_schema": {"schema": {}}},
        )  # fmt: skip
    assert err.value.body["param"] == "response_format.json_schema.name"


def test_pii_in_tool_calls_is_redacted_both_ways_and_stays_json(make_caller, upstream_url):
    """A tier with PII redaction: earlier calls' arguments going upstream and the calls coming
    back (JSON and streamed) lose the e-mail address, and their arguments stay JSON."""
    client = make_caller(pii_redaction=True).client()
    mail = "jo.doe@example.com"
    ask = [{"role": "user", "content": f"Write to {mail} about the weather"}]
    _serve(upstream_url)
    r = client.chat.completions.create(
        model=MODEL, messages=ask, tools=[WEATHER], parallel_tool_calls=False
    )
    arguments = r.choices[0].message.tool_calls[0].function.arguments
    assert mail not in arguments and "[EMAIL]" in json.loads(arguments)["query"]
    stream = client.chat.completions.create(
        model=MODEL, messages=ask, tools=[WEATHER], parallel_tool_calls=False, stream=True
    )
    streamed = "".join(
        tc.function.arguments or ""
        for c in stream
        if c.choices
        for tc in c.choices[0].delta.tool_calls or []
    )
    assert mail not in streamed and "[EMAIL]" in json.loads(streamed)["query"]
    _serve(upstream_url, prefix="/echo")
    call = {"id": "c1", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"to": mail, "n": 4111111111111111})}}  # fmt: skip
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [call]},
               {"role": "tool", "tool_call_id": "c1", "content": f"sent to {mail}"}]  # fmt: skip
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=history, tools=[WEATHER]
    )
    sent = json.loads(raw.text)["x_received"]["messages"]
    assert json.loads(sent[1]["tool_calls"][0]["function"]["arguments"]) == {
        "to": "[EMAIL]",
        "n": "[CARD]",
    }
    assert mail not in sent[2]["content"]
