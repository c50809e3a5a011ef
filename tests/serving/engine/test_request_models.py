"""One set of request models (serving/engine/request_models.py) for the gateway's validation,
the model worker's parsing and the published OpenAPI document (plain functions): the three
agree on every rule, and a refusal names the parameter in OpenAI's words."""

from __future__ import annotations

import copy
import random
from typing import Any

import jsonschema
import pytest

from serving.engine import protocol
from serving.engine.request_models import MAX_N, MAX_STOP_CHARS, MAX_TOKEN_ID, MAX_TOP_K
from serving.gateway.errors import GatewayError
from serving.gateway.validation import validate
from serving.openapi import CROSS_FIELD_PARAMS, openapi_document, request_schema

MSG = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


class _Tokenizer:
    """Enough of a tokenizer for the worker's parsing: a token per character."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]

    def apply_chat_template(self, messages: list[dict], tools: Any = None) -> str:
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages)


def _gateway(endpoint: str, body: dict) -> tuple[str, str | None] | None:
    try:
        validate(endpoint, copy.deepcopy(body))
    except GatewayError as exc:
        return exc.message, exc.param
    return None


def _worker(kind: str, body: dict) -> tuple[str, str | None] | None:
    try:
        protocol.parse(copy.deepcopy(body), kind, _Tokenizer(), "m", 100_000)
    except protocol.ProtocolError as exc:
        return exc.message, exc.param
    return None


def _chat(**fields: Any) -> dict:
    return {"model": "m", "messages": MSG, **fields}


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("chat", _chat(n=MAX_N)),
        ("chat", _chat(n=MAX_N + 1)),  # the worker took 16 before
        ("chat", _chat(n=MAX_N * 2)),
        ("chat", _chat(top_k=MAX_TOP_K)),
        ("chat", _chat(top_k=MAX_TOP_K + 1)),  # the worker took a million
        ("chat", _chat(stop="x" * MAX_STOP_CHARS)),
        ("chat", _chat(stop=["x" * (MAX_STOP_CHARS + 1)])),
        ("chat", _chat(stop=["a"] * 5)),
        ("chat", _chat(max_tokens=3.0)),  # JSON has one number type: the integer 3
        ("chat", _chat(max_tokens=1e300)),
        ("chat", _chat(seed=2**64)),
        ("chat", _chat(temperature=True)),
        ("chat", _chat(temperature=float("nan"))),
        ("chat", _chat(stream_options={"include_usage": 1}, stream=True)),
        ("chat", _chat(user=5)),
        ("chat", _chat(logit_bias={"x": 1})),
        ("chat", _chat(tools=[{**TOOL, "function": {"name": "bad name"}}])),
        ("chat", _chat(response_format={"type": "yaml"})),
        ("chat", {"model": "m", "messages": [{"role": "wizard", "content": "x"}]}),
        ("chat", {"model": "m", "messages": [{"role": "user", "content": [{"text": "x"}]}]}),
        ("chat", {"model": "m", "messages": [{"role": "assistant", "tool_calls": [5]}]}),
        ("chat", {"model": "m", "messages": [{"role": "assistant", "tool_calls": [CALL]}]}),
        ("chat", {"model": "m", "messages": []}),
        ("chat", {"messages": MSG}),
        ("text", {"model": "m", "prompt": [1.0, 2]}),
        ("text", {"model": "m", "prompt": [MAX_TOKEN_ID + 1]}),
        ("text", {"model": "m", "prompt": [-1]}),
        ("text", {"model": "m", "prompt": "x", "best_of": MAX_N + 1}),
        ("text", {"model": "m", "prompt": "x", "logprobs": 6}),
    ],
)
def test_the_gateway_and_the_worker_take_and_refuse_the_same_requests(kind, body):
    endpoint = "chat.completions" if kind == "chat" else "completions"
    assert _worker(kind, body) == _gateway(endpoint, body)


def test_the_worker_takes_a_valid_request_the_gateway_normalised():
    body = _chat(n=2.0, max_tokens=8.0, temperature=1e-300, top_p=None, stop="x", seed=7.0)
    sent = validate("chat.completions", body)
    assert sent == _chat(n=2, max_tokens=8, temperature=0, stop="x", seed=7)
    assert all(type(sent[k]) is int for k in ("n", "max_tokens", "seed"))
    parsed = protocol.parse(sent, "chat", _Tokenizer(), "m", 100)
    assert (parsed.params.n, parsed.params.max_tokens, parsed.params.seed) == (2, 8, 7)
    assert parsed.params.temperature == 0.0 and parsed.params.stop == ["x"]


@pytest.mark.parametrize(
    ("endpoint", "body", "message", "param", "code"),
    [
        ("chat.completions", _chat(n=99), "'n' must be between 1 and 8, got 99.", "n", None),
        (
            "chat.completions",
            _chat(max_tokens=1e300),
            "'max_tokens' must be between 1 and 1000000, got 1e+300.",
            "max_tokens",
            None,
        ),
        (
            "chat.completions",
            _chat(seed=2**70),
            "'seed' must be between -9223372036854775808 and 9223372036854775807, "
            "got an integer of 71 bits.",
            "seed",
            None,
        ),
        (
            "chat.completions",
            _chat(temperature=10**400),
            "'temperature' must be between 0 and 2, got an integer of 1329 bits.",
            "temperature",
            None,
        ),
        (
            "chat.completions",
            _chat(temperature=True),
            "Invalid type for 'temperature': expected a number, got boolean.",
            "temperature",
            None,
        ),
        (
            "chat.completions",
            _chat(max_tokens=2.5),
            "Invalid type for 'max_tokens': expected an integer, got number.",
            "max_tokens",
            None,
        ),
        (
            "chat.completions",
            _chat(frobnicate=1),
            "Unrecognized request argument supplied: frobnicate",
            "frobnicate",
            "unknown_parameter",
        ),
        (
            "chat.completions",
            {"model": "m"},
            "Missing required parameter: 'messages'.",
            "messages",
            "missing_required_parameter",
        ),
        (
            "chat.completions",
            _chat(logit_bias={"50256": 101}),
            "'logit_bias.50256' must be between -100 and 100, got 101.",
            "logit_bias.50256",
            None,
        ),
        (
            "chat.completions",
            _chat(stop=["a"] * 5),
            "'stop' may hold at most 4 sequences; it has 5.",
            "stop",
            None,
        ),
        (
            "chat.completions",
            _chat(stream_options={"x": True}, stream=True),
            "Unrecognized request argument supplied: stream_options.x",
            "stream_options.x",
            None,
        ),
        (
            "chat.completions",
            _chat(tools=[TOOL, {"type": "function", "function": {"name": "a b"}}]),
            "'tools[1].function.name' must be a function name: 1 to 64 letters, digits, "
            "underscores or dashes.",
            "tools[1].function.name",
            None,
        ),
        (
            "chat.completions",
            {"model": "m", "messages": [*MSG, {"role": "user", "content": 5}]},
            "Invalid value for 'messages[1].content': expected a string or an array of text "
            "parts and image_url parts.",
            "messages[1].content",
            None,
        ),
        (
            "chat.completions",
            {"model": "m", "messages": [{"role": "assistant", "tool_calls": [{**CALL, "id": 5}]}]},
            "'messages[0].tool_calls[0]' must be a function call: an 'id', 'type': 'function' "
            "and a 'function' with a 'name' and 'arguments' (a JSON string).",
            "messages[0].tool_calls[0]",
            None,
        ),
        (  # the first bad parameter in the body's order
            "chat.completions",
            {"model": "m", "messages": MSG, "top_p": 5, "n": 99},
            "'top_p' must be between 0 and 1, got 5.",
            "top_p",
            None,
        ),
        (
            "completions",
            {"model": "m", "prompt": ["x"] * 2049},
            "'prompt' may hold at most 2048 prompts; it has 2049.",
            "prompt",
            None,
        ),
        (
            "embeddings",
            {"model": "m", "input": [[1, 2**40]]},
            "'input' must be a non-empty string or an array of at most 2048 non-empty strings "
            "or token arrays (token ids 0 to 2147483647).",
            "input",
            None,
        ),
    ],
)
def test_a_refusal_names_the_parameter_in_openai_words(endpoint, body, message, param, code):
    with pytest.raises(GatewayError) as err:
        validate(endpoint, copy.deepcopy(body))
    assert (err.value.message, err.value.param, err.value.code) == (message, param, code)
    assert err.value.status == 400


# --- the published schema and the validation: one set of rules --------------------------------

BASES = {
    "chat.completions": {
        "model": "m",
        "stream": True,
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "developer", "content": [{"type": "text", "text": "t"}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "x"},
                    {"type": "image_url", "image_url": {"url": "u", "detail": "low"}},
                ],
            },
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "c1", "content": "r"},
        ],
        "tools": [TOOL],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "max_tokens": 5,
        "temperature": 1,
        "top_k": 3,
        "stop": ["a"],
        "seed": 1,
        "stream_options": {"include_usage": True},
        "metadata": {"k": "v"},
        "logit_bias": {"1": 1},
        "logprobs": True,
        "top_logprobs": 2,
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {}}},
    },
    "completions": {"model": "m", "prompt": [1, 2], "logprobs": 1, "best_of": 2, "suffix": "s"},
    "embeddings": {"model": "m", "input": [[1], [2, 3]], "encoding_format": "base64"},
}
VALUES = [None, True, 0, 1, -1, 3.0, 1.5, 1e300, 2**63, "", "x", "x" * 300, "bad name", "auto",
          "text", "user", [], [1], ["a"], [[1]], [{}], {}, {"a": 1}, {"type": "text"}]  # fmt: skip


def _paths(v: Any, path: tuple = ()) -> list[tuple]:
    found = [path]
    items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
    for k, child in items:
        found += _paths(child, (*path, k))
    return found


def _mutated(body: dict, rng: random.Random) -> dict:
    """``body`` with a value replaced, removed or added somewhere inside it."""
    body = copy.deepcopy(body)
    path = rng.choice(_paths(body)[1:])
    parent = body
    for k in path[:-1]:
        parent = parent[k]
    roll = rng.random()
    if roll < 0.15 and isinstance(parent, dict):
        del parent[path[-1]]
    elif roll < 0.25 and isinstance(parent, dict):
        parent[rng.choice(["x", "name", "type"])] = copy.deepcopy(rng.choice(VALUES))
    else:
        parent[path[-1]] = copy.deepcopy(rng.choice(VALUES))
    return body


@pytest.mark.parametrize("endpoint", list(BASES))
def test_the_published_schema_accepts_exactly_what_validation_accepts(endpoint):
    """Mutated bodies: valid by the document's JSON schema if and only if the gateway takes
    them, but for the rules across fields the document lists in words."""
    schema = jsonschema.Draft202012Validator(request_schema(endpoint))
    rng = random.Random(17)
    for _ in range(1500):
        body = _mutated(BASES[endpoint], rng)
        error = _gateway(endpoint, body)
        if schema.is_valid(body):
            assert error is None or error[1] in CROSS_FIELD_PARAMS, (body, error)
        else:
            assert error is not None, body


def test_the_document_states_the_models_limits():
    schemas = openapi_document()["components"]["schemas"]
    chat = schemas["ChatCompletionRequest"]
    assert chat["required"] == ["model", "messages"] and chat["additionalProperties"] is False
    assert chat["properties"]["n"]["anyOf"][0] == {"type": "integer", "minimum": 1, "maximum": 8}
    assert chat["properties"]["top_k"]["anyOf"][0]["maximum"] == MAX_TOP_K
    assert chat["properties"]["logit_bias"]["anyOf"][0]["propertyNames"] == {
        "pattern": "^(0|[1-9][0-9]{0,8})$"
    }
    message = chat["properties"]["messages"]["items"]
    assert {ref["$ref"].rpartition("/")[2] for ref in message["oneOf"]} == {
        "SystemMessage",
        "UserMessage",
        "AssistantMessage",
        "ToolMessage",
    }
    assert all(ref["$ref"].rpartition("/")[2] in schemas for ref in message["oneOf"])
