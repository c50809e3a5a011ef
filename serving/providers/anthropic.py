"""Anthropic's Messages API <-> OpenAI chat completions, both directions, JSON and streaming.

Outbound (a deployment of kind ``anthropic``): :func:`to_messages_request` turns the OpenAI
chat body the pipeline built into a Messages request, :func:`to_chat_completion` turns the
answer back, and :class:`StreamTranslator` turns Messages stream events into OpenAI chunks as
they arrive. Inbound (``POST /v1/messages``): :func:`from_messages_request` turns a Messages
request into an OpenAI chat body for the pipeline, :func:`to_message` and
:class:`MessageStreamWriter` turn its answer into Anthropic's shapes.

Wire format: https://docs.anthropic.com/en/api/messages and
https://docs.anthropic.com/en/docs/build-with-claude/streaming
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from serving.gateway.errors import GatewayError, invalid

API_VERSION = "2023-06-01"
# Anthropic requires max_tokens; a request without one gets this, bounded by the window.
DEFAULT_MAX_TOKENS = 4096

STOP_TO_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}
FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# Gateway status -> Anthropic error type (https://docs.anthropic.com/en/api/errors).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def headers(api_key: str, request_id: str) -> dict[str, str]:
    """The Messages API's headers: the operator's key as ``x-api-key``, the API version."""
    h = {
        "content-type": "application/json",
        "anthropic-version": API_VERSION,
        "x-request-id": request_id,
    }
    if api_key:
        h["x-api-key"] = api_key
    return h


# ---- outbound: OpenAI request -> Messages request -------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise invalid("An image_url part needs a url.", "messages")
    if url.startswith("data:"):
        meta, _, data = url[5:].partition(",")
        media_type, _, encoding = meta.partition(";")
        if encoding != "base64" or not data:
            raise invalid("Image data URLs must be base64 encoded.", "messages")
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


def _user_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content or []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif part.get("type") == "image_url":
            blocks.append(_image_block(part))
        else:
            raise invalid(
                f"Content parts of type {part.get('type')!r} cannot be sent to an Anthropic "
                "deployment.",
                "messages",
            )
    return blocks


def _tool_input(arguments: Any) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments or "{}")
    except (TypeError, ValueError):
        raise invalid("A tool call's arguments are not valid JSON.", "messages") from None
    return value if isinstance(value, dict) else {"value": value}


def _assistant_blocks(msg: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = _text_of(msg.get("content"))
    if text:
        blocks.append({"type": "text", "text": text})
    for tc in msg.get("tool_calls") or []:
        fn = tc.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": tc.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
                "name": fn.get("name", ""),
                "input": _tool_input(fn.get("arguments")),
            }
        )
    return blocks


def _append(out: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Add a turn; consecutive turns of one role become one (the API alternates roles)."""
    if not blocks:
        return
    if out and out[-1]["role"] == role:
        out[-1]["content"].extend(blocks)
    else:
        out.append({"role": role, "content": blocks})


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for t in tools:
        fn = t.get("function") or {}
        tool = {
            "name": fn.get("name", ""),
            "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
        }
        if fn.get("description"):
            tool["description"] = fn["description"]
        out.append(tool)
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if isinstance(choice, dict):
        out: dict[str, Any] = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "auto" or parallel is False:
        out = {"type": "auto"}
    else:
        return None
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


