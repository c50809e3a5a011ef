"""OpenAI answers made from the engine's deltas: error bodies, a whole completion's JSON body,
and a streamed completion's server-sent events."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse

from serving.engine import protocol
from serving.engine.errors import RequestFailed
from serving.engine.metrics import WorkerMetrics
from serving.engine.protocol import ParsedRequest, ProtocolError
from serving.engine.tools import CallStream
from serving.engine.types import CompletionDelta, RequestUsage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Completion:
    """A completion request being answered: what its body or every chunk of it names."""

    kind: str  # "chat" or "text"
    rid: str  # the completion's id
    created: int  # its Unix time
    model: str
    parsed: ParsedRequest


def error_response(exc: ProtocolError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The OpenAI error answer for ``exc`` (its status and body)."""
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def failure_body(exc: RequestFailed) -> dict[str, Any]:
    """The OpenAI error of a request that ended early, with the work it got (``usage``)."""
    kind = "invalid_request_error" if exc.status < 500 else "server_error"
    u = exc.usage
    return {
        "error": {"message": exc.message, "type": kind, "param": None, "code": exc.code},
        "usage": protocol.usage(u.prompt_tokens, u.completion_tokens, u.cached_tokens),
    }


def sse_event(obj: dict[str, Any]) -> bytes:
    """One server-sent event carrying ``obj`` as compact JSON."""
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


async def sse_body(
    c: Completion,
    deltas: AsyncIterator[CompletionDelta],
    gen: AsyncIterator[CompletionDelta],
    metrics: WorkerMetrics,
    started: float,
) -> AsyncIterator[bytes]:
    """The SSE body. A stream that ends early (the request failed, or was aborted) ends with
    one ``data: {"error": {...}, "usage": {...}}`` event and no ``[DONE]``. ``gen``, the
    engine's generator behind ``deltas``, is closed at the end (aborting what still runs)."""
    sent_first: set[int] = set()
    completion: dict[int, int] = {}
    last: CompletionDelta | None = None
    calls: dict[int, CallStream] = {}  # per choice, when the answer may be a tool call
    try:
        try:
            async for d in deltas:
                first = d.index not in sent_first
                sent_first.add(d.index)
                completion[d.index] = d.completion_tokens
                if d.finish_reason:
                    metrics.requests.labels(d.finish_reason).inc()
                last = d
                if c.parsed.tools:
                    stream = calls.setdefault(d.index, CallStream())
                    for chunk in protocol.chat_chunks(c.rid, c.created, c.model, d, first, stream):
                        yield sse_event(chunk)
                    continue
                yield sse_event(protocol.chunk(c.kind, c.rid, c.created, c.model, d, first))
        except RequestFailed as exc:
            metrics.requests.labels("error").inc()
            yield sse_event(failure_body(exc))
            return
        except Exception as exc:  # noqa: BLE001 - the client hears of it, never a bare end
            log.exception("stream %s failed", c.rid)
            metrics.requests.labels("error").inc()
            yield sse_event(failure_body(_stream_error(exc, last, sum(completion.values()))))
            return
        if c.parsed.include_usage and last is not None:
            yield sse_event(_usage_chunk(c, last, sum(completion.values())))
        yield b"data: [DONE]\n\n"
        metrics.e2e.observe(time.perf_counter() - started)
    finally:
        await gen.aclose()


def _stream_error(exc: Exception, last: CompletionDelta | None, done: int) -> RequestFailed:
    """A stream's unexpected error as a request failure, with the work it got."""
    return RequestFailed(
        f"The worker could not complete this request: {exc}",
        code="engine_error",
        status=500,
        usage=None if last is None else RequestUsage(last.prompt_tokens, done, last.cached_tokens),
    )


def _usage_chunk(c: Completion, last: CompletionDelta, completion_tokens: int) -> dict[str, Any]:
    """The last chunk of a stream that asked for usage (``stream_options.include_usage``)."""
    return {
        "id": c.rid,
        "object": "chat.completion.chunk" if c.kind == "chat" else "text_completion",
        "created": c.created,
        "model": c.model,
        "choices": [],
        "usage": protocol.usage(last.prompt_tokens, completion_tokens, last.cached_tokens),
    }


async def collect(c: Completion, deltas: AsyncIterator[CompletionDelta]) -> dict[str, Any]:
    """A whole (not streamed) completion's body, once every choice has finished."""
    n = c.parsed.params.n
    texts = [""] * n
    finish: list[str | None] = [None] * n
    lps: list[list] = [[] for _ in range(n)]
    completion = [0] * n
    prompt = cached = 0
    async for d in deltas:
        texts[d.index] += d.text
        if d.logprobs:
            lps[d.index].extend(d.logprobs)
        completion[d.index] = d.completion_tokens
        prompt, cached = d.prompt_tokens, d.cached_tokens
        if d.finish_reason:
            finish[d.index] = d.finish_reason
    return {
        "id": c.rid,
        "object": "chat.completion" if c.kind == "chat" else "text_completion",
        "created": c.created,
        "model": c.model,
        "choices": [_choice(c, i, texts[i], finish[i], lps[i]) for i in range(n)],
        "usage": protocol.usage(prompt, sum(completion), cached),
    }


def _choice(c: Completion, i: int, text: str, finish: str | None, logprobs: list) -> dict[str, Any]:
    """Choice ``i`` of a whole completion's body."""
    want_logprobs = c.parsed.params.logprobs
    if c.kind == "chat":
        message, reason = protocol.chat_message(text, finish, c.parsed.tools)
        return {
            "index": i,
            "message": message,
            "finish_reason": reason,
            "logprobs": protocol.chat_logprobs(logprobs) if want_logprobs else None,
        }
    return {
        "index": i,
        "text": text,
        "finish_reason": finish,
        "logprobs": protocol.text_logprobs(logprobs) if want_logprobs else None,
    }
