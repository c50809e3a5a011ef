"""Metering: a call's tokens, its cost, and its settlement.

Tokens come from the upstream's usage report (on a success, or beside an error); what an
upstream did not report is counted with a real tokenizer, never left at zero. :class:`Meter`
then settles the call exactly once: the rate-limit and budget reservations are replaced by
the real figures, the usage record (one per request with tokens) and the request-log entry
are queued, in one Redis transaction, and the request's metrics recorded.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import redis.asyncio as aioredis

from billing.ledger import BudgetLedger
from billing.usage import USAGE_STREAM, usage_event
from serving.cache.stage import CacheStage, hit_charge
from serving.gateway import filters, metrics, tokens
from serving.gateway.call import Call, clean_label
from serving.gateway.endpoints import tool_call_text
from serving.gateway.errors import GatewayError
from serving.gateway.ratelimit import RateLimiter
from serving.request_log import REQUEST_LOG_STREAM
from serving.routing.health import DeploymentHealth
from switchyard.streams import stream_add


def reported_count(value: Any) -> int:
    """A token count reported by an upstream: a non-negative integer, whatever it sent."""
    try:
        return max(int(value or 0), 0) if not isinstance(value, bool) else 0
    except (TypeError, ValueError, OverflowError):
        return 0


def usage_from(call: Call, usage: Any) -> None:
    """Token counts an upstream reported (on a success, or beside an error: the work a
    worker did before a request failed is billed too)."""
    if not isinstance(usage, dict) or not usage:
        return
    call.input_tokens = reported_count(usage.get("prompt_tokens"))
    call.output_tokens = reported_count(usage.get("completion_tokens"))
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict):
        call.cached_tokens = reported_count(details.get("cached_tokens"))


async def count_if_unreported(call: Call, texts: dict[int, list[str]]) -> None:
    """Tokens of an answer whose upstream reported no usage (or a stream cut before its usage
    chunk): counted with a real tokenizer, prompt and output (``texts``: each choice's pieces),
    never left at zero."""
    if call.output_tokens and call.input_tokens:
        return
    outputs = ["".join(parts) for parts in texts.values()]
    prompts = call.api.prompt_texts(call.body)
    if not call.output_tokens and any(outputs):
        call.output_tokens = await asyncio.to_thread(tokens.count_text, outputs)
    if not call.input_tokens and (call.output_tokens or call.status == 200):
        call.input_tokens = await asyncio.to_thread(call.api.count_prompt_tokens, prompts)


async def count_answer_if_unreported(call: Call, response: dict[str, Any]) -> None:
    """:func:`count_if_unreported` for a whole (non-streaming) answer; an embeddings answer
    without usage is metered as its input's tokens."""
    if call.api.generates:
        texts = {
            i: [call.api.choice_text(c, final=True), tool_call_text(c.get("message"))]
            for i, c in enumerate(response.get("choices") or [])
            if isinstance(c, dict)
        }
        await count_if_unreported(call, texts)
    elif not call.input_tokens:
        call.input_tokens = await asyncio.to_thread(
            tokens.count_text, call.api.prompt_texts(call.body)
        )


def charge(call: Call) -> tuple[int, int]:
    """(cost, saved) in micro-dollars: the tokens at the call's price; a cache hit costs the
    tier's cache price and no model tokens."""
    produced = call.input_tokens + call.output_tokens
    cost = (
        call.price.cost(call.input_tokens, call.output_tokens, call.cached_tokens)
        if (call.price and produced)
        else 0
    )
    saved = 0
    if call.cache != "miss":
        cost, saved = hit_charge(cost, call.tier.cache_hit_price_percent)
    return cost, saved


def usage_record(call: Call, cost: int, saved: int) -> dict[str, str]:
    """The call's usage event (``billing.usage``: one per request with tokens)."""
    return usage_event(
        request_id=call.request_id,
        client_request_id=call.client_request_id,
        tenant_id=call.auth.tenant.pk,
        api_key_id=call.auth.key.pk,
        model=call.route.model if call.route else call.body.get("model", ""),
        deployment=call.route.target.name if call.route else "",
        input_tokens=call.input_tokens,
        output_tokens=call.output_tokens,
        cached_tokens=call.cached_tokens,
        cost_micro_usd=cost,
        created=call.created,
        price=call.price,
        cache=call.cache,
        saved_micro_usd=saved,
    )


def log_entry(call: Call, cost: int) -> dict[str, str]:
    """The call's request-log entry; with the tier's ``log_bodies``, its bodies, redacted."""
    entry = {
        "request_id": call.request_id,
        "client_request_id": call.client_request_id,
        "tenant_id": str(call.auth.tenant.pk),
        "api_key_id": str(call.auth.key.pk),
        "endpoint": call.endpoint,
        "model": call.route.model
        if call.route
        else clean_label(str(call.body.get("model", "")), 128),
        "deployment": call.route.target.name if call.route else "",
        "status_code": str(call.status),
        "error_code": call.error_code,
        "stream": "1" if call.stream else "0",
        "input_tokens": str(call.input_tokens),
        "output_tokens": str(call.output_tokens),
        "cost_micro_usd": str(cost),
        "latency_ms": f"{(time.perf_counter() - call.started) * 1000:.2f}",
        "ttft_ms": f"{call.ttft * 1000:.2f}" if call.ttft is not None else "",
        "cache": call.cache,
        "route": call.route.header() if call.route else "",
        "created": call.created.isoformat(),
    }
    if call.tier.log_bodies:
        # Bodies are always stored redacted, whatever the tier's filter setting.
        entry["request_body"] = json.dumps(call.api.redact(call.body))
        if call.response_for_log is not None:
            entry["response_body"] = json.dumps(_logged_response(call.response_for_log))
    return entry


def _logged_response(response: dict[str, Any]) -> dict[str, Any]:
    """A copy of a response to log: answers redacted, embedding vectors left out."""
    resp = json.loads(json.dumps(response))
    for c in resp.get("choices", []):
        if isinstance((c.get("message") or {}).get("content"), str):
            c["message"]["content"] = filters.redact(c["message"]["content"])
        if isinstance(c.get("text"), str):
            c["text"] = filters.redact(c["text"])
    resp.pop("data", None)  # embeddings vectors are not worth keeping
    return resp


class Meter:
    """Settles calls: one per gateway, over its Redis client, limiter, ledger and cache."""

    def __init__(
        self,
        redis: aioredis.Redis,
        limiter: RateLimiter,
        ledger: BudgetLedger,
        cache: CacheStage,
        health: DeploymentHealth,
    ) -> None:
        self.redis = redis
        self.limiter = limiter
        self.ledger = ledger
        self.cache = cache
        self.health = health

    async def finish(self, call: Call) -> None:
        """Settle reservations, free the deployment's in-flight slot (counting its success),
        meter usage (one record per request with tokens) and queue the request-log entry, in
        one transaction. Runs exactly once per admitted call."""
        if call.finished:
            return
        call.finished = True
        produced = call.input_tokens + call.output_tokens
        cost, saved = charge(call)
        # Settlements, the usage record and the log entry go to Redis in one round trip, as
        # one transaction: budget reconciliation (billing) snapshots the counters and the
        # usage stream atomically, so it must never see the settlement without the event.
        pipe = self.redis.pipeline(transaction=True)
        if call.limit_reservation:
            await self.limiter.settle(
                call.limit_reservation,
                actual_tokens=produced if call.cache == "miss" else 0,
                pipe=pipe,
            )
        if call.budget_reservation:
            await self.ledger.settle(call.budget_reservation, actual_cost=cost, pipe=pipe)
        if produced:
            stream_add(pipe, USAGE_STREAM, usage_record(call, cost, saved))
        stream_add(pipe, REQUEST_LOG_STREAM, log_entry(call, cost))
        self.cache.queue_writes(call, pipe)
        slot, call.slot = call.slot, None
        if slot is not None:
            # The deployment's in-flight slot, and the success of the attempt that held it.
            self.health.queue_finish(
                pipe, slot, call.request_id, ok=call.slot_ok or None, ttft_ms=call.slot_ttft_ms
            )
        await pipe.execute()
        if slot is not None:
            self.health.freed(slot)
        await metrics.record_finished(
            self.redis,
            tenant=call.auth.tenant.slug,
            model=call.route.model if call.route else "",
            endpoint=call.endpoint,
            status=call.status,
            latency=time.perf_counter() - call.started,
            ttft=call.ttft,
            tokens=(call.input_tokens, call.output_tokens) if produced else None,
        )

    async def refuse(self, call: Call, error: GatewayError) -> None:
        """Log a request refused before any reservation (validation, routing, limits)."""
        if call.finished:
            return
        call.status, call.error_code = error.status, error.code or error.type
        call.finished = True
        await metrics.record_refused(
            self.redis,
            tenant=call.auth.tenant.slug,
            model=call.route.model if call.route else "",
            endpoint=call.endpoint,
            status=error.status,
        )
        await stream_add(self.redis, REQUEST_LOG_STREAM, log_entry(call, 0))
