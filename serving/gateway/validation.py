"""Request validation against the OpenAI schema: a 400 that names the parameter.

Each endpoint has a table of known parameters and a checker per parameter; anything not in
the table is refused as OpenAI does ("Unrecognized request argument supplied"). Every checker
carries the JSON-schema fragment it enforces (``check.schema``), so the published OpenAPI
document (serving/openapi.py) and the validation are one source of truth.

Tools (``tools``, ``tool_choice``, ``parallel_tool_calls``, assistant ``tool_calls``, ``tool``
messages), images (``image_url`` parts in user messages) and structured output
(``response_format``) are checked here for shape; :func:`capabilities_needed` says which
deployment capabilities a request needs (``tools``, ``vision``), which routing then requires.
A parameter Switchyard does not know is refused, unless the tier passes them through
(``validate(..., pass_unknown=True)``; :func:`unknown_params` names them for routing, which
sends such requests to OpenAI-compatible deployments only).

Everything a tenant sends is bounded before it is used: every number by type (a boolean is
not a number), finiteness and range; every array by length (messages, content parts, stop
sequences, logit_bias entries, prompts); the body by nesting depth (:func:`parse_json_body`);
numeric headers by length and size (:func:`parse_max_cost_header`,
:func:`parse_content_length`). Each check costs time linear in what it reads, and the size
limit of the body bounds that.

:func:`validate` also normalises the body, in place: a null optional field is removed (null
means absent, as at OpenAI), an integral float such as ``3.0`` for an integer parameter
becomes ``3``, and a request that can only be greedy says so plainly (``temperature`` 0): a
positive temperature below :data:`GREEDY_TEMPERATURE` (``1e-300`` rounds to 0.0 in float32,
and logits divided by it are NaN) or a ``top_p`` below it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson

from serving.gateway.errors import GatewayError, invalid, invalid_json

# A checker raises a 400 for a bad value; it may return a normalized value (an integral
# float such as 1.0 for an integer parameter becomes 1), or None to keep the value.
Check = Callable[[str, Any], Any]

MAX_N = 8
MAX_STOP = 4
MAX_STOP_CHARS = 256
MAX_TOKENS_LIMIT = 1_000_000
MAX_MESSAGES = 2048
MAX_CONTENT_PARTS = 256
MAX_PROMPTS = 2048  # strings, or token arrays, in one prompt or embeddings input
MAX_TOKEN_ID = 2**31 - 1
MAX_LOGIT_BIAS = 1024
MAX_METADATA = 16  # pairs; keys up to 64 characters, values strings up to 512 (as OpenAI)
MAX_MODEL_CHARS = 256
MAX_TOOLS = 128  # OpenAI's limit
MAX_TOOL_CALLS = 128  # calls in one assistant message
MAX_TOOL_ID_CHARS = 256
TOOL_NAME_PATTERN = "^[a-zA-Z0-9_-]{1,64}$"
_TOOL_NAME = re.compile(TOOL_NAME_PATTERN)
MAX_JSON_DEPTH = 64
MAX_JSON_CONTAINERS = 20_000  # arrays and objects in one body (2,048 messages need ~6,000)
# Temperatures (and top_p) below this are greedy: vLLM's threshold too, and that of our own
# sampler (serving/engine/types.py). Dividing float32 logits by less overflows.
GREEDY_TEMPERATURE = 1e-5
MAX_COST_USD = 1_000_000  # the most x-switchyard-max-cost-usd may say, per request
MAX_HEADER_NUMBER_CHARS = 32


def _type_name(v: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object", type(None): "null"}.get(type(v), type(v).__name__)  # fmt: skip


def _show(v: Any) -> str:
    """A number for an error message, however large (an int of 5,000 digits cannot even be
    turned into a string in Python 3.11)."""
    if isinstance(v, int) and not isinstance(v, bool) and abs(v).bit_length() > 64:
        return f"an integer of {abs(v).bit_length()} bits"
    return repr(v)[:40]


def _schema(schema: dict[str, Any]) -> Callable[[Check], Check]:
    """Attach the JSON-schema fragment a checker enforces."""

    def attach(check: Check) -> Check:
        check.schema = schema  # type: ignore[attr-defined]
        return check

    return attach


def schema_of(check: Check) -> dict[str, Any]:
    return check.schema  # type: ignore[attr-defined]


def _number(lo: float, hi: float) -> Check:
    @_schema({"type": "number", "minimum": lo, "maximum": hi})
    def check(name: str, v: Any) -> None:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise invalid(
                f"Invalid type for '{name}': expected a number, got {_type_name(v)}.", name
            )
        if isinstance(v, float) and not math.isfinite(v):
            raise invalid(f"'{name}' must be a finite number, got {v}.", name)
        if not lo <= v <= hi:
            raise invalid(f"'{name}' must be between {lo} and {hi}, got {_show(v)}.", name)

    return check


def _integer(lo: int, hi: int) -> Check:
    @_schema({"type": "integer", "minimum": lo, "maximum": hi})
    def check(name: str, v: Any) -> int:
        if isinstance(v, float) and v.is_integer():
            if not lo <= v <= hi:  # before int(): 1e300 is a 997-digit integer
                raise invalid(f"'{name}' must be between {lo} and {hi}, got {v}.", name)
            v = int(v)  # JSON has one number type: 1.0 is the integer 1
        if isinstance(v, bool) or not isinstance(v, int):
            raise invalid(
                f"Invalid type for '{name}': expected an integer, got {_type_name(v)}.", name
            )
        if not lo <= v <= hi:
            raise invalid(f"'{name}' must be between {lo} and {hi}, got {_show(v)}.", name)
        return v

    return check


@_schema({"type": "boolean"})
def _boolean(name: str, v: Any) -> None:
    if not isinstance(v, bool):
        raise invalid(f"Invalid type for '{name}': expected a boolean, got {_type_name(v)}.", name)


@_schema({"type": "string"})
def _string(name: str, v: Any) -> None:
    if not isinstance(v, str):
        raise invalid(f"Invalid type for '{name}': expected a string, got {_type_name(v)}.", name)


def _bounded_string(max_chars: int) -> Check:
    @_schema({"type": "string", "maxLength": max_chars})
    def check(name: str, v: Any) -> None:
        _string(name, v)
        if len(v) > max_chars:
            raise invalid(f"'{name}' may be at most {max_chars} characters long.", name)

    return check


def _count(name: str, v: list | dict, most: int, what: str) -> None:
    if len(v) > most:
        raise invalid(f"'{name}' may hold at most {most} {what}; it has {len(v)}.", name)


_STOP_STRING = {"type": "string", "maxLength": MAX_STOP_CHARS}


@_schema(
    {
        "anyOf": [
            _STOP_STRING,
            {"type": "array", "items": _STOP_STRING, "maxItems": MAX_STOP},
            {"type": "null"},
        ]
    }
)
def _stop(name: str, v: Any) -> None:
    if v is None:
        return
    if isinstance(v, list):
        _count(name, v, MAX_STOP, "sequences")
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise invalid(f"'{name}' must be a string or an array of strings.", name)
    if any(len(s) > MAX_STOP_CHARS for s in items):
        raise invalid(f"Each of '{name}' may be at most {MAX_STOP_CHARS} characters long.", name)


@_schema(
    {
        "type": "object",
        "maxProperties": MAX_METADATA,
        "propertyNames": {"maxLength": 64},
        "additionalProperties": {"type": "string", "maxLength": 512},
    }
)
def _metadata(name: str, v: Any) -> None:
    _object(name, v)
    _count(name, v, MAX_METADATA, "pairs")
    for key, value in v.items():
        if len(key) > 64:
            raise invalid(f"Keys of '{name}' may be at most 64 characters long.", name)
        if not isinstance(value, str) or len(value) > 512:
            raise invalid(f"'{name}.{key[:64]}' must be a string of at most 512 characters.", name)


# Token ids as logit_bias keys: decimal strings of at most 9 digits (no vocabulary is larger).
TOKEN_KEY_PATTERN = "^(0|[1-9][0-9]{0,8})$"
_TOKEN_KEY = re.compile(TOKEN_KEY_PATTERN)


@_schema(
    {
        "type": "object",
        "maxProperties": MAX_LOGIT_BIAS,
        "propertyNames": {"pattern": TOKEN_KEY_PATTERN},
        "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100},
    }
)
def _logit_bias(name: str, v: Any) -> None:
    """Token id (a decimal string) -> bias between -100 and 100."""
    _object(name, v)
    _count(name, v, MAX_LOGIT_BIAS, "entries")
    bias = _number(-100, 100)
    for key, value in v.items():
        if not _TOKEN_KEY.fullmatch(key):
            raise invalid(
                f"Keys of '{name}' must be token ids (0 to 999999999), got {key[:20]!r}.", name
            )
        bias(f"{name}.{key}", value)


@_schema({"type": "object"})
def _object(name: str, v: Any) -> None:
    if not isinstance(v, dict):
        raise invalid(f"Invalid type for '{name}': expected an object, got {_type_name(v)}.", name)


@_schema(
    {
        "type": ["object", "null"],
        "properties": {"include_usage": {"type": "boolean"}},
        "additionalProperties": False,
    }
)
def _stream_options(name: str, v: Any) -> None:
    if v is None:
        return
    _object(name, v)
    for k, val in v.items():
        if k != "include_usage":
            raise invalid(f"Unrecognized request argument supplied: {name}.{k}", f"{name}.{k}")
        _boolean(f"{name}.include_usage", val)


_JSON_SCHEMA_SPEC = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": TOOL_NAME_PATTERN},
        "description": {"type": "string"},
        "schema": {"type": "object"},
        "strict": {"type": ["boolean", "null"]},
    },
    "required": ["name"],
}


@_schema(
    {
        "oneOf": [
            {
                "type": "object",
                "properties": {"type": {"enum": ["text", "json_object"]}},
                "required": ["type"],
            },
            {
                "type": "object",
                "properties": {"type": {"const": "json_schema"}, "json_schema": _JSON_SCHEMA_SPEC},
                "required": ["type", "json_schema"],
            },
        ]
    }
)
def _response_format(name: str, v: Any) -> None:
    _object(name, v)
    kind = v.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        raise invalid(
            f"Invalid value for '{name}.type': expected 'text', 'json_object' or 'json_schema'.",
            f"{name}.type",
        )
    if kind != "json_schema":
        return
    where = f"{name}.json_schema"
    spec = v.get("json_schema")
    if not isinstance(spec, dict):
        raise invalid(f"Missing required parameter: '{where}'.", where)
    if not (isinstance(spec.get("name"), str) and _TOOL_NAME.fullmatch(spec["name"])):
        raise invalid(
            f"'{where}.name' must be 1 to 64 letters, digits, underscores or dashes.",
            f"{where}.name",
        )
    for key, check in (("description", _string), ("schema", _object)):
        if key in spec:
            check(f"{where}.{key}", spec[key])
    if spec.get("strict") is not None:
        _boolean(f"{where}.strict", spec["strict"])


_FUNCTION = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": TOOL_NAME_PATTERN},
        "description": {"type": "string"},
        "parameters": {"type": "object"},
        "strict": {"type": ["boolean", "null"]},
    },
    "required": ["name"],
}


@_schema(
    {
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_TOOLS,
        "items": {
            "type": "object",
            "properties": {"type": {"const": "function"}, "function": _FUNCTION},
            "required": ["type", "function"],
        },
    }
)
def _tools(name: str, v: Any) -> None:
    if not isinstance(v, list) or not v:
        raise invalid(f"'{name}' must be a non-empty array of tools.", name)
    _count(name, v, MAX_TOOLS, "tools")
    for i, tool in enumerate(v):
        where = f"{name}[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise invalid(f"'{where}' must be a tool of type 'function'.", f"{where}.type")
        fn = tool.get("function")
        if not isinstance(fn, dict):
            raise invalid(f"Missing required parameter: '{where}.function'.", f"{where}.function")
        _function_name(f"{where}.function.name", fn.get("name"))
        for key, check in (("description", _string), ("parameters", _object)):
            if key in fn:
                check(f"{where}.function.{key}", fn[key])
        if fn.get("strict") is not None:
            _boolean(f"{where}.function.strict", fn["strict"])


def _function_name(name: str, v: Any) -> None:
    if not (isinstance(v, str) and _TOOL_NAME.fullmatch(v)):
        raise invalid(
            f"'{name}' must be a function name: 1 to 64 letters, digits, underscores or dashes.",
            name,
        )


_NAMED_FUNCTION = {
    "type": "object",
    "properties": {
        "type": {"const": "function"},
        "function": {
            "type": "object",
            "properties": {"name": {"type": "string", "pattern": TOOL_NAME_PATTERN}},
            "required": ["name"],
        },
    },
    "required": ["type", "function"],
}


@_schema({"anyOf": [{"enum": ["none", "auto", "required"]}, _NAMED_FUNCTION]})
def _tool_choice(name: str, v: Any) -> None:
    if v in ("none", "auto", "required"):
        return
    if isinstance(v, dict) and v.get("type") == "function" and isinstance(v.get("function"), dict):
        _function_name(f"{name}.function.name", v["function"].get("name"))
        return
    raise invalid(
        f"'{name}' must be 'none', 'auto', 'required' or "
        '{"type": "function", "function": {"name": ...}}.',
        name,
    )


def _nullable(check: Check) -> Check:
    @_schema({"anyOf": [schema_of(check), {"type": "null"}]})
    def wrapped(name: str, v: Any) -> Any:
        return None if v is None else check(name, v)

    return wrapped


_TEXT_PART = {
    "type": "object",
    "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
    "required": ["type", "text"],
}
_IMAGE_PART = {
    "type": "object",
    "properties": {
        "type": {"const": "image_url"},
        "image_url": {
            "type": "object",
            "properties": {
                "url": {"type": "string"},
                "detail": {"enum": ["auto", "low", "high"]},
            },
            "required": ["url"],
        },
    },
    "required": ["type", "image_url"],
}
_TEXT_PARTS = {"type": "array", "maxItems": MAX_CONTENT_PARTS, "items": _TEXT_PART}
_USER_PARTS = {
    "type": "array",
    "maxItems": MAX_CONTENT_PARTS,
    "items": {"oneOf": [_TEXT_PART, _IMAGE_PART]},
}
_TOOL_CALL = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "maxLength": MAX_TOOL_ID_CHARS},
        "type": {"const": "function"},
        "function": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "pattern": TOOL_NAME_PATTERN},
                "arguments": {"type": "string"},
            },
            "required": ["name", "arguments"],
        },
    },
    "required": ["id", "type", "function"],
}
_TEXT = {"anyOf": [{"type": "string"}, _TEXT_PARTS]}


@_schema(
    {
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_MESSAGES,
        "items": {
            "oneOf": [
                {
                    "type": "object",
                    "properties": {"role": {"enum": ["system", "developer"]}, "content": _TEXT},
                    "required": ["role", "content"],
                },
                {
                    "type": "object",
                    "properties": {
                        "role": {"const": "user"},
                        "content": {"anyOf": [{"type": "string"}, _USER_PARTS]},
                    },
                    "required": ["role", "content"],
                },
                {
                    "type": "object",
                    "properties": {
                        "role": {"const": "assistant"},
                        "content": {"anyOf": [{"type": "string"}, _TEXT_PARTS, {"type": "null"}]},
                        "tool_calls": {
                            "anyOf": [
                                {"type": "array", "maxItems": MAX_TOOL_CALLS, "items": _TOOL_CALL},
                                {"type": "null"},
                            ]
                        },
                    },
                    "required": ["role"],
                },
                {
                    "type": "object",
                    "properties": {
                        "role": {"const": "tool"},
                        "content": _TEXT,
                        "tool_call_id": {"type": "string", "maxLength": MAX_TOOL_ID_CHARS},
                    },
                    "required": ["role", "content", "tool_call_id"],
                },
            ]
        },
    }
)
def _messages(name: str, v: Any) -> None:
    if not isinstance(v, list) or not v:
        raise invalid(f"'{name}' must be a non-empty array of messages.", name)
    _count(name, v, MAX_MESSAGES, "messages")
    for i, msg in enumerate(v):
        where = f"{name}[{i}]"
        if not isinstance(msg, dict):
            raise invalid(f"Invalid type for '{where}': expected an object.", where)
        role = msg.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise invalid(
                f"Invalid value for '{where}.role': expected one of 'system', 'developer', "
                f"'user', 'assistant', 'tool'.",
                f"{where}.role",
            )
        if role == "assistant" and msg.get("tool_calls") is not None:
            _tool_calls(f"{where}.tool_calls", msg["tool_calls"])
        if role == "tool":
            call_id = msg.get("tool_call_id")
            if not isinstance(call_id, str) or len(call_id) > MAX_TOOL_ID_CHARS:
                raise invalid(
                    f"'{where}.tool_call_id' must be the id of the tool call this message answers "
                    f"(a string of at most {MAX_TOOL_ID_CHARS} characters).",
                    f"{where}.tool_call_id",
                )
        content = msg.get("content")
        if content is None and role == "assistant":
            continue
        if isinstance(content, str):
            continue
        if isinstance(content, list):
            _count(f"{where}.content", content, MAX_CONTENT_PARTS, "parts")
            if all(_part_ok(p, images=role == "user") for p in content):
                continue
        raise invalid(
            f"Invalid value for '{where}.content': expected a string or an array of text parts"
            + (" and image_url parts." if role == "user" else "."),
            f"{where}.content",
        )


def _part_ok(part: Any, *, images: bool) -> bool:
    if not isinstance(part, dict):
        return False
    if part.get("type") == "text":
        return isinstance(part.get("text"), str)
    if part.get("type") == "image_url" and images:
        image = part.get("image_url")
        return (
            isinstance(image, dict)
            and isinstance(image.get("url"), str)
            and image.get("detail", "auto") in ("auto", "low", "high")
        )
    return False


def _tool_calls(name: str, v: Any) -> None:
    if not isinstance(v, list):
        raise invalid(f"'{name}' must be an array of tool calls.", name)
    _count(name, v, MAX_TOOL_CALLS, "tool calls")
    for j, tc in enumerate(v):
        where = f"{name}[{j}]"
        fn = tc.get("function") if isinstance(tc, dict) else None
        if not (
            isinstance(tc, dict)
            and tc.get("type") == "function"
            and isinstance(tc.get("id"), str)
            and len(tc["id"]) <= MAX_TOOL_ID_CHARS
            and isinstance(fn, dict)
            and isinstance(fn.get("arguments"), str)
        ):
            raise invalid(
                f"'{where}' must be a function call: an 'id', 'type': 'function' and a "
                "'function' with a 'name' and 'arguments' (a JSON string).",
                where,
            )
        _function_name(f"{where}.function.name", fn.get("name"))


_TOKEN_ID = {"type": "integer", "minimum": 0, "maximum": MAX_TOKEN_ID}


def _token_ids(v: list) -> list[int] | None:
    """``v`` as token ids (integral floats made ints: JSON has one number type), or None
    when one is not a token id."""
    if all(type(t) is int and 0 <= t <= MAX_TOKEN_ID for t in v):  # noqa: E721 - not bool
        return v
    ids = []
    for t in v:
        if type(t) is float and t.is_integer() and 0 <= t <= MAX_TOKEN_ID:
            t = int(t)
        if type(t) is not int or not 0 <= t <= MAX_TOKEN_ID:  # noqa: E721 - not bool
            return None
        ids.append(t)
    return ids


@_schema(
    {
        "anyOf": [
            {"type": "string"},
            {"type": "array", "minItems": 1, "maxItems": MAX_PROMPTS, "items": {"type": "string"}},
            {"type": "array", "minItems": 1, "items": _TOKEN_ID},
        ]
    }
)
def _prompt(name: str, v: Any) -> Any:
    if isinstance(v, str):
        return None
    if isinstance(v, list) and v and all(isinstance(s, str) for s in v):
        _count(name, v, MAX_PROMPTS, "prompts")
        return None
    ids = _token_ids(v) if isinstance(v, list) and v else None
    if ids is None:
        raise invalid(
            f"'{name}' must be a string, an array of strings or an array of token ids "
            f"(0 to {MAX_TOKEN_ID}).",
            name,
        )
    return ids


@_schema(
    {
        "anyOf": [
            {"type": "string", "minLength": 1},
            {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_PROMPTS,
                "items": {"type": "string", "minLength": 1},
            },
            {"type": "array", "minItems": 1, "maxItems": MAX_PROMPTS, "items": _TOKEN_ID},
            {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_PROMPTS,
                "items": {"type": "array", "items": _TOKEN_ID},
            },
        ]
    }
)
def _embedding_input(name: str, v: Any) -> Any:
    if isinstance(v, str):
        if not v:
            raise invalid(f"'{name}' cannot be empty.", name)
        return None
    if isinstance(v, list) and v and len(v) <= MAX_PROMPTS:
        if all(isinstance(s, str) and s for s in v):
            return None
        ids = _token_ids(v)
        if ids is not None:
            return ids
        if all(isinstance(t, list) for t in v):
            arrays = [_token_ids(t) for t in v]
            if all(a is not None for a in arrays):
                return arrays if any(a is not t for a, t in zip(arrays, v, strict=True)) else v
    raise invalid(
        f"'{name}' must be a non-empty string or an array of at most {MAX_PROMPTS} non-empty "
        f"strings or token arrays (token ids 0 to {MAX_TOKEN_ID}).",
        name,
    )


@_schema({"enum": ["float", "base64"]})
def _encoding_format(name: str, v: Any) -> None:
    if v not in ("float", "base64"):
        raise invalid(f"'{name}' must be 'float' or 'base64'.", name)


_MODEL = _bounded_string(MAX_MODEL_CHARS)

_SAMPLING = {
    "model": _MODEL,
    "max_tokens": _nullable(_integer(1, MAX_TOKENS_LIMIT)),
    "temperature": _nullable(_number(0, 2)),
    "top_p": _nullable(_number(0, 1)),
    "top_k": _nullable(_integer(-1, 100_000)),
    "n": _nullable(_integer(1, MAX_N)),
    "stop": _stop,
    "seed": _nullable(_integer(-(2**63), 2**63 - 1)),
    "presence_penalty": _nullable(_number(-2, 2)),
    "frequency_penalty": _nullable(_number(-2, 2)),
    "stream": _nullable(_boolean),
    "stream_options": _stream_options,
    "user": _nullable(_string),
    "metadata": _nullable(_metadata),
    "logit_bias": _nullable(_logit_bias),
    "cache": _nullable(_boolean),  # Switchyard: false keeps this request out of the caches
}

CHAT_PARAMS: dict[str, Check] = {
    **_SAMPLING,
    "messages": _messages,
    "max_completion_tokens": _nullable(_integer(1, MAX_TOKENS_LIMIT)),
    "logprobs": _nullable(_boolean),
    "top_logprobs": _nullable(_integer(0, 20)),
    "response_format": _nullable(_response_format),
    "store": _nullable(_boolean),
    "tools": _nullable(_tools),
    "tool_choice": _nullable(_tool_choice),
    "parallel_tool_calls": _nullable(_boolean),
}

COMPLETION_PARAMS: dict[str, Check] = {
    **_SAMPLING,
    "prompt": _prompt,
    "logprobs": _nullable(_integer(0, 5)),
    "echo": _nullable(_boolean),
    "best_of": _nullable(_integer(1, MAX_N)),
    "suffix": _nullable(_string),
}

EMBEDDING_PARAMS: dict[str, Check] = {
    "model": _MODEL,
    "input": _embedding_input,
    "encoding_format": _encoding_format,
    "dimensions": _nullable(_integer(1, 4096)),
    "user": _nullable(_string),
}

REQUIRED = {
    "chat.completions": ("model", "messages"),
    "completions": ("model", "prompt"),
    "embeddings": ("model", "input"),
}
TABLES = {
    "chat.completions": CHAT_PARAMS,
    "completions": COMPLETION_PARAMS,
    "embeddings": EMBEDDING_PARAMS,
}


def validate(endpoint: str, body: Any, *, pass_unknown: bool = False) -> dict[str, Any]:
    """Check ``body`` for ``endpoint`` ("chat.completions", "completions", "embeddings") and
    normalise it in place; returns the same dict, or raises a 400 :class:`GatewayError`
    naming the parameter. Normalised: null optional fields removed, integral floats of
    integer parameters made ints, a greedy request's ``temperature`` set to 0 (a positive one
    below :data:`GREEDY_TEMPERATURE`, or a ``top_p`` below it, which is then removed).
    Validating a normalised body again changes nothing. With ``pass_unknown`` (the tier's
    switch), parameters Switchyard does not know are kept as sent (:func:`unknown_params`)."""
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    table = TABLES[endpoint]
    required = REQUIRED[endpoint]
    for name in required:
        if name not in body:
            raise invalid(
                f"Missing required parameter: '{name}'.", name, code="missing_required_parameter"
            )
    for name, value in list(body.items()):
        check = table.get(name)
        if check is None and pass_unknown:
            continue  # forwarded as sent, to OpenAI-compatible deployments only (routing)
        if check is None:
            raise invalid(
                f"Unrecognized request argument supplied: {name[:64]}",
                name[:64],
                code="unknown_parameter",
            )
        if value is None and name not in required:
            del body[name]  # null is absent: never forwarded, never half-counted
            continue
        normalized = check(name, value)
        if normalized is not None and normalized is not value:
            body[name] = normalized
    if endpoint == "chat.completions" and body.get("top_logprobs") and not body.get("logprobs"):
        raise invalid("'top_logprobs' requires 'logprobs' to be true.", "top_logprobs")
    if endpoint == "chat.completions":
        _tools_agree(body)
    if body.get("stream_options") is not None and not body.get("stream"):
        raise invalid("'stream_options' is only allowed when 'stream' is true.", "stream_options")
    if endpoint != "embeddings":
        _greedy(body)
    return body


def _tools_agree(body: dict[str, Any]) -> None:
    """``tool_choice`` that asks for a call needs ``tools``, and a named function must be one
    of them. Without tools, ``tool_choice`` "none" or "auto" and ``parallel_tool_calls`` say
    nothing: they are removed (OpenAI refuses them without tools)."""
    choice = body.get("tool_choice")
    tools = body.get("tools")
    if not tools and choice in (None, "none", "auto"):
        body.pop("tool_choice", None)
        body.pop("parallel_tool_calls", None)
        return
    if choice is None or choice in ("none", "auto"):
        return
    if not tools:
        raise invalid("'tool_choice' is only allowed when 'tools' are specified.", "tool_choice")
    if isinstance(choice, dict):
        wanted = choice["function"]["name"]
        if wanted not in {t["function"]["name"] for t in tools}:
            raise invalid(
                f"'tool_choice' names the function '{wanted}', which is not in 'tools'.",
                "tool_choice.function.name",
            )


def unknown_params(endpoint: str, body: dict[str, Any]) -> list[str]:
    """The parameters of ``body`` that Switchyard does not know (kept by a tier that passes
    them through)."""
    table = TABLES[endpoint]
    return [name for name in body if name not in table]


def capabilities_needed(endpoint: str, body: dict[str, Any]) -> dict[str, str]:
    """The deployment capabilities a validated request needs, each with the parameter that
    needs it: ``tools`` for tools, tool choices, assistant tool calls or tool results;
    ``vision`` for image parts."""
    if endpoint != "chat.completions":
        return {}
    needs: dict[str, str] = {}
    if body.get("tools"):
        needs["tools"] = "tools"
    for i, msg in enumerate(body["messages"]):
        if "tools" not in needs and (msg.get("tool_calls") or msg.get("role") == "tool"):
            needs["tools"] = f"messages[{i}]"
        content = msg.get("content")
        if "vision" not in needs and isinstance(content, list):
            for j, part in enumerate(content):
                if part.get("type") == "image_url":
                    needs["vision"] = f"messages[{i}].content[{j}]"
                    break
    return needs


def _greedy(body: dict[str, Any]) -> None:
    """Say plainly that a request is greedy. A temperature below GREEDY_TEMPERATURE cannot be
    sampled with (logits / 1e-300 is inf in float32, softmax NaN), and top_p 0 keeps no
    token (vLLM refuses it): both mean the most likely token, which temperature 0 says."""
    temperature = body.get("temperature")
    top_p = body.get("top_p")
    if top_p is not None and top_p < GREEDY_TEMPERATURE:
        body["temperature"] = 0
        del body["top_p"]
    elif temperature is not None and 0 < temperature < GREEDY_TEMPERATURE:
        body["temperature"] = 0


def output_cap(body: dict[str, Any]) -> int | None:
    """The client's cap on output tokens per choice (``max_completion_tokens``, else
    ``max_tokens``), or None when it set none. Call on a validated body."""
    cap = body.get("max_completion_tokens")
    if cap is None:
        cap = body.get("max_tokens")
    return None if cap is None else int(cap)


def sequences(body: dict[str, Any]) -> int:
    """How many sequences the request makes the model generate: ``n``, or ``best_of`` when
    larger (completions: the model generates best_of, the client gets n, all are billed)."""
    return max(int(body.get("n") or 1), int(body.get("best_of") or 1))


def max_output_tokens(body: dict[str, Any], default: int | None = None) -> int | None:
    """Worst-case output tokens of the whole request: the per-choice cap
    (:func:`output_cap`, else ``default``) times :func:`sequences`; None when the client set
    no cap and no ``default`` is given (the caller decides what to reserve)."""
    cap = output_cap(body)
    if cap is None:
        cap = default
    return None if cap is None else cap * sequences(body)


# --- the body and the headers, before any of the above ----------------------------------

_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _skeleton(raw: bytes) -> bytes:
    """The brackets of JSON text outside its strings, ``{}`` written as ``[]``: bytes
    operations only (no per-character Python), linear in ``raw``."""
    # Escaped backslashes, then escaped quotes, go first; the quotes left delimit strings.
    unescaped = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(unescaped.split(b'"')[::2])
    return outside.translate(None, _NOT_BRACKETS).replace(b"{", b"[").replace(b"}", b"]")


def _deeper_than(skeleton: bytes, limit: int) -> bool:
    for _ in range(limit):
        # Each pass removes the innermost pairs, one level of nesting (bytes.replace does
        # not rescan what it produced).
        shorter = skeleton.replace(b"[]", b"")
        if not shorter:
            return False
        if len(shorter) == len(skeleton):
            return False  # unbalanced: not JSON, which the parser will say
        skeleton = shorter
    return True


def check_json_shape(raw: bytes) -> None:
    """A 400 ``invalid_json`` for JSON text that nests arrays and objects deeper than
    :data:`MAX_JSON_DEPTH` or holds more than :data:`MAX_JSON_CONTAINERS` of them, found
    before parsing: parsing a megabyte of ``[]`` builds 300,000 lists (0.2 s), and Python's
    json recursed into a RecursionError on 100,000 brackets (a 500)."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return  # the common case: too few brackets to matter
    skeleton = _skeleton(raw)
    if len(skeleton) > 2 * MAX_JSON_CONTAINERS:
        raise invalid_json(
            f"The JSON body holds more than {MAX_JSON_CONTAINERS:,} arrays and objects."
        )
    if _deeper_than(skeleton, MAX_JSON_DEPTH):
        raise _too_deep()


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """The request body as a dict, or a 400 ``invalid_json``: text that is not JSON (NaN and
    Infinity included), not UTF-8 or with lone surrogates (which could not be forwarded),
    too deep or with too many arrays and objects (:func:`check_json_shape`), or not an
    object. The size limit applies before this."""
    check_json_shape(raw)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc):
            raise _too_deep() from None
        raise invalid_json(
            "We could not parse the JSON body of your request. The body must be valid JSON "
            "(UTF-8, no NaN or Infinity, no lone surrogates)."
        ) from None
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.", code="invalid_json")
    return body


