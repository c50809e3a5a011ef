"""Constrained decoding on the real engine and worker: JSON answers that validate against
their schema (greedy and sampled, several choices, streamed and not), tool calls in the
worker's format parsed into OpenAI tool_calls, and the stream parser on its own."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from serving.engine import grammar, tools
from serving.engine.types import GenerationRequest, SamplingParams
from tests.serving.engine.conftest import MODEL

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "role": {"enum": ["admin", "editor", "viewer"]},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 40}, "zip": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 3},
    },
    "required": ["name", "age", "role", "address", "tags"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 40},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string", "maxLength": 40}},
            "required": ["timezone"],
        },
    },
}
ASK_PERSON = [{"role": "user", "content": "Describe a fictional employee as JSON."}]
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris right now?"}]


# ---- the stream parser, no model -----------------------------------------------------------


def _feed_all(text: str, step: int) -> tuple[list[dict], bool]:
    stream = tools.CallStream()
    deltas = []
    for i in range(0, len(text), step):
        deltas += stream.feed(text[i : i + step])
    more, complete = stream.finish()
    return deltas + more, complete


@pytest.mark.parametrize("step", [1, 3, 7, 1000])
def test_call_stream_sends_names_then_arguments_as_they_grow(step):
    text = (
        '<tool_call>[{"name":"get_weather","arguments":{"city":"Par\\"is","n":[1,{"a":"}"}]}},'
        '{"name":"get_time","arguments":{}}]</tool_call>'
    )
    deltas, complete = _feed_all(text, step)
    assert complete
    calls: dict[int, dict] = {}
    for d in deltas:
        (tc,) = d["tool_calls"]
        call = calls.setdefault(tc["index"], {"name": None, "arguments": "", "id": None})
        if "id" in tc:
            assert call["id"] is None, "a call's id and name are sent once"
            call["id"], call["name"] = tc["id"], tc["function"]["name"]
        call["arguments"] += tc["function"]["arguments"]
    assert [c["name"] for c in calls.values()] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["arguments"]) == {"city": 'Par"is', "n": [1, {"a": "}"}]}
    assert json.loads(calls[1]["arguments"]) == {}
    assert all(c["id"].startswith("call_") for c in calls.values())


def test_call_stream_passes_text_and_hands_back_a_cut_call():
    deltas, complete = _feed_all("Hello <tool_call> is just text here", 4)
    assert not complete
    assert "".join(d["content"] for d in deltas) == "Hello <tool_call> is just text here"
    cut, complete = _feed_all('<tool_call>[{"na', 5)
    assert not complete and cut == [{"content": '<tool_call>[{"na'}]


def test_parse_calls_and_render_round_trip():
    calls = tools.parse_calls(
        '<tool_call>[{"name":"get_weather","arguments":{"city":"Oslo"}}]</tool_call>'
    )
    assert calls[0]["function"] == {"name": "get_weather", "arguments": '{"city":"Oslo"}'}
    assert tools.render_calls(calls) == (
        '<tool_call>[{"name":"get_weather","arguments":{"city":"Oslo"}}]</tool_call>'
    )
    assert tools.parse_calls("<tool_call>[]</tool_call>") is None
    assert tools.parse_calls("no call") is None


def test_a_schema_the_library_cannot_enforce_is_a_grammar_error(loaded):
    _, tokenizer = loaded
    bad = grammar.json_grammar({"type": "object", "properties": {"a": {"type": "nonsense"}}})
    with pytest.raises(grammar.GrammarError):
        grammar.compile_grammar(tokenizer, bad)


# ---- the engine ----------------------------------------------------------------------------


def _request(tokenizer, rid, messages, g, **params):
    ids = tokenizer.encode(tokenizer.apply_chat_template(messages))
    params.setdefault("max_tokens", 160)
    return GenerationRequest(rid, ids, SamplingParams(grammar=g, **params))


def test_engine_answers_validate_greedy_and_sampled_beside_a_free_request(engine, loaded):
    _, tokenizer = loaded
    g = grammar.json_grammar(PERSON)
    out = engine.generate_sync(
        [
            _request(tokenizer, "greedy", ASK_PERSON, g, temperature=0.0),
            _request(tokenizer, "sampled", ASK_PERSON, g, temperature=1.0, n=3, seed=7),
            _request(tokenizer, "free", ASK_PERSON, None, temperature=0.0, max_tokens=24),
        ]
    )
    for text in out["greedy"] + out["sampled"]:
        jsonschema.validate(json.loads(text), PERSON)
    assert not out["free"][0].startswith("{"), "a request without a grammar is not held to one"


# ---- the worker over HTTP, with the official client ----------------------------------------


@pytest.fixture
def client(worker) -> openai.OpenAI:
    return openai.OpenAI(api_key=worker.token, base_url=f"{worker.url}/v1", max_retries=0)


def _schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}


def test_worker_json_schema_streamed(client):
    chunks = client.chat.completions.create(
        model=MODEL, messages=ASK_PERSON, temperature=0.7, seed=1, max_tokens=200, stream=True,
        response_format=_schema_format(PERSON),
    )  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    jsonschema.validate(json.loads(text), PERSON)


def test_worker_tool_call_required(client):
    r = client.chat.completions.create(
        model=MODEL, messages=ASK_WEATHER, tools=[WEATHER, TIME], tool_choice="required",
        temperature=0, max_tokens=120,
    )  # fmt: skip
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls[:1]
    assert call.type == "function" and call.id.startswith("call_")
    spec = {"get_weather": WEATHER, "get_time": TIME}[call.function.name]["function"]
    jsonschema.validate(json.loads(call.function.arguments), spec["parameters"])


def test_worker_named_tool_streamed_as_deltas(client):
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=ASK_WEATHER,
            tools=[WEATHER, TIME],
            temperature=0,
            tool_choice={"type": "function", "function": {"name": "get_time"}},
            parallel_tool_calls=False,
            max_tokens=120,
            stream=True,
        )  # fmt: skip
    )
    deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert deltas[0].function.name == "get_time" and deltas[0].id.startswith("call_")
    assert len(deltas) >= 2, "the arguments follow the name, as they are generated"
    assert {d.index for d in deltas} == {0}
    arguments = "".join(d.function.arguments or "" for d in deltas)
    jsonschema.validate(json.loads(arguments), TIME["function"]["parameters"])
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert not any(c.choices[0].delta.content for c in chunks if c.choices)


def test_worker_tool_history_and_auto_choice(client):
    """A conversation with a call and its result goes back to the model; with "auto" it may
    answer in text (finish_reason stop) or call again (tool_calls): either is well formed."""
    messages = [
        *ASK_WEATHER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'},
    ]
    r = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER], temperature=0, max_tokens=60
    )
    choice = r.choices[0]
    if choice.finish_reason == "tool_calls":
        json.loads(choice.message.tool_calls[0].function.arguments)
    else:
        assert choice.message.content and not choice.message.content.startswith("<")


def test_worker_refuses_bad_tools_and_images(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model=MODEL, messages=ASK_WEATHER, tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )  # fmt: skip
    assert err.value.body["param"] == "tool_choice"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model=MODEL,
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}],
                }
            ],
        )
    assert err.value.body["code"] == "unsupported_content"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model=MODEL, messages=ASK_PERSON,
            response_format=_schema_format({"type": "object", "properties": {"a": {"type": 7}}}),
        )  # fmt: skip
    assert err.value.body["code"] == "invalid_schema"


def test_unbounded_integers_get_safe_bounds_and_values_stay_as_they_are():
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer"},
            "m": {"type": ["integer", "null"], "minimum": 0},
            "k": {"const": {"type": "integer"}},
        },
    }
    out = grammar.bounded(schema)
    assert out["properties"]["n"] == {
        "type": "integer",
        "minimum": -grammar.SAFE_INTEGER,
        "maximum": grammar.SAFE_INTEGER,
    }
    assert out["properties"]["m"]["minimum"] == 0
    assert out["properties"]["m"]["maximum"] == grammar.SAFE_INTEGER
    assert out["properties"]["k"] == {"const": {"type": "integer"}}
    assert "minimum" not in schema["properties"]["n"], "the caller's schema is not changed"


def test_an_integer_cannot_run_on_until_max_tokens(loaded):
    """Greedy SmolLM2 writes a population as "1111…" for ever; bounded, the digits end."""
    _, tokenizer = loaded
    matcher = grammar.compile_grammar(tokenizer, grammar.json_grammar({"type": "integer"}))
    digits = tokenizer.encode("1" * 40)
    assert matcher.try_consume_tokens(digits) == 16
