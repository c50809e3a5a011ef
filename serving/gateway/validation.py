"""Request validation against the OpenAI schema: a 400 that names the parameter.

The rules are the request models' (serving/engine/request_models.py, pydantic), which the
model worker (serving/engine/protocol.py) and the published OpenAPI document
(serving/openapi.py) share, so the three cannot disagree about a field or a limit. A
parameter Switchyard does not know is refused as OpenAI does ("Unrecognized request argument
supplied"), unless the tier passes them through (``validate(..., pass_unknown=True)``;
:func:`unknown_params` names them for routing, which sends such requests to
OpenAI-compatible deployments only). Here are the rules that span fields (``top_logprobs``
needs ``logprobs``, ``stream_options`` needs ``stream``, ``tool_choice`` and ``tools`` agree)
and :func:`capabilities_needed`: the deployment capabilities a request needs (``tools``,
``vision``), which routing then requires.

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

import re
from decimal import Decimal
from typing import Any

import orjson

from serving.engine.request_errors import RequestError
from serving.engine.request_validation import BY_ENDPOINT, CHAT, COMPLETION, EMBEDDING
from serving.engine.types import GREEDY_TEMPERATURE
from serving.gateway.errors import GatewayError, invalid, invalid_json

MAX_JSON_DEPTH = 64
MAX_JSON_CONTAINERS = 20_000  # arrays and objects in one body (2,048 messages need ~6,000)
MAX_COST_USD = 1_000_000  # the most x-switchyard-max-cost-usd may say, per request
MAX_HEADER_NUMBER_CHARS = 32

# The parameters each endpoint knows.
CHAT_PARAMS = CHAT.fields
COMPLETION_PARAMS = COMPLETION.fields
EMBEDDING_PARAMS = EMBEDDING.fields


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
    model = BY_ENDPOINT[endpoint]
    try:
        checked = model.validate(body, ignore_unknown=pass_unknown)
    except RequestError as exc:
        raise invalid(exc.message, exc.param, code=exc.code) from None
    if None in body.values():  # null is absent: never forwarded, never half-counted
        for name in [k for k, v in body.items() if v is None and k in model.fields]:
            del body[name]
    for name in model.normalised.intersection(body):
        body[name] = checked[name]  # 3.0 sent for an integer is the integer 3
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
    known = BY_ENDPOINT[endpoint].fields
    return [name for name in body if name not in known]


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
    """Whether the bracket skeleton (``[`` and ``]`` only) nests deeper than ``limit``: the
    running depth (``[`` +1, ``]`` -1) in one vectorised pass (numpy), not a Python loop and
    not one pass per level (a body nested 19,999 deep cost the event loop 8 ms that way)."""
    import numpy as np

    steps = np.frombuffer(skeleton, dtype=np.uint8).astype(np.int8)
    steps = 92 - steps  # b"[" (91) -> 1, b"]" (93) -> -1
    return bool(steps.size) and int(np.cumsum(steps, dtype=np.int32).max()) > limit


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
