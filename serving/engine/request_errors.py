"""Pydantic's validation errors as OpenAI errors: one message, naming one parameter.

:func:`explain` picks the first bad parameter in the order of the body (as a reader would
check it) and says what is wrong with it in the words of OpenAI's own messages:
``'n' must be between 1 and 8, got 99.``, ``Unrecognized request argument supplied: x``,
with ``param`` the path to the value (``messages[3].content``, ``logit_bias.50256``). A
parameter shaped as a choice of forms (``stop``, ``prompt``, ``tool_choice``, a message's
``content``) gets one message that lists its forms, whichever form pydantic tried last.
Limits in the messages are the models' (serving/engine/request_models.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from serving.engine.request_models import (
    LOGIT_BIAS_RANGE,
    MAX_CONTENT_PARTS,
    MAX_MESSAGES,
    MAX_METADATA_KEY_CHARS,
    MAX_METADATA_VALUE_CHARS,
    MAX_PROMPTS,
    MAX_STOP,
    MAX_STOP_CHARS,
    MAX_TOKEN_ID,
    MAX_TOOL_CALLS,
    MAX_TOOL_ID_CHARS,
    MAX_TOOLS,
)

Loc = tuple[int | str, ...]
Errors = Sequence[tuple[Loc, ErrorDetails]]  # one parameter's errors, paths below it


class RequestError(ValueError):
    """A request that breaks a rule: an OpenAI ``invalid_request_error`` (400) naming the
    parameter. The gateway and the worker each turn it into their own error type."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def type_name(v: Any) -> str:
    """A value's JSON type, for a message."""
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object", type(None): "null"}.get(type(v), type(v).__name__)  # fmt: skip


def show(v: Any) -> str:
    """A number for an error message, however large (an int of 5,000 digits cannot even be
    turned into a string in Python 3.11)."""
    if isinstance(v, int) and not isinstance(v, bool) and abs(v).bit_length() > 64:
        return f"an integer of {abs(v).bit_length()} bits"
    return repr(v)[:40]


def dotted(name: str, loc: Loc) -> str:
    """``name`` and the path below it as a ``param``: ``tools[0].function.name``."""
    return name + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)


_EXPECTED = {
    "bool_type": "a boolean",
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "list_type": "an array",
}
_RANGE = {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}
_COUNTED = {  # what a too-long array or object holds, by its name
    "messages": "messages",
    "content": "parts",
    "stop": "sequences",
    "metadata": "pairs",
    "logit_bias": "entries",
    "tools": "tools",
    "tool_calls": "tool calls",
    "prompt": "prompts",
}


def _out_of_range(e: ErrorDetails) -> bool:
    v = e["input"]
    if e["type"] in _RANGE:
        return True
    if e["type"] == "int_type":  # an integral float out of range is left a float
        return type(v) is float and v.is_integer()
    return e["type"] == "float_type" and type(v) is int  # too large to be a float


def value_error(label: str, e: ErrorDetails, bounds: tuple[float, float] | None) -> RequestError:
    """The message for a bad scalar (or a value of the wrong type) at ``label``."""
    kind, v = e["type"], e["input"]
    if bounds is not None and _out_of_range(e):
        lo, hi = bounds
        return RequestError(f"'{label}' must be between {lo} and {hi}, got {show(v)}.", label)
    if kind == "finite_number":
        return RequestError(f"'{label}' must be a finite number, got {v}.", label)
    if kind == "string_too_long":
        most = e.get("ctx", {}).get("max_length")
        return RequestError(f"'{label}' may be at most {most} characters long.", label)
    if kind == "too_long":
        return count_error(label, e["input"], e.get("ctx", {}).get("max_length"))
    if kind == "missing":
        return RequestError(f"Missing required parameter: '{label}'.", label)
    if kind == "extra_forbidden":
        return RequestError(f"Unrecognized request argument supplied: {label}", label)
    expected = _EXPECTED.get(kind)
    if expected:
        return RequestError(
            f"Invalid type for '{label}': expected {expected}, got {type_name(v)}.", label
        )
    return RequestError(f"Invalid value for '{label}'.", label)


def count_error(label: str, v: Any, most: int | None) -> RequestError:
    what = _COUNTED.get(label.rpartition(".")[2].split("[")[0], "items")
    return RequestError(f"'{label}' may hold at most {most} {what}; it has {len(v)}.", label)


