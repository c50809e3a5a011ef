"""The streaming call: a cached answer replayed, or the upstream's chunks through failover,
relayed with egress applied chunk by chunk, then the call's settlement.

Egress on a stream: PII is redacted as text arrives (held back only as long as a match could
still grow), tool-call arguments likewise; when JSON was asked for, each finished answer is
checked at the end. A stream that ends early for any reason ends with an ``{"error": ...}``
chunk, never a silent truncation, and whatever was produced is metered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Iterator
from typing import Any

from serving.cache.stage import CacheStage
from serving.gateway import filters, metering
from serving.gateway.call import Call
from serving.gateway.endpoints import tool_call_text
from serving.gateway.errors import GatewayError, upstream_error
from serving.gateway.metering import Meter
from serving.routing.failover import Failover


class Relay:
    """One stream's egress: per choice, the text seen (metered when the upstream reports no
    usage), the redactors holding text back, and which choices called tools, were cut by
    max_tokens, or ended."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.include_usage = bool((call.body.get("stream_options") or {}).get("include_usage"))
        self.redactors: dict[int, filters.StreamRedactor] = {}
        self.texts: dict[int, list[str]] = {}
        self.calling: set[int] = set()  # choices that answered with tool calls
        self.call_redactors: dict[int, filters.ToolCallRedactor] = {}
        self.cut: set[int] = set()  # choices that max_tokens ended (JSON may be unfinished)
        self.ended: set[int] = set()
        self.usage_chunk: dict[str, Any] | None = None  # sent last, just before [DONE]
        self.produced = 0  # chunks that carried text or tool calls

    def feed(self, chunk: dict[str, Any]) -> dict[str, Any] | None:
        """An upstream chunk, filtered, to relay; ``None`` for one not relayed (now)."""
        usage = chunk.get("usage")
        metering.usage_from(self.call, usage)
        if not chunk.get("choices"):
            if usage and self.include_usage:
                self.usage_chunk = chunk  # sent after the held-back text, just before [DONE]
            return None
        for choice in chunk["choices"]:
            self._choice(choice)
        return chunk

    def _choice(self, choice: dict[str, Any]) -> None:
        call, api = self.call, self.call.api
        idx = choice.get("index", 0)
        if choice.get("finish_reason"):
            self.ended.add(idx)
            if choice["finish_reason"] == "length":
                self.cut.add(idx)
        called = tool_call_text(choice.get("delta"))
        if called:  # relayed as it came; metered like text
            self.calling.add(idx)
            self._produced(idx, called)
            if call.tier.pii_redaction:
                red_calls = self.call_redactors.setdefault(idx, filters.ToolCallRedactor())
                red_calls.feed(choice["delta"])
        if choice.get("finish_reason") and idx in self.call_redactors:
            held_args = self.call_redactors.pop(idx).flush()
            if held_args:
                delta = choice.setdefault("delta", {})
                delta["tool_calls"] = [*(delta.get("tool_calls") or []), *held_args]
        piece = api.choice_text(choice)
        if piece:
            self._produced(idx, piece)
            if call.tier.pii_redaction:
                red = self.redactors.setdefault(idx, filters.StreamRedactor())
                held = red.feed(piece)
                api.set_choice_text(choice, held)
                if choice.get("finish_reason"):
                    api.set_choice_text(choice, held + red.flush())
        elif choice.get("finish_reason") and idx in self.redactors:
            # What the redactor held back goes with the finishing chunk, not
            # after it (OpenAI's last chunk often carries no text).
            rest = self.redactors[idx].flush()
            if rest:
                api.set_choice_text(choice, rest)

    def _produced(self, idx: int, text: str) -> None:
        self.produced += 1
        if self.call.ttft is None:
            self.call.ttft = time.perf_counter() - self.call.started
        self.texts.setdefault(idx, []).append(text)

    def held_back(self) -> Iterator[dict[str, Any]]:
        """Chunks with the text the redactors still hold, redacted."""
        for idx, red in self.redactors.items():
            rest = red.flush()
            if rest:
                yield self._tail_chunk(idx, rest)

    def endings(self) -> Iterator[dict[str, Any]]:
        """After the upstream's last chunk: the held-back text, then an error chunk for each
        answer that should be JSON and is not, or for a stream cut before every choice
        finished (the call's status says so)."""
        call = self.call
        if call.tier.pii_redaction:
            yield from self.held_back()
        if call.api.wants_json(call.body):
            for idx, parts in self.texts.items():
                if idx in self.calling or idx in self.cut:
                    continue
                if not filters.is_valid_json("".join(parts)):
                    call.status, call.error_code = 502, "invalid_json_output"
                    yield {
                        "error": {
                            "message": "The model's output was not valid JSON although "
                            "response_format asked for JSON.",
                            "type": "api_error",
                            "param": None,
                            "code": "invalid_json_output",
                            "index": idx,
                        }
                    }
        choices = max(int(call.body.get("n") or 1), 1)
        if call.error_code != "invalid_json_output" and len(self.ended) < choices:
            # The upstream closed the stream before every choice finished: the client
            # must know its answer is cut short, never see a bare [DONE].
            call.status, call.error_code = 502, "upstream_truncated"
            yield upstream_error(
                "The deployment ended the stream before the answer was complete; "
                "the tokens received were metered."
            ).body()

    def _tail_chunk(self, idx: int, text: str) -> dict[str, Any]:
        call = self.call
        choice: dict[str, Any] = {"index": idx, "finish_reason": None}
        call.api.set_choice_text(choice, text)
        return {
            "id": call.request_id,
            "object": call.api.chunk_object,
            "created": int(call.created.timestamp()),
            "model": call.route.model,
            "choices": [choice],
        }


