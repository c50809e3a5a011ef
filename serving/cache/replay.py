"""Between the two shapes of an answer: a cached response body replayed as OpenAI stream
chunks, and streamed chunks assembled into a response body for the cache."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

_PIECE = re.compile(r"\s*\S+|\s+")  # a word a chunk, its leading space kept


def fresh_response(
    response: dict[str, Any], *, request_id: str, created: int, model: str
) -> dict[str, Any]:
    """A copy of a cached body under this request's id, time and public model name."""
    body = copy.deepcopy(response)
    body.update(id=request_id, created=created, model=model)
    return body


def _pieces(text: str) -> list[str]:
    return _PIECE.findall(text) or ([text] if text else [])


def _delta(idx: int, delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
    return {"index": idx, "delta": delta, "finish_reason": finish}


def _text(idx: int, text: str, finish: str | None = None) -> dict[str, Any]:
    return {"index": idx, "text": text, "finish_reason": finish, "logprobs": None}


def stream_chunks(
    endpoint: str, response: dict[str, Any], *, include_usage: bool
) -> list[dict[str, Any]]:
    """The chunks a client would have received had ``response`` been streamed."""
    chat = endpoint == "chat.completions"
    kind = "chat.completion.chunk" if chat else "text_completion"
    head = {k: response[k] for k in ("id", "created", "model")}
    chunks: list[dict[str, Any]] = []

    def chunk(choice: dict[str, Any]) -> dict[str, Any]:
        return {**head, "object": kind, "choices": [choice]}

    for choice in response.get("choices", []):
        idx = choice.get("index", 0)
        done = choice.get("finish_reason")
        if chat:
            text = (choice.get("message") or {}).get("content") or ""
            chunks.append(chunk(_delta(idx, {"role": "assistant", "content": ""})))
            chunks.extend(chunk(_delta(idx, {"content": p})) for p in _pieces(text))
            chunks.append(chunk(_delta(idx, {}, done)))
        else:
            chunks.extend(chunk(_text(idx, p)) for p in _pieces(choice.get("text") or ""))
            chunks.append(chunk(_text(idx, "", done)))
    if include_usage and response.get("usage"):
        chunks.append({**head, "object": kind, "choices": [], "usage": response["usage"]})
    return chunks


@dataclass
class StreamAssembler:
    """Collects a stream's raw chunks; :meth:`response` is the body they add up to."""

    texts: dict[int, list[str]] = field(default_factory=dict)
    finish: dict[int, str | None] = field(default_factory=dict)
    broken: bool = False

    def feed(self, endpoint: str, chunk: dict[str, Any]) -> None:
        if "error" in chunk:
            self.broken = True
        for choice in chunk.get("choices") or []:
            idx = choice.get("index", 0)
            if endpoint == "chat.completions":
                piece = (choice.get("delta") or {}).get("content") or ""
            else:
                piece = choice.get("text") or ""
            self.texts.setdefault(idx, []).append(piece)
            if choice.get("finish_reason"):
                self.finish[idx] = choice["finish_reason"]

    def complete(self) -> bool:
        return not self.broken and bool(self.texts) and set(self.finish) == set(self.texts)

    def response(
        self, endpoint: str, *, request_id: str, created: int, model: str, usage: dict[str, int]
    ) -> dict[str, Any]:
        choices = []
        for idx in sorted(self.texts):
            text = "".join(self.texts[idx])
            finish = self.finish.get(idx)
            if endpoint == "chat.completions":
                message = {"role": "assistant", "content": text}
                choices.append({"index": idx, "message": message, "finish_reason": finish})
            else:
                choices.append(_text(idx, text, finish))
        return {
            "id": request_id,
            "object": "chat.completion" if endpoint == "chat.completions" else "text_completion",
            "created": created,
            "model": model,
            "choices": choices,
            "usage": usage,
        }
