"""Failover: call a request's deployments in the router's order until one answers.

A connect error, a timeout, a 5xx, a 429, a refused credential (401/403: the operator's key,
answered to the tenant as 502 ``upstream_auth_failed``) or a loading model *before the first
token* moves the request to the next candidate, within ``SWITCHYARD_ROUTE_MAX_ATTEMPTS``
attempts. ``SWITCHYARD_ROUTE_DEADLINE_SECONDS`` bounds the wait for the first byte: no
attempt starts after it, and a stream's first chunk must come within it. The whole answer
may take the deployment's own ``timeout_seconds`` (a non-streaming answer's first byte is
its last, so its attempt has the deployment's timeout). Errors caused by the request
itself (a 400 from the model, a bad parameter inside a stream) go back at once, are not
retried elsewhere and never count toward a deployment's cooldown. Once a stream has produced
a chunk it is never retried: a later failure reaches the pipeline, which ends the stream
with an error event and meters the tokens.

Every attempt counts in the deployment's in-flight set and reports success (with its time to
first token) or failure to :class:`serving.routing.health.DeploymentHealth` (passive health
checks). The first choice's slot is taken by admission, in its round trip, and a success is
counted by the call's settlement, in its transaction; failures are counted at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

from django.conf import settings

from serving.gateway import upstream
from serving.gateway.call import Call
from serving.gateway.errors import GatewayError, upstream_error
from serving.routing.deployments import Target
from serving.routing.health import DeploymentHealth
from serving.routing.table import adeployment_price

DEPLOYMENT_FAULTS = ("upstream_error", "upstream_auth_failed", "model_loading")


def retryable(exc: GatewayError) -> bool:
    """The deployment's fault (connect errors, timeouts, 5xx, 429, refused credentials, a
    loading model): another deployment may answer. Anything else is the request's."""
    return exc.code in DEPLOYMENT_FAULTS


def counts_as_failure(exc: GatewayError) -> bool:
    """Whether an error counts toward the deployment's cooldown: its own faults do, a
    loading model does not (it is starting, not broken), the request's own errors never."""
    return exc.code in ("upstream_error", "upstream_auth_failed")


def _immediate(exc: GatewayError) -> bool:
    # Nobody listening, or the operator's credentials are refused: no point in waiting for
    # more failures before taking the deployment out of rotation.
    return "unreachable" in exc.message or exc.code == "upstream_auth_failed"


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
            # At the tenant's terms, like the first choice.
            call.price = await adeployment_price(
                target, call.created, tenant_id=call.auth.tenant.pk
            )
        call.route = dataclasses.replace(call.route, target=target, attempts=attempt)

    async def _acquire(self, call: Call, target: Target) -> None:
        """An in-flight slot on ``target``: admission took the first choice's already."""
        if call.slot == target.name:
            return
        if call.slot is not None:  # a slot on another deployment (not normally: released)
            await self.health.release(call.slot, call.request_id)
        call.slot = None
        await self.health.acquire(target.name, call.request_id)
        call.slot = target.name

    async def _report(self, call: Call, target: Target, outcome: _Outcome) -> None:
        """End an attempt. A success is left to the call's settlement, which frees the slot
        and counts it in its own round trip; a failure is counted now (the next attempt's
        routing must see it)."""
        if outcome.success and call.slot == target.name:
            call.slot_ok, call.slot_ttft_ms = True, outcome.ttft_ms
            return
        if call.slot == target.name:
            call.slot = None
        await outcome.report(self.health, target.name, call.request_id)

    @staticmethod
    def _out_of_time(attempts: int, last: GatewayError | None) -> GatewayError:
        if last is not None and last.code == "model_loading":
            return last
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
            if deadline - time.monotonic() <= 0:
                raise self._out_of_time(attempt - 1, last)
            started = time.perf_counter()
            await self._acquire(call, target)
            outcome = _Outcome()
            try:
                # The whole answer may take the deployment's timeout (its first byte is its
                # last); the routing deadline only gates starting another attempt.
                resp = await upstream.post_json(target, path, _for(target, body), **kw)
                outcome.ok((time.perf_counter() - started) * 1000)
            except GatewayError as exc:
                spent = time.perf_counter() - started
                whole_budget = exc.status == 504 and spent >= 0.9 * target.timeout_seconds
                if not retryable(exc) or whole_budget:
                    # The request's own error, or a timeout after the deployment's whole
                    # budget (the pipeline aborts the generation and meters its work).
                    if whole_budget:
                        outcome.failed(exc)
                    await self._chosen(call, target, attempt)
                    raise
                outcome.failed(exc)
                last = exc
                continue
            finally:
                await asyncio.shield(self._report(call, target, outcome))
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
            started = time.perf_counter()
            await self._acquire(call, target)
            # Each read may wait the deployment's timeout; the first chunk, the deadline.
            chunks = upstream.stream_chunks(target, path, _for(target, body), **kw)
            outcome = _Outcome()
            try:
                try:
                    first = await asyncio.wait_for(
                        chunks.__anext__(), min(left, target.timeout_seconds)
                    )
                except StopAsyncIteration:
                    first = None
                except TimeoutError:
                    exc = upstream_error(
                        f"Deployment {target.name} sent no first token in time.", 504
                    )
                    outcome.failed(exc)
                    last = exc
                    continue
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
                    if counts_as_failure(exc):
                        outcome.failed(exc)
                    raise
                return
            finally:
                await chunks.aclose()
                await asyncio.shield(self._report(call, target, outcome))
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
        if counts_as_failure(exc):
            self.success, self.error = False, exc
        else:  # a loading model: not a success, not a failure
            self.success, self.error = None, None

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
