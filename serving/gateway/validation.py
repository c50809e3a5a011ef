"""Request validation against the OpenAI schema: a 400 that names the parameter.

Each endpoint has a table of known parameters and a checker per parameter; anything not in
the table is refused as OpenAI does ("Unrecognized request argument supplied"). Every checker
carries the JSON-schema fragment it enforces (``check.schema``), so the published OpenAPI
document (serving/openapi.py) and the validation are one source of truth.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from serving.gateway.errors import GatewayError, invalid

# A checker raises a 400 for a bad value; it may return a normalized value (an integral
# float such as 1.0 for an integer parameter becomes 1), or None to keep the value.
Check = Callable[[str, Any], Any]

MAX_N = 8
MAX_STOP = 4
MAX_TOKENS_LIMIT = 1_000_000


def _type_name(v: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object", type(None): "null"}.get(type(v), type(v).__name__)  # fmt: skip


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
        if not lo <= v <= hi:
            raise invalid(f"'{name}' must be between {lo} and {hi}, got {v}.", name)

    return check


def _integer(lo: int, hi: int) -> Check:
    @_schema({"type": "integer", "minimum": lo, "maximum": hi})
    def check(name: str, v: Any) -> int:
        if isinstance(v, float) and v.is_integer():
            v = int(v)  # JSON has one number type: 1.0 is the integer 1
        if isinstance(v, bool) or not isinstance(v, int):
            raise invalid(
                f"Invalid type for '{name}': expected an integer, got {_type_name(v)}.", name
            )
        if not lo <= v <= hi:
            raise invalid(f"'{name}' must be between {lo} and {hi}, got {v}.", name)
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


@_schema(
    {
        "anyOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}, "maxItems": MAX_STOP},
            {"type": "null"},
        ]
    }
)
def _stop(name: str, v: Any) -> None:
    if v is None or isinstance(v, str):
        return
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise invalid(f"'{name}' must be a string or an array of strings.", name)
    if len(v) > MAX_STOP:
        raise invalid(f"'{name}' may hold at most {MAX_STOP} sequences.", name)


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


@_schema(
    {
        "type": "object",
        "properties": {"type": {"enum": ["text", "json_object", "json_schema"]}},
        "required": ["type"],
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


def _nullable(check: Check) -> Check:
    @_schema({"anyOf": [schema_of(check), {"type": "null"}]})
    def wrapped(name: str, v: Any) -> Any:
        return None if v is None else check(name, v)

    return wrapped


_TEXT_PARTS = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
        "required": ["type", "text"],
    },
}


@_schema(
    {
        "type": "array",
        "minItems": 1,
        "items": {
            "oneOf": [
                {
                    "type": "object",
                    "properties": {
                        "role": {"enum": ["system", "developer", "user", "tool"]},
                        "content": {"anyOf": [{"type": "string"}, _TEXT_PARTS]},
                    },
                    "required": ["role", "content"],
                },
                {
                    "type": "object",
                    "properties": {
                        "role": {"const": "assistant"},
                        "content": {"anyOf": [{"type": "string"}, _TEXT_PARTS, {"type": "null"}]},
                    },
                    "required": ["role"],
                },
            ]
        },
    }
)
def _messages(name: str, v: Any) -> None:
    if not isinstance(v, list) or not v:
        raise invalid(f"'{name}' must be a non-empty array of messages.", name)
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
        content = msg.get("content")
        if content is None and role == "assistant":
            continue
        if isinstance(content, str):
            continue
        if isinstance(content, list) and all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
            for p in content
        ):
            continue
        raise invalid(
            f"Invalid value for '{where}.content': expected a string or an array of text parts.",
            f"{where}.content",
        )


@_schema(
    {
        "anyOf": [
            {"type": "string"},
            {"type": "array", "minItems": 1, "items": {"type": "string"}},
            {"type": "array", "minItems": 1, "items": {"type": "integer"}},
        ]
    }
)
def _prompt(name: str, v: Any) -> None:
    if isinstance(v, str):
        return
    if (
        isinstance(v, list)
        and v
        and (
            all(isinstance(s, str) for s in v)
            or all(isinstance(t, int) and not isinstance(t, bool) for t in v)
        )
    ):
        return
    raise invalid(f"'{name}' must be a string, an array of strings or an array of token ids.", name)


@_schema(
    {
        "anyOf": [
            {"type": "string", "minLength": 1},
            {
                "type": "array",
                "minItems": 1,
                "maxItems": 2048,
                "items": {"type": "string", "minLength": 1},
            },
            {"type": "array", "minItems": 1, "maxItems": 2048, "items": {"type": "integer"}},
            {
                "type": "array",
                "minItems": 1,
                "maxItems": 2048,
                "items": {"type": "array", "items": {"type": "integer"}},
            },
        ]
    }
)
def _embedding_input(name: str, v: Any) -> None:
    if isinstance(v, str):
        if not v:
            raise invalid(f"'{name}' cannot be empty.", name)
        return
    if isinstance(v, list) and v and len(v) <= 2048:
        if all(isinstance(s, str) and s for s in v):
            return
        if all(isinstance(t, int) and not isinstance(t, bool) for t in v):
            return
        if all(isinstance(t, list) and all(isinstance(i, int) for i in t) for t in v):
            return
    raise invalid(
        f"'{name}' must be a non-empty string or an array of at most 2048 non-empty strings "
        "or token arrays.",
        name,
    )


@_schema({"enum": ["float", "base64"]})
def _encoding_format(name: str, v: Any) -> None:
    if v not in ("float", "base64"):
        raise invalid(f"'{name}' must be 'float' or 'base64'.", name)


_SAMPLING = {
    "model": _string,
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
    "metadata": _nullable(_object),
    "logit_bias": _nullable(_object),
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
    "model": _string,
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


def validate(endpoint: str, body: Any) -> dict[str, Any]:
    """Check ``body`` for ``endpoint`` ("chat.completions", "completions", "embeddings");
    returns it unchanged or raises a 400 :class:`GatewayError` naming the parameter."""
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    table = TABLES[endpoint]
    for name in REQUIRED[endpoint]:
        if name not in body:
            raise invalid(
                f"Missing required parameter: '{name}'.", name, code="missing_required_parameter"
            )
    for name, value in body.items():
        check = table.get(name)
        if check is None:
            raise invalid(
                f"Unrecognized request argument supplied: {name}", name, code="unknown_parameter"
            )
        normalized = check(name, value)
        if normalized is not None and normalized is not value:
            body[name] = normalized
    if endpoint == "chat.completions" and body.get("top_logprobs") and not body.get("logprobs"):
        raise invalid("'top_logprobs' requires 'logprobs' to be true.", "top_logprobs")
    if body.get("stream_options") is not None and not body.get("stream"):
        raise invalid("'stream_options' is only allowed when 'stream' is true.", "stream_options")
    return body


def max_output_tokens(body: dict[str, Any], default: int | None = None) -> int | None:
    """Worst-case output tokens of a request: max_tokens (or max_completion_tokens) times n;
    ``default`` (None: the caller decides) when the request names no cap."""
    mt = body.get("max_completion_tokens") or body.get("max_tokens") or default
    if mt is None:
        return None
    return int(mt) * int(body.get("n") or 1)


def ensure(condition: bool, error: GatewayError) -> None:
    if not condition:
        raise error