def _too_many(label: str, v: Any, most: int) -> RequestError | None:
    return count_error(label, v, most) if isinstance(v, list | dict) and len(v) > most else None


# --- parameters with messages of their own ----------------------------------------------------


def _name_error(label: str, *, function: bool = True) -> RequestError:
    what = "a function name: 1 to 64" if function else "1 to 64"
    return RequestError(f"'{label}' must be {what} letters, digits, underscores or dashes.", label)


def _messages(name: str, v: Any, errors: Errors, bounds: Any) -> RequestError:
    loc, e = errors[0]
    if not loc:
        return _too_many(name, v, MAX_MESSAGES) or RequestError(
            f"'{name}' must be a non-empty array of messages.", name
        )
    i = loc[0]
    where = f"{name}[{i}]"
    if len(loc) == 1:
        if e["type"].startswith("union_tag"):
            return RequestError(
                f"Invalid value for '{where}.role': expected one of 'system', 'developer', "
                "'user', 'assistant', 'tool'.",
                f"{where}.role",
            )
        return RequestError(f"Invalid type for '{where}': expected an object.", where)
    role, field = loc[1], loc[2]  # the role is the union's tag
    if field == "tool_calls":
        below = [(p[3:], err) for p, err in errors if p[:3] == loc[:3]]
        return _tool_calls(f"{where}.tool_calls", v[i]["tool_calls"], below)
    if field == "tool_call_id":
        return RequestError(
            f"'{where}.tool_call_id' must be the id of the tool call this message answers "
            f"(a string of at most {MAX_TOOL_ID_CHARS} characters).",
            f"{where}.tool_call_id",
        )
    content = v[i].get("content")
    return _too_many(f"{where}.content", content, MAX_CONTENT_PARTS) or RequestError(
        f"Invalid value for '{where}.content': expected a string or an array of text parts"
        + (" and image_url parts." if role == "user" else "."),
        f"{where}.content",
    )


def _tool_calls(name: str, v: Any, errors: Errors) -> RequestError:
    loc, _ = errors[0]
    if not loc:
        return _too_many(name, v, MAX_TOOL_CALLS) or RequestError(
            f"'{name}' must be an array of tool calls.", name
        )
    where = f"{name}[{loc[0]}]"
    mine = [p[1:] for p, _ in errors if p[:1] == loc[:1]]
    if all(p == ("function", "name") for p in mine):
        return _name_error(f"{where}.function.name")
    return RequestError(
        f"'{where}' must be a function call: an 'id', 'type': 'function' and a "
        "'function' with a 'name' and 'arguments' (a JSON string).",
        where,
    )


def _tools(name: str, v: Any, errors: Errors, bounds: Any) -> RequestError:
    loc, e = errors[0]
    if not loc:
        return _too_many(name, v, MAX_TOOLS) or RequestError(
            f"'{name}' must be a non-empty array of tools.", name
        )
    where = f"{name}[{loc[0]}]"
    if len(loc) == 1 or loc[1] == "type":
        return RequestError(f"'{where}' must be a tool of type 'function'.", f"{where}.type")
    if len(loc) == 2:
        return RequestError(f"Missing required parameter: '{where}.function'.", f"{where}.function")
    if loc[2] == "name":
        return _name_error(f"{where}.function.name")
    return value_error(dotted(name, loc), e, None)


def _tool_choice(name: str, v: Any, errors: Errors, bounds: Any) -> RequestError:
    if isinstance(v, dict) and v.get("type") == "function" and isinstance(v.get("function"), dict):
        return _name_error(f"{name}.function.name")  # the one rule left to break
    return RequestError(
        f"'{name}' must be 'none', 'auto', 'required' or "
        '{"type": "function", "function": {"name": ...}}.',
        name,
    )


def _response_format(name: str, v: Any, errors: Errors, bounds: Any) -> RequestError:
    loc, e = errors[0]
    if not loc and e["type"].startswith("union_tag"):
        return RequestError(
            f"Invalid value for '{name}.type': expected 'text', 'json_object' or 'json_schema'.",
            f"{name}.type",
        )
    if not loc:
        return value_error(name, e, None)
    where = f"{name}.json_schema"  # the only form with more than a type
    if len(loc) == 2:
        return RequestError(f"Missing required parameter: '{where}'.", where)
    if loc[2] == "name":
        return _name_error(f"{where}.name", function=False)
    return value_error(dotted(name, loc[1:]), e, None)