def _too_deep() -> GatewayError:
    return invalid_json(
        f"The JSON body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels."
    )


# A plain decimal of at most MAX_COST_USD dollars (no exponent, no sign): the published
# pattern of the header (serving/openapi.py) and the check, one and the same.
MAX_COST_PATTERN = r"^(?:[0-9]{1,6}(?:\.[0-9]*)?|\.[0-9]+|1000000(?:\.0*)?)$"
_MAX_COST = re.compile(MAX_COST_PATTERN)


def parse_max_cost_header(value: str | None) -> int | None:
    """``x-switchyard-max-cost-usd``, the caller's budget for one request, in micro-dollars
    (rounded down), or None when absent. A plain non-negative decimal (``0.002``) of at most
    :data:`MAX_HEADER_NUMBER_CHARS` characters and at most :data:`MAX_COST_USD` dollars; else
    a 400 ``invalid_max_cost``. Checked before any conversion: ``1e999999`` made a
    million-digit integer on the event loop."""
    if value is None:
        return None
    text = value.strip()
    if len(text) > MAX_HEADER_NUMBER_CHARS or not _MAX_COST.fullmatch(text):
        raise invalid(
            "The x-switchyard-max-cost-usd header must be a plain non-negative amount in US "
            f"dollars of at most {MAX_COST_USD:,} (e.g. 0.002), in at most "
            f"{MAX_HEADER_NUMBER_CHARS} characters.",
            param="x-switchyard-max-cost-usd",
            code="invalid_max_cost",
        )
    return int(Decimal(text).scaleb(6))  # at most 1e12 micro-dollars


_CONTENT_LENGTH = re.compile(r"[0-9]{1,19}\Z")


def parse_content_length(value: str | None) -> int | None:
    """A ``Content-Length`` header as an int, or None when absent; a 400 for anything but
    ASCII digits (``"²"`` passes ``str.isdigit`` and then fails ``int``) or more than 19 of
    them."""
    if value is None:
        return None
    text = value.strip()
    if not _CONTENT_LENGTH.match(text):
        raise invalid(
            "The Content-Length header must be a number of bytes.",
            param="content-length",
            code="invalid_content_length",
        )
    return int(text)


def ensure(condition: bool, error: GatewayError) -> None:
    if not condition:
        raise error