class Streaming:
    """One per gateway, over its cache, failover and meter."""

    def __init__(self, cache: CacheStage, failover: Failover, meter: Meter) -> None:
        self.cache = cache
        self.failover = failover
        self.meter = meter

    async def stream(self, call: Call) -> AsyncGenerator[dict[str, Any], None]:
        """Yield OpenAI stream chunks (filtered). The caller frames them (SSE or WebSocket).

        A failure after tokens were sent ends with an ``{"error": ...}`` chunk, never a silent
        truncation; whatever was produced is metered. Closing this iterator early (client
        gone, cancel) closes the upstream stream and meters what was produced.
        """
        hit = await self.cache.lookup(call)
        if hit is not None:
            replay = self.cache.serve_stream(call, hit)
            await asyncio.shield(self.meter.finish(call))
            for chunk in replay:
                yield chunk
            return
        relay = Relay(call)
        try:
            async for chunk in self.failover.stream(
                call, call.api.path, call.upstream_body, **call.upstream_options()
            ):
                chunk["model"] = call.route.model
                self.cache.observe(call, chunk)
                out = relay.feed(chunk)
                if out is not None:
                    yield out
            for chunk in relay.endings():
                yield chunk
            await asyncio.shield(metering.count_if_unreported(call, relay.texts))
            if call.status == 200:
                self.cache.keep(call)  # queued with the settlement by finish()
            await asyncio.shield(self.meter.finish(call))
            if relay.usage_chunk is not None:
                yield relay.usage_chunk
        except GatewayError as exc:
            call.status, call.error_code = exc.status, exc.code or "upstream_error"
            metering.usage_from(call, getattr(exc, "usage", None))
            await asyncio.shield(metering.count_if_unreported(call, relay.texts))
            await asyncio.shield(self.meter.finish(call))
            if relay.produced == 0 and call.ttft is None:
                raise
            for chunk in relay.held_back():  # the held-back text, redacted, then the error
                yield chunk
            yield exc.body()
        finally:
            if not call.finished:
                # Client went away or cancelled: meter what it got.
                call.status, call.error_code = 499, "client_closed"
                await asyncio.shield(metering.count_if_unreported(call, relay.texts))
                await asyncio.shield(self.meter.finish(call))
