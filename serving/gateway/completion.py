"""The non-streaming call: a cached answer, or the upstream's JSON through failover, then
egress (PII redaction of the answer, the JSON check) and the call's settlement.

A client that goes away (the view is cancelled) or a deployment that times out makes the
gateway abort the generation upstream and meter what it consumed (:func:`abandon`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from serving.cache.stage import CacheStage
from serving.gateway import filters, metering
from serving.gateway.call import Call
from serving.gateway.errors import GatewayError
from serving.gateway.metering import Meter
from serving.gateway.upstream import abort_upstream
from serving.routing.failover import Failover


async def abandon(call: Call) -> None:
    """Stop an unfinished non-streaming generation upstream and learn what it consumed.
    A Switchyard worker aborts the request (queued or running) and reports its usage;
    for other upstreams the prompt estimate is metered (the prompt was sent)."""
    target = call.route.target if call.route else None
    usage = await abort_upstream(target, call.request_id) if target else None
    if usage is not None:
        call.input_tokens = int(usage.get("prompt_tokens") or 0)
        call.output_tokens = int(usage.get("completion_tokens") or 0)
    elif not call.input_tokens:
        call.input_tokens = call.prompt_estimate


def redact_answer(call: Call, resp: dict[str, Any]) -> None:
    """The tier's PII redaction over a whole answer's choices (text and tool calls)."""
    if not call.tier.pii_redaction:
        return
    for choice in resp.get("choices", []):
        msg = choice.get("message")
        if msg and isinstance(msg.get("content"), str):
            msg["content"] = filters.redact(msg["content"])
        filters.redact_tool_calls(msg)
        if isinstance(choice.get("text"), str):
            choice["text"] = filters.redact(choice["text"])


def json_error(call: Call, resp: dict[str, Any]) -> GatewayError | None:
    """502 ``invalid_json_output`` when JSON was asked for and a finished answer is not."""
    if not call.api.wants_json(call.body):
        return None
    bad = [
        c for c in resp.get("choices", [])
        if not (c.get("message") or {}).get("tool_calls")  # a call, not an answer
        and c.get("finish_reason") != "length"  # cut by the client's max_tokens
        and not filters.is_valid_json((c.get("message") or {}).get("content") or "")
    ]  # fmt: skip
    if not bad:
        return None
    call.status, call.error_code = 502, "invalid_json_output"
    return GatewayError(
        502,
        "The model's output was not valid JSON although response_format asked for "
        "JSON; the tokens were metered. Retry, or lower the temperature.",
        type="api_error",
        code="invalid_json_output",
    )


class Completion:
    """One per gateway, over its cache, failover and meter."""

    def __init__(self, cache: CacheStage, failover: Failover, meter: Meter) -> None:
        self.cache = cache
        self.failover = failover
        self.meter = meter

    async def complete(self, call: Call) -> dict[str, Any]:
        """A non-streaming call; returns the OpenAI response body (filtered). Settles the
        call on every path."""
        hit = await self.cache.lookup(call)
        if hit is not None:
            call.response_for_log = resp = self.cache.serve(call, hit)
            await self.meter.finish(call)
            return resp
        resp = await self._call(call)
        try:
            metering.usage_from(call, resp.get("usage"))
            await metering.count_answer_if_unreported(call, resp)
            resp["model"] = call.route.model
            if call.api.generates:
                redact_answer(call, resp)
            error = json_error(call, resp)
            call.response_for_log = resp
            if error is None:
                self.cache.keep(call, resp)  # queued with the settlement by finish()
        except BaseException:
            # The client went away while the answer was counted (or egress broke): the
            # answer was produced, so it is settled and metered all the same.
            if call.status == 200:
                call.status, call.error_code = 499, "client_closed"
            await asyncio.shield(self.meter.finish(call))
            raise
        await asyncio.shield(self.meter.finish(call))
        if error:
            raise error
        return resp

    async def _call(self, call: Call) -> dict[str, Any]:
        """The upstream's answer; on failure the call is settled before the error goes on."""
        try:
            return await self.failover.post_json(
                call, call.api.path, call.upstream_body, **call.upstream_options()
            )
        except GatewayError as exc:
            call.status, call.error_code = exc.status, exc.code or "upstream_error"
            metering.usage_from(call, getattr(exc, "usage", None))
            if exc.status == 504:
                await asyncio.shield(abandon(call))
            await self.meter.finish(call)
            raise
        except BaseException:
            # The client went away (the view is cancelled) or the call broke: stop the
            # generation, meter the work done, release the slot and the reservations.
            call.status, call.error_code = 499, "client_closed"
            await asyncio.shield(self._abandon_and_finish(call))
            raise

    async def _abandon_and_finish(self, call: Call) -> None:
        try:
            await abandon(call)
        finally:
            await self.meter.finish(call)
