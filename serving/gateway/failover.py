"""Failover: call a request's deployments in the router's order until one answers.

A connect error, a timeout, a 5xx or a 429 *before the first token* moves the request to the
next candidate, within ``SWITCHYARD_ROUTE_MAX_ATTEMPTS`` attempts and a total deadline of
``SWITCHYARD_ROUTE_DEADLINE_SECONDS`` (each attempt's timeout is cut to what is left). Other
upstream errors (a 400 from the model) are the caller's and go back at once. Once a stream
has produced a chunk it is never retried: a later failure reaches the pipeline, which ends
the stream with an error event and meters the tokens.

Every attempt counts in the deployment's in-flight set and reports success (with its time to
first token) or failure to :class:`serving.health.DeploymentHealth` (passive health checks).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.conf import settings

from serving.deployments import Target
from serving.gateway import upstream
from serving.gateway.errors import GatewayError, upstream_error
from serving.health import DeploymentHealth
from serving.routing_table import deployment_price

if TYPE_CHECKING:
    from serving.gateway.pipeline import Call


def retryable(exc: GatewayError) -> bool:
    """Connect errors, timeouts, 5xx and 429 from upstream (all ``upstream_error``)."""
    return exc.code == "upstream_error"


def _immediate(exc: GatewayError) -> bool:
    # Nobody listening: the deployment is down, no point in waiting for more failures.
    return "unreachable" in exc.message


def _for(target: Target, body: dict[str, Any]) -> dict[str, Any]:
    """The body with the model name this deployment knows it by."""
    if body.get("model") == target.upstream_model:
        return body
    return {**body, "model": target.upstream_model}


class Failover:
    def __init__(self, health: DeploymentHealth) -> None:
        self.health = health

    def _plan(self, call: Call) -> tuple[list[Target], float]:
        route = call.route
        candidates = list(route.candidates or (route.target,))
        return (
            candidates[: max(1, settings.SWITCHYARD_ROUTE_MAX_ATTEMPTS)],
            time.monotonic() + settings.SWITCHYARD_ROUTE_DEADLINE_SECONDS,
        )

    async def _chosen(self, call: Call, target: Target, attempt: int) -> None:
        if target.name != call.route.target.name:
            # Meter at the price of the deployment that actually served the request.
            call.price = await sync_to_async(deployment_price, thread_sensitive=False)(
                target, call.created
            )
        call.route = dataclasses.replace(call.route, target=target, attempts=attempt)

    @staticmethod
    def _out_of_time(attempts: int, last: GatewayError | None) -> GatewayError:
        detail = f" Last error: {last.message}" if last else ""
        return upstream_error(
            f"No deployment answered within the routing deadline "
            f"({settings.SWITCHYARD_ROUTE_DEADLINE_SECONDS:g}s, {attempts} attempt(s)).{detail}",
            504,
        )

    async def post_json(self, call: Call, path: str, body: dict[str, Any], **kw) -> dict[str, Any]:
        """:func:`upstream.post_json` over the candidates; sets ``call.route`` to the one used."""
        candidates, deadline = self._plan(call)
        last: GatewayError | None = None
        for attempt, target in enumerate(candidates, 1):
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._out_of_time(attempt - 1, last)
            timed = dataclasses.replace(target, timeout_seconds=min(target.timeout_seconds, left))
            started = time.perf_counter()
            await self.health.acquire(target.name, call.request_id)
            outcome = _Outcome()
            try:
                resp = await upstream.post_json(timed, path, _for(target, body), **kw)
                outcome.ok((time.perf_counter() - started) * 1000)
            except GatewayError as exc:
                if not retryable(exc):
                    await self._chosen(call, target, attempt)
                    raise
                outcome.failed(exc)
                last = exc
                continue
            finally:
                await asyncio.shield(outcome.report(self.health, target.name, call.request_id))
            await self._chosen(call, target, attempt)
            return resp
        assert last is not None
        await self._chosen(call, candidates[-1], len(candidates))
        raise last

    async def stream(
        self, call: Call, path: str, body: dict[str, Any], **kw
    ) -> AsyncIterator[dict[str, Any]]:
        """:func:`upstream.stream_chunks` over the candidates until one yields a chunk; from
        then on that deployment's stream, whose errors propagate."""
        candidates, deadline = self._plan(call)
        last: GatewayError | None = None
        for attempt, target in enumerate(candidates, 1):
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._out_of_time(attempt - 1, last)
            timed = dataclasses.replace(target, timeout_seconds=min(target.timeout_seconds, left))
            started = time.perf_counter()
            await self.health.acquire(target.name, call.request_id)
            chunks = upstream.stream_chunks(timed, path, _for(target, body), **kw)
            outcome = _Outcome()
            try:
                try:
                    first = await chunks.__anext__()
                except StopAsyncIteration:
                    first = None
                except GatewayError as exc:
                    await chunks.aclose()
                    if not retryable(exc):
                        await self._chosen(call, target, attempt)
                        raise
                    outcome.failed(exc)
                    last = exc
                    continue
                # Reported when the stream ends (one round trip), unless it breaks first.
                outcome.ok((time.perf_counter() - started) * 1000)
                await self._chosen(call, target, attempt)
                if first is None:
                    return
                yield first
                try:
                    async for chunk in chunks:
                        yield chunk
                except GatewayError as exc:
                    outcome.failed(exc)
                    raise
                return
            finally:
                await chunks.aclose()
                await asyncio.shield(outcome.report(self.health, target.name, call.request_id))
        assert last is not None
        await self._chosen(call, candidates[-1], len(candidates))
        raise last


class _Outcome:
    """How one attempt went, reported with the release of its in-flight slot."""

    def __init__(self) -> None:
        self.success: bool | None = None
        self.ttft_ms: float | None = None
        self.error: GatewayError | None = None

    def ok(self, ttft_ms: float) -> None:
        self.success, self.ttft_ms = True, ttft_ms

    def failed(self, exc: GatewayError) -> None:
        self.success, self.error = False, exc

    async def report(self, health: DeploymentHealth, name: str, request_id: str) -> None:
        err = self.error
        await health.finish(
            name,
            request_id,
            ok=self.success,
            ttft_ms=self.ttft_ms,
            reason=err.message if err else "",
            immediate=bool(err and _immediate(err)),
        )