def _stop(name: str, v: Any, errors: Errors, bounds: Any) -> RequestError:
    if too_many := _too_many(name, v, MAX_STOP):
        return too_many
    if isinstance(v, str) or (isinstance(v, list) and all(isinstance(s, str) for s in v)):
        return RequestError(
            f"Each of '{name}' may be at most {MAX_STOP_CHARS} characters long.", name
        )
    return RequestError(f"'{name}' must be a string or an array of strings.", name)


def _metadata(name: str, v: Any, errors: Errors, bounds: Any) -> RequestError:
    loc, e = errors[0]
    if not loc:
        return value_error(name, e, None)
    if len(loc) > 1:  # the key itself
        return RequestError(
            f"Keys of '{name}' may be at most {MAX_METADATA_KEY_CHARS} characters long.", name
        )
    return RequestError(
        f"'{name}.{str(loc[0])[:MAX_METADATA_KEY_CHARS]}' must be a string of at most "
        f"{MAX_METADATA_VALUE_CHARS} characters.",
        name,
    )


def _logit_bias(name: str, v: Any, errors: Errors, bounds: Any) -> RequestError:
    loc, e = errors[0]
    if not loc:
        return value_error(name, e, None)
    if len(loc) > 1:  # the key itself
        return RequestError(
            f"Keys of '{name}' must be token ids (0 to 999999999), got {str(loc[0])[:20]!r}.",
            name,
        )
    return value_error(f"{name}.{loc[0]}", e, LOGIT_BIAS_RANGE)


def _prompt(name: str, v: Any, errors: Errors, bounds: Any) -> RequestError:
    strings = isinstance(v, list) and v and all(isinstance(s, str) for s in v)
    if strings and (too_many := _too_many(name, v, MAX_PROMPTS)):
        return too_many
    return RequestError(
        f"'{name}' must be a string, an array of strings or an array of token ids "
        f"(0 to {MAX_TOKEN_ID}).",
        name,
    )


def _input(name: str, v: Any, errors: Errors, bounds: Any) -> RequestError:
    if v == "":
        return RequestError(f"'{name}' cannot be empty.", name)
    return RequestError(
        f"'{name}' must be a non-empty string or an array of at most {MAX_PROMPTS} non-empty "
        f"strings or token arrays (token ids 0 to {MAX_TOKEN_ID}).",
        name,
    )


def _encoding_format(name: str, v: Any, errors: Errors, bounds: Any) -> RequestError:
    return RequestError(f"'{name}' must be 'float' or 'base64'.", name)


def _field(name: str, v: Any, errors: Errors, bounds: Any) -> RequestError:
    loc, e = errors[0]
    return value_error(dotted(name, loc), e, None if loc else bounds)


Explainer = Callable[[str, Any, Errors, Any], RequestError]
EXPLAINERS: dict[str, Explainer] = {
    "messages": _messages,
    "tools": _tools,
    "tool_choice": _tool_choice,
    "response_format": _response_format,
    "stop": _stop,
    "metadata": _metadata,
    "logit_bias": _logit_bias,
    "prompt": _prompt,
    "input": _input,
    "encoding_format": _encoding_format,
}


def explain(
    body: dict[str, Any],
    exc: ValidationError,
    required: Sequence[str],
    bounds: dict[str, tuple[float, float]],
) -> RequestError:
    """The error of ``body``'s first bad parameter: a missing ``required`` one, else the
    first in the body's order (``bounds``: the number fields' ranges, for their messages)."""
    errors = exc.errors(include_url=False)
    for name in required:
        if name not in body:
            return RequestError(
                f"Missing required parameter: '{name}'.", name, "missing_required_parameter"
            )
    order = {name: i for i, name in enumerate(body)}
    first = min(errors, key=lambda e: order.get(e["loc"][0], len(order)) if e["loc"] else -1)
    if not first["loc"]:
        return RequestError("The request body must be a JSON object.")
    name = str(first["loc"][0])
    if first["type"] == "extra_forbidden" and len(first["loc"]) == 1:
        return RequestError(
            f"Unrecognized request argument supplied: {name[:64]}", name[:64], "unknown_parameter"
        )
    mine = [(e["loc"][1:], e) for e in errors if e["loc"][:1] == (name,)]
    explainer = EXPLAINERS.get(name, _field)
    return explainer(name, body.get(name), mine, bounds.get(name))
