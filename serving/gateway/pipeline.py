"""The gateway pipeline: ingress → routing → provider call → egress, as explicit stages.

Stages run cheap-first, so that a hostile request costs little before it counts against the
tenant's limits (body size is enforced earlier still, at the ASGI edge):

    authenticate  key → tenant, tier                       (authentication; tenants.auth)
    read          the caller's own parsing of its request  (the entry point's ``read``)
    prepare       validate, route, reckon the output       (preparation: validation, routing)
    admit         rate limits + budget reservation          (admission)
    context       prompt estimate against the window        (noted by prepare, raised after
                                                             admission, so oversized prompts
                                                             count)
    screen        blocklist, PII redaction                  (screening; off the loop when the
                                                             prompt is large)
    call          upstream, JSON or stream, and egress      (completion, streaming; failover)
    finish        settle limits and budget, meter usage, log (metering: always, exactly once,
                                                             also when the client goes away)

Entry points (the OpenAI and Anthropic views, the WebSocket consumer) authenticate, build a
:class:`~serving.gateway.call.Call` and hand it to :meth:`Gateway.run`, which runs the rest
and answers a :class:`Result`: the whole response, or a :class:`Stream` of chunks. They only
translate that, and :class:`~serving.gateway.errors.GatewayError`, to their wire format.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from django.conf import settings

from billing.ledger import BudgetLedger
from serving.cache.stage import CacheStage
from serving.gateway import tokens
from serving.gateway.admission import Admission
from serving.gateway.call import Call
from serving.gateway.completion import Completion
from serving.gateway.errors import GatewayError
from serving.gateway.metering import Meter
from serving.gateway.preparation import Preparation
from serving.gateway.ratelimit import RateLimiter
from serving.gateway.screening import screen
from serving.gateway.streaming import Streaming
from serving.routing.failover import Failover
from serving.routing.health import DeploymentHealth
from serving.routing.router import Router
from switchyard.redis_client import hiredis_packing


def is_error_chunk(chunk: dict[str, Any]) -> bool:
    """Whether a stream chunk is the error that ends a stream cut short (or one failed
    choice's): nothing after it means the answer is whole."""
    return "error" in chunk and "choices" not in chunk


class Stream:
    """The chunks of a streamed answer, the first already received (so that a failure
    before it was an error of :meth:`Gateway.run`, not of the stream). Close it when done or
    when the client goes away: the upstream stream closes and what was produced is metered."""

    def __init__(
        self, first: dict[str, Any] | None, rest: AsyncGenerator[dict[str, Any], None]
    ) -> None:
        self._first = first
        self._rest = rest

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self._first is not None:
            chunk, self._first = self._first, None
            return chunk
        return await self._rest.__anext__()

    async def aclose(self) -> None:
        """End the stream (shielded: it settles the call even when the closer is cancelled)."""
        self._first = None
        await asyncio.shield(self._rest.aclose())


@dataclass
class Result:
    """What :meth:`Gateway.run` answers: the whole response body, or its stream."""

    response: dict[str, Any] | None = None
    stream: Stream | None = None


def gateway_redis() -> aioredis.Redis:
    """The gateway's Redis client: a bounded pool where a request waits for a free connection
    (redis-py's default pool raises "Too many connections" past 100 in use), packing commands
    with hiredis."""
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.REDIS_URL, max_connections=settings.SWITCHYARD_REDIS_MAX_CONNECTIONS, timeout=5
    )
    return aioredis.Redis(connection_pool=hiredis_packing(pool))


class Gateway:
    """One per process and event loop: the stages and what they share (the Redis-backed
    limiter and ledger, the router, the caches, the deployments' health)."""

    def __init__(self, redis_client: aioredis.Redis | None = None) -> None:
        self.redis = redis_client or gateway_redis()
        limiter = RateLimiter(self.redis)
        ledger = BudgetLedger(self.redis)
        cache = CacheStage(self.redis)
        health = DeploymentHealth(self.redis)
        failover = Failover(health)
        self.preparation = Preparation(Router(), health)
        self.admission = Admission(self.redis, limiter, ledger, health, cache)
        self.meter = Meter(self.redis, limiter, ledger, cache, health)
        self.completion = Completion(cache, failover, self.meter)
        self.streaming = Streaming(cache, failover, self.meter)
        # Metering's fallback tokenizer takes seconds to load: load it before it is needed.
        threading.Thread(target=tokens.counting_tokenizer, daemon=True).start()

    async def run(self, call: Call, read: Callable[[Call], None] | None = None) -> Result:
        """Run an authenticated call through every stage. ``read`` is the entry point's own
        parsing of its request into ``call`` (body, headers), run first so that what it
        refuses is logged like every refusal. A streamed answer's first chunk has arrived
        when this returns. Raises :class:`GatewayError` (logged, reservations released)."""
        if read is not None:
            try:
                read(call)
            except GatewayError as exc:
                await self.meter.refuse(call, exc)
                raise
        await self.begin(call)
        if call.stream and call.api.streams:
            return Result(stream=await self._open(call))
        return Result(response=await self.completion.complete(call))

    async def begin(self, call: Call) -> None:
        """Everything before the upstream call, cheap stages first: validate, route, admit
        (rate limits, budget), check the context, then screen the content. A refusal is
        logged (and any reservation released) before the ``GatewayError`` propagates."""
        try:
            await self.preparation.prepare(call)
            await self.admission.admit(call)
        except GatewayError as exc:
            await self.meter.refuse(call, exc)
            raise
        try:
            if call.context_error is not None:
                raise call.context_error
            await screen(call)
        except BaseException as exc:
            if isinstance(exc, GatewayError):
                call.status, call.error_code = exc.status, exc.code or exc.type
            else:  # cancelled (client gone) or a bug: release what was reserved
                call.status, call.error_code = 499, "client_closed"
            await asyncio.shield(self.meter.finish(call))
            raise

    async def _open(self, call: Call) -> Stream:
        """The upstream stream, opened up to its first chunk: a failure before the first
        token is an error of the request, not an error event in a stream."""
        chunks = self.streaming.stream(call)
        try:
            first = await chunks.__anext__()
        except StopAsyncIteration:
            first = None
        except GatewayError:
            raise
        except BaseException:
            await asyncio.shield(chunks.aclose())
            raise
        return Stream(first, chunks)


_gateways: dict[int, Gateway] = {}


def get_gateway() -> Gateway:
    """The process's gateway for the running event loop (Redis clients are loop-bound)."""
    loop = asyncio.get_running_loop()
    gw = _gateways.get(id(loop))
    if gw is None:
        gw = Gateway()
        _gateways[id(loop)] = gw
    return gw