def to_messages_request(body: dict[str, Any], context_window: int) -> dict[str, Any]:
    """A Messages API request for an OpenAI chat body (already validated by the pipeline)."""
    if int(body.get("n") or 1) > 1:
        raise invalid("Anthropic deployments produce one choice; n must be 1.", "n")
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for msg in body.get("messages") or []:
        role = msg.get("role")
        if role in ("system", "developer"):
            text = _text_of(msg.get("content"))
            if text:
                system.append(text)
        elif role == "user":
            _append(messages, "user", _user_blocks(msg.get("content")))
        elif role == "assistant":
            _append(messages, "assistant", _assistant_blocks(msg))
        elif role == "tool":
            result = {
                "type": "tool_result",
                "tool_use_id": msg.get("tool_call_id") or "",
                "content": _text_of(msg.get("content")),
            }
            _append(messages, "user", [result])
        else:
            raise invalid(f"Messages of role {role!r} cannot be sent to Anthropic.", "messages")
    cap = body.get("max_completion_tokens") or body.get("max_tokens")
    out: dict[str, Any] = {
        "model": body["model"],
        "messages": messages,
        "max_tokens": int(cap) if cap else max(1, min(DEFAULT_MAX_TOKENS, context_window)),
    }
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        # The Messages API has no response_format: ask for JSON in the system prompt (the
        # pipeline still checks that the answer parses).
        schema = (fmt.get("json_schema") or {}).get("schema")
        system.append(
            "Answer with one JSON object and nothing else."
            + (f" It must match this JSON schema: {json.dumps(schema)}" if schema else "")
        )
    if system:
        out["system"] = "\n\n".join(system)
    if body.get("temperature") is not None:
        out["temperature"] = min(float(body["temperature"]), 1.0)  # Anthropic's range: 0-1
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None and body.get("tools"):
        out["tool_choice"] = choice
    if isinstance(body.get("user"), str) and body["user"]:
        out["metadata"] = {"user_id": body["user"]}
    if body.get("stream"):
        out["stream"] = True
    return out


# ---- outbound: Messages answer -> OpenAI ---------------------------------------------------


