"""The cache stage of the gateway pipeline: look up before the provider call, store after.

    plan     which caches apply to this call (tier switches, determinism, bypass)
    lookup   exact (Redis) first, then semantic (MiniLM + pgvector + the second check)
    keep     after a successful miss: queued with the request's settlement (one round trip);
             the semantic entry goes through a write-behind stream, stored by Celery

Cache failures never fail a request: a lookup that errors is a miss, a store that errors is
logged.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from asgiref.sync import sync_to_async

from serving.cache import embedder, semantic
from serving.cache.agreement import prompts_agree
from serving.cache.exact import CachedAnswer, ExactCache, queue_put
from serving.cache.keys import (
    SemanticKey,
    bypass_requested,
    exact_key,
    is_deterministic,
    scope_for,
    semantic_key,
)
from serving.cache.replay import StreamAssembler, fresh_response, stream_chunks
from serving.cache.writeback import CACHE_STREAM, semantic_write
from serving.gateway import filters
from switchyard.streams import stream_add

log = logging.getLogger(__name__)

ENDPOINTS = ("chat.completions", "completions")
# MiniLM reads at most 256 word pieces; longer prompts would be compared by their start only.
MAX_SEMANTIC_CHARS = 1000


@dataclass
class CachePlan:
    scope: str
    model: str
    lookup: bool
    store: bool
    exact_key: str | None
    semantic: SemanticKey | None
    embedding: list[float] | None = None
    stream: StreamAssembler | None = None
    # The semantic key waits for content screening (a tier that redacts PII stores the
    # redacted prompt): computed by ``lookup``.
    semantic_deferred: bool = False
    # The exact entry as read in admission's round trip (``prefetch``), else not yet read.
    exact_read: bool = False
    exact_raw: bytes | None = None


def hit_charge(full_cost_micro_usd: int, price_percent: int) -> tuple[int, int]:
    """(charged, saved) in micro-dollars for a hit on an answer that would cost ``full``;
    rounded half up, so charged + saved == full."""
    charged = (full_cost_micro_usd * price_percent + 50) // 100
    return charged, full_cost_micro_usd - charged


class CacheStage:
    def __init__(self, client: aioredis.Redis) -> None:
        self.exact = ExactCache(client)
        self._background: set[asyncio.Task] = set()

    # ---- plan and lookup -------------------------------------------------------------------

    def plan(self, call: Any) -> CachePlan | None:
        """Which caches apply to ``call`` (after routing), or ``None``. Also strips the
        ``cache`` request field from the upstream body. Planned in admission's round trip
        (:meth:`prefetch`), before content screening: on a tier that redacts PII, the
        semantic key (whose text is stored) waits for the redacted prompt (:meth:`lookup`)."""
        flag = call.upstream_body.pop("cache", None)
        if call.endpoint not in ENDPOINTS or call.route is None:
            return None
        tier = call.tier
        skip_lookup, skip_store = bypass_requested(call.cache_control, flag)
        body = call.upstream_body
        key = None
        if tier.exact_cache_enabled and is_deterministic(body):
            key = exact_key(scope_for(call.auth.tenant), call.route.model, call.endpoint, body)
        deferred = tier.semantic_cache_enabled and tier.pii_redaction
        sem = None if deferred else self._semantic(call)
        if key is None and sem is None and not deferred:
            return None
        return CachePlan(
            scope=scope_for(call.auth.tenant),
            model=call.route.model,
            lookup=not skip_lookup,
            store=not skip_store,
            exact_key=key,
            semantic=sem,
            semantic_deferred=deferred,
            stream=StreamAssembler() if call.stream else None,
        )

    @staticmethod
    def _semantic(call: Any) -> SemanticKey | None:
        tier = call.tier
        if not tier.semantic_cache_enabled:
            return None
        sem = semantic_key(
            call.endpoint, call.upstream_body, sampled_ok=tier.semantic_cache_sampled
        )
        if sem is not None and len(sem.text) > MAX_SEMANTIC_CHARS:
            return None
        return sem

    def prefetch(self, call: Any, pipe: Any) -> Callable[[Any], None] | None:
        """Plan ``call``'s caches and queue the exact entry's read on ``pipe`` (admission's
        round trip); returns what takes that read's result, or None when nothing was queued.
        The entry is served only by :meth:`lookup`, after content screening."""
        plan = self._planned(call)
        if plan is None or not plan.lookup or not plan.exact_key:
            return None
        pipe.get(plan.exact_key)

        def take(raw: Any) -> None:
            if isinstance(raw, bytes | None):
                plan.exact_read, plan.exact_raw = True, raw

        return take

    def _planned(self, call: Any) -> CachePlan | None:
        if not call.cache_planned:
            call.cache_plan = self.plan(call)
            call.cache_planned = True
        return call.cache_plan

    async def lookup(self, call: Any) -> CachedAnswer | None:
        """A cached answer for ``call``, or ``None`` (a miss, or no cache applies)."""
        plan = self._planned(call)
        if plan is not None and plan.semantic_deferred:
            plan.semantic, plan.semantic_deferred = self._semantic(call), False
        if plan is None or not plan.lookup:
            return None
        try:
            if plan.exact_key:
                if plan.exact_read:
                    hit = self.exact.parse(plan.exact_raw)
                else:
                    hit = await self.exact.get(plan.exact_key)
                if hit is not None:
                    return hit
            if plan.semantic:
                return await self._semantic_lookup(call, plan)
        except Exception:  # noqa: BLE001 - a broken cache is a miss, never a failed request
            log.exception("cache lookup failed; treating it as a miss")
        return None

    async def _semantic_lookup(self, call: Any, plan: CachePlan) -> CachedAnswer | None:
        assert plan.semantic is not None
        plan.embedding = await embedder.embed(plan.semantic.text)
        candidates = await semantic.asearch(
            scope=plan.scope,
            model=plan.model,
            context_hash=plan.semantic.context_hash,
            embedding=plan.embedding,
        )
        threshold = call.tier.semantic_cache_threshold
        for cand in candidates:
            if cand.similarity < threshold:
                break
            if prompts_agree(plan.semantic.text, cand.prompt):
                self._spawn(sync_to_async(semantic.record_hit, thread_sensitive=False)(cand.id))
                return CachedAnswer(
                    "hit-semantic", cand.response, cand.input_tokens, cand.output_tokens
                )
        return None

    # ---- serving a hit ---------------------------------------------------------------------

    def serve(self, call: Any, hit: CachedAnswer) -> dict[str, Any]:
        """The response body for a hit; sets the call's cache outcome and token counts."""
        call.cache = hit.kind
        call.input_tokens, call.output_tokens = hit.input_tokens, hit.output_tokens
        resp = fresh_response(
            hit.response,
            request_id=call.request_id,
            created=int(call.created.timestamp()),
            model=call.route.model,
        )
        if call.tier.pii_redaction:
            _redact_choices(resp)
        return resp

    def serve_stream(self, call: Any, hit: CachedAnswer) -> list[dict[str, Any]]:
        """The stream chunks for a hit (the client's ``stream_options`` decide the usage
        chunk)."""
        resp = self.serve(call, hit)
        call.ttft = time.perf_counter() - call.started
        include_usage = bool((call.body.get("stream_options") or {}).get("include_usage"))
        return stream_chunks(call.endpoint, resp, include_usage=include_usage)

    # ---- store -----------------------------------------------------------------------------

    def observe(self, call: Any, chunk: dict[str, Any]) -> None:
        """Feed one raw upstream stream chunk to the call's assembler (streams only)."""
        plan = call.cache_plan
        if plan is not None and plan.stream is not None and plan.store:
            plan.stream.feed(call.endpoint, chunk)

    def keep(self, call: Any, response: dict[str, Any] | None = None) -> None:
        """Decide to remember a successful miss's answer (``response`` for JSON calls; streams
        use what :meth:`observe` collected); :meth:`queue_writes` then queues it with the
        request's settlement, in the same Redis round trip."""
        plan = call.cache_plan
        if plan is None or not plan.store or call.status != 200 or call.cache != "miss":
            return
        if response is None:
            if plan.stream is None or not plan.stream.complete():
                return
            response = plan.stream.response(
                call.endpoint,
                request_id=call.request_id,
                created=int(call.created.timestamp()),
                model=call.route.model,
                usage={
                    "prompt_tokens": call.input_tokens,
                    "completion_tokens": call.output_tokens,
                    "total_tokens": call.input_tokens + call.output_tokens,
                },
            )
            if call.tier.pii_redaction:
                _redact_choices(response)
        call.cache_keep = response

    def queue_writes(self, call: Any, pipe: Any) -> None:
        """Queue the kept answer on ``pipe``: the exact entry's writes, and the semantic entry
        on the write-behind stream (``serving.cache.writeback``: embedded if need be and
        inserted in batches by Celery, off the request path)."""
        response = getattr(call, "cache_keep", None)
        plan = call.cache_plan
        if response is None or plan is None or call.status != 200:
            return
        tier = call.tier
        if plan.exact_key:
            queue_put(
                pipe,
                plan.exact_key,
                tenant_id=call.auth.tenant.pk,
                response=response,
                input_tokens=call.input_tokens,
                output_tokens=call.output_tokens,
                ttl_seconds=tier.semantic_cache_ttl_seconds,
            )
        if plan.semantic:
            stream_add(
                pipe,
                CACHE_STREAM,
                semantic_write(
                    tenant_id=call.auth.tenant.pk,
                    scope=plan.scope,
                    model=plan.model,
                    context_hash=plan.semantic.context_hash,
                    prompt=plan.semantic.text,
                    response=response,
                    input_tokens=call.input_tokens,
                    output_tokens=call.output_tokens,
                    ttl_seconds=tier.semantic_cache_ttl_seconds,
                    embedding=plan.embedding,
                    created=dt.datetime.now(dt.UTC),
                ),
            )

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _redact_choices(response: dict[str, Any]) -> None:
    for choice in response.get("choices", []):
        msg = choice.get("message")
        if msg and isinstance(msg.get("content"), str):
            msg["content"] = filters.redact(msg["content"])
        if isinstance(choice.get("text"), str):
            choice["text"] = filters.redact(choice["text"])
