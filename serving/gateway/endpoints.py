"""The tenant API's endpoints as objects: what differs between chat completions, completions
and embeddings (where the prompt is, how it is estimated, counted and redacted, whether the
endpoint generates text and streams, which upstream path it calls).

An :class:`Endpoint`'s ``name`` is the string stored in request logs and usage records and
used as a metric label and by validation (``"chat.completions"``, ``"completions"``,
``"embeddings"``); the rest of the gateway asks the object instead of comparing names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from serving.gateway import filters, tokens

# What cost-aware routing assumes a request without max_tokens will produce (an estimate for
# choosing among deployments; reservations use the tier's cap or the context window, and no
# max_tokens is ever injected upstream).
EXPECTED_OUTPUT_TOKENS = 256
# The task classifier reads at most this much of the prompt (its encoder truncates anyway).
CLASSIFIER_CHARS = 4096
# What an image part is assumed to cost before the upstream counts it (OpenAI's high-detail
# 1024x1024 image: 85 + 6 x 170 tokens).
IMAGE_TOKENS = 1105


def estimate_tokens(text: str) -> int:
    """A deliberately generous prompt-token estimate (about 3 bytes a token) for reservations
    and the context check; the upstream's exact count replaces it at settlement."""
    return (len(text.encode("utf-8")) + 2) // 3


def message_text(msg: dict[str, Any]) -> str:
    """A message's text: its content, and the names and arguments of its tool calls."""
    content = msg.get("content")
    text = ""
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        text = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    calls = tool_call_text(msg)
    return f"{text}\n{calls}" if text and calls else text or calls


def tool_call_text(part: Any) -> str:
    """The function names and arguments of a message's (or a stream delta's) tool calls."""
    calls = part.get("tool_calls") if isinstance(part, dict) else None
    if not isinstance(calls, list):
        return ""
    out = []
    for c in calls:
        fn = c.get("function") if isinstance(c, dict) else None
        if isinstance(fn, dict):
            out += [v for v in (fn.get("name"), fn.get("arguments")) if isinstance(v, str) and v]
    return "".join(out)