def usage_to_openai(usage: dict[str, Any] | None) -> dict[str, Any]:
    """Anthropic's usage as OpenAI's: prompt tokens include the cached ones (Anthropic counts
    cache reads and writes apart from ``input_tokens``); cache reads are ``cached_tokens``."""
    usage = usage if isinstance(usage, dict) else {}

    def n(key: str) -> int:
        v = usage.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0

    cached = n("cache_read_input_tokens")
    prompt = n("input_tokens") + cached + n("cache_creation_input_tokens")
    completion = n("output_tokens")
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def to_chat_completion(resp: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat completion for a Messages API answer."""
    if not isinstance(resp, dict) or resp.get("type") != "message":
        raise ValueError("not a Messages API answer")
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in resp.get("content") or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            text.append(str(block.get("text") or ""))
        elif block.get("type") == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": json.dumps(block.get("input") or {}),
                    },
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": f"chatcmpl-{resp.get('id', uuid.uuid4().hex)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": resp.get("model") or model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": STOP_TO_FINISH.get(resp.get("stop_reason") or "", "stop"),
            }
        ],
        "usage": usage_to_openai(resp.get("usage")),
    }


class StreamTranslator:
    """Messages stream events -> OpenAI chat chunks, one event at a time."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.usage: dict[str, Any] = {}
        self.tool_index: dict[int, int] = {}  # content block index -> OpenAI tool call index
        self.done = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """The OpenAI chunks for one event (``error`` events are the caller's to raise)."""
        kind = event.get("type")
        if kind == "message_start":
            msg = event.get("message") or {}
            self.id = f"chatcmpl-{msg.get('id') or uuid.uuid4().hex}"
            self.usage.update(msg.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                idx = self.tool_index.setdefault(event.get("index", 0), len(self.tool_index))
                call = {
                    "index": idx,
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""},
                }
                return [self._chunk({"tool_calls": [call]})]
            if block.get("type") == "text" and block.get("text"):
                return [self._chunk({"content": block["text"]})]
            return []
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": delta.get("text") or ""})]
            if delta.get("type") == "input_json_delta" and event.get("index") in self.tool_index:
                call = {
                    "index": self.tool_index[event["index"]],
                    "function": {"arguments": delta.get("partial_json") or ""},
                }
                return [self._chunk({"tool_calls": [call]})]
            return []  # thinking and signature deltas are not part of the OpenAI answer
        if kind == "message_delta":
            self.usage.update(
                {k: v for k, v in (event.get("usage") or {}).items() if v is not None}
            )
            stop = (event.get("delta") or {}).get("stop_reason")
            finish = STOP_TO_FINISH.get(stop or "", "stop")
            usage_chunk = {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": usage_to_openai(self.usage),
            }
            return [self._chunk({}, finish), usage_chunk]
        if kind == "message_stop":
            self.done = True
        return []  # ping, content_block_stop, unknown events


# ---- inbound: Messages request -> OpenAI chat body -----------------------------------------


def _bad(message: str) -> GatewayError:
    return invalid(message)


def _source_url(block: dict[str, Any]) -> str:
    src = block.get("source")
    if not isinstance(src, dict):
        raise _bad("An image block needs a source.")
    if src.get("type") == "base64":
        media, data = src.get("media_type"), src.get("data")
        if not isinstance(media, str) or not isinstance(data, str):
            raise _bad("A base64 image source needs media_type and data.")
        return f"data:{media};base64,{data}"
    if src.get("type") == "url" and isinstance(src.get("url"), str):
        return src["url"]
    raise _bad("Image sources must be of type base64 or url.")


def _result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


def _inbound_turn(msg: Any) -> list[dict[str, Any]]:
    if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant"):
        raise _bad("messages: each message needs a role of user or assistant.")
    content = msg.get("content")
    if isinstance(content, str):
        return [{"role": msg["role"], "content": content}]
    if not isinstance(content, list):
        raise _bad("messages: content must be a string or a list of content blocks.")
    parts: list[dict[str, Any]] = []
    tool_calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            if not isinstance(block.get("text"), str):
                raise _bad("messages: a text block needs text.")
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image" and msg["role"] == "user":
            parts.append({"type": "image_url", "image_url": {"url": _source_url(block)}})
        elif kind == "tool_use" and msg["role"] == "assistant":
            if not (
                isinstance(block.get("id"), str)
                and isinstance(block.get("name"), str)
                and isinstance(block.get("input"), dict)
            ):
                raise _bad(
                    "messages: a tool_use block needs a string id and name, and an input object."
                )
            tool_calls.append(
                {
                    "id": str(block.get("id") or ""),
                    "type": "function",
                    "function": {
                        "name": str(block.get("name") or ""),
                        "arguments": json.dumps(block.get("input") or {}),
                    },
                }
            )
        elif kind == "tool_result" and msg["role"] == "user":
            if not isinstance(block.get("tool_use_id"), str) or not isinstance(
                block.get("content", ""), str | list
            ):
                raise _bad("messages: a tool_result block needs a tool_use_id and its content.")
            results.append(
                {
                    "role": "tool",
                    "tool_call_id": str(block.get("tool_use_id") or ""),
                    "content": _result_text(block.get("content")),
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise _bad(f"messages: content blocks of type {kind!r} are not supported here.")
    if msg["role"] == "assistant":
        turn: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(p["text"] for p in parts) or None,
        }
        if tool_calls:
            turn["tool_calls"] = tool_calls
        return [turn]
    if not parts:
        return results
    texts_only = all(p["type"] == "text" for p in parts)
    user = "".join(p["text"] for p in parts) if texts_only else parts
    return [*results, {"role": "user", "content": user}]


def from_messages_request(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat body for a Messages API request. Shapes are checked here; values
    (ranges, sizes, the model) are the pipeline's validation's, as for any chat request."""
    if not isinstance(body.get("model"), str):
        raise invalid("model: a model name is required.", "model")
    if "max_tokens" not in body:
        raise invalid("max_tokens: Field required", "max_tokens")
    if not isinstance(body.get("messages"), list):
        raise invalid("messages: Field required", "messages")
    out: dict[str, Any] = {"model": body["model"], "max_tokens": body["max_tokens"]}
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        text = system if isinstance(system, str) else _result_text(system)
        if not isinstance(system, str | list):
            raise _bad("system: must be a string or a list of text blocks.")
        messages.append({"role": "system", "content": text})
    for msg in body["messages"]:
        messages.extend(_inbound_turn(msg))
    out["messages"] = messages
    for src, dst in (("temperature", "temperature"), ("top_p", "top_p"), ("stream", "stream")):
        if body.get(src) is not None:
            out[dst] = body[src]
    if body.get("stop_sequences"):
        out["stop"] = body["stop_sequences"]
    meta = body.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("user_id"), str):
        out["user"] = meta["user_id"]
    tools = body.get("tools")
    if tools:
        if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
            raise _bad("tools: must be a list of tool definitions.")
        out["tools"] = [
            {
                "type": "function",
                "function": {
                    k: v
                    for k, v in (
                        ("name", t.get("name")),
                        ("description", t.get("description")),
                        ("parameters", t.get("input_schema")),
                    )
                    if v is not None
                },
            }
            for t in tools
        ]
    choice = body.get("tool_choice")
    if choice is not None and not isinstance(choice, dict):
        raise _bad("tool_choice: must be an object with a type.")
    if isinstance(choice, dict):
        kind = choice.get("type")
        mapped = {"auto": "auto", "any": "required", "none": "none"}.get(kind)
        if kind == "tool":
            mapped = {"type": "function", "function": {"name": choice.get("name")}}
        if mapped is None:
            raise _bad("tool_choice: type must be auto, any, tool or none.")
        out["tool_choice"] = mapped
        if choice.get("disable_parallel_tool_use"):
            out["parallel_tool_calls"] = False
    return out


# ---- inbound: OpenAI answer -> Messages answer ---------------------------------------------


def _usage_from_call(prompt: int, completion: int, cached: int) -> dict[str, int]:
    return {
        "input_tokens": max(prompt - cached, 0),
        "output_tokens": completion,
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }


def to_message(resp: dict[str, Any], model: str) -> dict[str, Any]:
    """A Messages API answer for an OpenAI chat completion (its first choice)."""
    choice = (resp.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if msg.get("content"):
        content.append({"type": "text", "text": msg["content"]})
    for tc in msg.get("tool_calls") or []:
        fn = tc.get("function") or {}
        try:
            args = json.loads(fn.get("arguments") or "{}")
        except ValueError:
            args = {"arguments": fn.get("arguments")}
        content.append(
            {"type": "tool_use", "id": tc.get("id"), "name": fn.get("name"), "input": args}
        )
    usage = resp.get("usage") or {}
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": FINISH_TO_STOP.get(choice.get("finish_reason") or "", "end_turn"),
        "stop_sequence": None,
        "usage": _usage_from_call(
            usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0, cached
        ),
    }


def error_body(exc: GatewayError) -> dict[str, Any]:
    """Anthropic's error shape for a gateway refusal."""
    kind = ERROR_TYPES.get(exc.status) or (
        "api_error" if exc.status >= 500 else "invalid_request_error"
    )
    return {"type": "error", "error": {"type": kind, "message": exc.message}}


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class MessageStreamWriter:
    """OpenAI chunks -> Messages stream events (bytes), for the inbound endpoint."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.block = -1  # index of the open content block
        self.open_kind: str | None = None
        self.tools: dict[int, int] = {}  # OpenAI tool call index -> block index
        self.finish: str | None = None

    def start(self, input_tokens: int) -> bytes:
        message = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 0},
        }
        return sse("message_start", {"type": "message_start", "message": message})

    def _close(self) -> bytes:
        if self.open_kind is None:
            return b""
        self.open_kind = None
        return sse("content_block_stop", {"type": "content_block_stop", "index": self.block})

    def _open(self, block: dict[str, Any]) -> bytes:
        out = self._close()
        self.block += 1
        self.open_kind = block["type"]
        return out + sse(
            "content_block_start",
            {"type": "content_block_start", "index": self.block, "content_block": block},
        )

    def feed(self, chunk: dict[str, Any]) -> bytes:
        out = b""
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self.open_kind != "text":
                    out += self._open({"type": "text", "text": ""})
                out += sse(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": self.block,
                        "delta": {"type": "text_delta", "text": text},
                    },
                )
            for tc in delta.get("tool_calls") or []:
                idx = tc.get("index", 0)
                fn = tc.get("function") or {}
                if idx not in self.tools:
                    out += self._open(
                        {
                            "type": "tool_use",
                            "id": tc.get("id"),
                            "name": fn.get("name"),
                            "input": {},
                        }
                    )
                    self.tools[idx] = self.block
                if fn.get("arguments"):
                    out += sse(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": self.tools[idx],
                            "delta": {"type": "input_json_delta", "partial_json": fn["arguments"]},
                        },
                    )
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return out

    def end(self, prompt: int, completion: int, cached: int) -> bytes:
        usage = _usage_from_call(prompt, completion, cached)
        delta = {
            "type": "message_delta",
            "delta": {
                "stop_reason": FINISH_TO_STOP.get(self.finish or "", "end_turn"),
                "stop_sequence": None,
            },
            "usage": usage,
        }
        return (
            self._close()
            + sse("message_delta", delta)
            + sse("message_stop", {"type": "message_stop"})
        )

    def error(self, exc: GatewayError) -> bytes:
        return sse("error", error_body(exc))