@dataclass(frozen=True)
class Endpoint:
    """An endpoint whose prompt is one body field (``prompt`` or ``input``: a string, a list
    of strings, or token ids). :class:`ChatEndpoint` reads ``messages`` instead."""

    name: str  # as stored and labelled: "chat.completions", "completions", "embeddings"
    path: str  # the upstream path it calls, under the deployment's base URL
    prompt_key: str  # the body field holding the prompt (named by a context-length refusal)
    generates: bool  # answers with generated text (output tokens, egress filters, streams)
    chunk_object: str = ""  # the ``object`` of its stream chunks

    @property
    def streams(self) -> bool:
        """Whether ``stream: true`` is answered with a stream (embeddings never are)."""
        return self.generates

    @property
    def expected_output(self) -> int:
        """Output tokens cost-aware routing assumes when the request names no max_tokens."""
        return EXPECTED_OUTPUT_TOKENS if self.generates else 0

    def prompt_texts(self, body: dict[str, Any]) -> list[str]:
        """The prompt's texts (screened, metered by the tokenizer); none for token ids."""
        value = body[self.prompt_key]
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and value and isinstance(value[0], str):
            return list(value)
        return []

    def classifier_text(self, body: dict[str, Any]) -> str:
        """What the task classifier reads, bounded: its CPU per request must not grow with
        the prompt."""
        return "\n".join(self.prompt_texts(body))[:CLASSIFIER_CHARS]

    def estimate_prompt_tokens(self, body: dict[str, Any]) -> int:
        """The generous prompt estimate reservations, routing and the context check use."""
        value = body[self.prompt_key]
        if isinstance(value, str):
            return estimate_tokens(value)
        if value and isinstance(value[0], int):
            return len(value)
        if value and isinstance(value[0], list):
            return sum(len(v) for v in value)
        return sum(estimate_tokens(v) for v in value)

    def count_prompt_tokens(self, texts: list[str]) -> int:
        """The prompt's tokens by the gateway's tokenizer (blocking: call it off the loop)."""
        return tokens.count_prompt(self.name, texts)

    def redact(self, body: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``body`` with PII redacted from its prompt."""
        body = dict(body)
        value = body[self.prompt_key]
        if isinstance(value, str):
            body[self.prompt_key] = filters.redact(value)
        elif isinstance(value, list) and value and isinstance(value[0], str):
            body[self.prompt_key] = [filters.redact(s) for s in value]
        return body

    def wants_json(self, body: dict[str, Any]) -> bool:
        """Whether the answer must be JSON (checked at egress): chat's ``response_format``."""
        return False

    def choice_text(self, choice: dict[str, Any], final: bool = False) -> str:
        """A choice's text: of a whole answer (``final``) or of one stream chunk."""
        text = choice.get("text")
        return text if isinstance(text, str) else ""

    def set_choice_text(self, choice: dict[str, Any], text: str) -> None:
        """Replace a stream chunk choice's text (redacted, or held back and released)."""
        choice["text"] = text


class ChatEndpoint(Endpoint):
    """Chat completions: the prompt is ``messages`` (and the tools' definitions)."""

    def prompt_texts(self, body: dict[str, Any]) -> list[str]:
        texts = [message_text(m) for m in body["messages"]]
        if body.get("tools"):  # the definitions are prompt tokens too
            texts.append(json.dumps(body["tools"], ensure_ascii=False, separators=(",", ":")))
        return texts

    def classifier_text(self, body: dict[str, Any]) -> str:
        """The last user message, bounded."""
        users = [m for m in body["messages"] if m.get("role") == "user"]
        return message_text(users[-1])[:CLASSIFIER_CHARS] if users else ""

    def estimate_prompt_tokens(self, body: dict[str, Any]) -> int:
        tools = body.get("tools")
        images = sum(
            1
            for m in body["messages"]
            if isinstance(m.get("content"), list)
            for p in m["content"]
            if p.get("type") == "image_url"
        )
        return (
            sum(estimate_tokens(message_text(m)) + 4 for m in body["messages"])
            + 3
            + (estimate_tokens(json.dumps(tools, ensure_ascii=False)) if tools else 0)
            + images * IMAGE_TOKENS
        )

    def redact(self, body: dict[str, Any]) -> dict[str, Any]:
        body = dict(body)
        msgs = []
        for m in body["messages"]:
            m = dict(m)
            if isinstance(m.get("content"), str):
                m["content"] = filters.redact(m["content"])
            elif isinstance(m.get("content"), list):
                m["content"] = [
                    {**p, "text": filters.redact(p["text"])} if p.get("type") == "text" else p
                    for p in m["content"]
                ]  # image parts go as they are
            if m.get("tool_calls"):  # earlier calls' arguments, kept JSON
                m["tool_calls"] = [{**c, "function": dict(c["function"])} for c in m["tool_calls"]]
                filters.redact_tool_calls(m)
            msgs.append(m)
        body["messages"] = msgs
        return body

    def wants_json(self, body: dict[str, Any]) -> bool:
        fmt = body.get("response_format") or {}
        return fmt.get("type") in ("json_object", "json_schema")

    def choice_text(self, choice: dict[str, Any], final: bool = False) -> str:
        part = choice.get("message" if final else "delta")
        text = part.get("content") if isinstance(part, dict) else None
        return text if isinstance(text, str) else ""

    def set_choice_text(self, choice: dict[str, Any], text: str) -> None:
        choice.setdefault("delta", {})["content"] = text


CHAT = ChatEndpoint(
    name="chat.completions",
    path="/chat/completions",
    prompt_key="messages",
    generates=True,
    chunk_object="chat.completion.chunk",
)
COMPLETIONS = Endpoint(
    name="completions",
    path="/completions",
    prompt_key="prompt",
    generates=True,
    chunk_object="text_completion",
)
EMBEDDINGS = Endpoint(name="embeddings", path="/embeddings", prompt_key="input", generates=False)

ENDPOINTS: dict[str, Endpoint] = {e.name: e for e in (CHAT, COMPLETIONS, EMBEDDINGS)}
