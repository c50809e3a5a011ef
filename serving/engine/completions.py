"""The completion endpoints: ``/v1/chat/completions`` and ``/v1/completions`` (a JSON body,
or server-sent events when the request streams), and ``/v1/abort`` by ``x-request-id``. A
client that disconnects aborts its request (queued, streaming or not): the engine frees its
blocks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from serving.engine import protocol
from serving.engine.engine import AsyncEngine
from serving.engine.errors import EngineOverloaded, RequestFailed
from serving.engine.inputs import MAX_ID_CHARS, ClientGone, read_json, tenant_of, until_disconnect
from serving.engine.lifecycle import current, not_ready
from serving.engine.metrics import WorkerMetrics
from serving.engine.protocol import ParsedRequest, ProtocolError
from serving.engine.responses import Completion, collect, error_response, failure_body, sse_body
from serving.engine.types import CompletionDelta, GenerationRequest


async def completions(request: Request, kind: str) -> Response:
    """A chat (``kind`` "chat") or text completion: JSON, or SSE when it asks to stream."""
    state = request.app.state
    eng = current(state)
    if eng is None:
        return not_ready(state)
    try:
        parsed, greq = await _generation_request(request, kind, eng)
    except ProtocolError as exc:
        return error_response(exc)
    try:
        eng.validate(greq)
    except ValueError as exc:
        return error_response(ProtocolError(str(exc)))
    metrics: WorkerMetrics = state.metrics
    started = time.perf_counter()
    c = Completion(kind, greq.request_id, protocol.now(), eng.model_name, parsed)
    key = (request.headers.get("x-request-id") or "")[:MAX_ID_CHARS] or None
    gen = eng.generate(greq, key=key)
    first = await _first_delta(request, gen, metrics)
    if isinstance(first, Response):
        return first
    metrics.ttft.observe(time.perf_counter() - started)
    deltas = _timed(first, gen, metrics)
    if parsed.stream:
        return StreamingResponse(
            sse_body(c, deltas, gen, metrics, started),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return await _whole(request, c, deltas, gen, metrics, started)


async def _generation_request(
    request: Request, kind: str, eng: AsyncEngine
) -> tuple[ParsedRequest, GenerationRequest]:
    """The parsed body and the engine's request for it (a ProtocolError if it is bad)."""
    body = await read_json(request)
    parsed = await asyncio.to_thread(
        protocol.parse, body, kind, eng.tokenizer, eng.model_name, eng.max_model_len
    )
    if parsed.model != eng.model_name:
        raise ProtocolError(
            f"The model `{parsed.model}` does not exist on this worker "
            f"(it serves `{eng.model_name}`).",
            param="model",
            code="model_not_found",
            status=404,
        )
    tenant, weight, priority, salt = tenant_of(request)
    greq = GenerationRequest(
        request_id=protocol.new_id(kind),
        prompt_token_ids=parsed.prompt_ids,
        params=parsed.params,
        tenant=tenant,
        weight=weight,
        priority=priority,
        cache_salt=salt,
    )
    return parsed, greq


async def _first_delta(
    request: Request, gen: AsyncIterator[CompletionDelta], metrics: WorkerMetrics
) -> CompletionDelta | Response:
    """The request's first delta, or the answer when it never comes (client gone, overload,
    failure)."""

    async def first_delta() -> CompletionDelta:
        return await gen.__anext__()

    try:
        return await until_disconnect(request, first_delta())
    except ClientGone:
        metrics.requests.labels("client_gone").inc()
        return Response(status_code=499)  # nobody reads it
    except EngineOverloaded as exc:
        return error_response(
            ProtocolError(str(exc), code="overloaded", status=503), headers={"Retry-After": "1"}
        )
    except RequestFailed as exc:
        metrics.requests.labels("error").inc()
        return JSONResponse(failure_body(exc), status_code=exc.status)
    except ValueError as exc:
        return error_response(ProtocolError(str(exc)))


async def _timed(
    first: CompletionDelta, gen: AsyncIterator[CompletionDelta], metrics: WorkerMetrics
) -> AsyncIterator[CompletionDelta]:
    """``first``, then the rest of ``gen``, observing the time between tokens."""
    last = time.perf_counter()
    yield first
    async for d in gen:
        t = time.perf_counter()
        metrics.itl.observe(t - last)
        last = t
        yield d


async def _whole(
    request: Request,
    c: Completion,
    deltas: AsyncIterator[CompletionDelta],
    gen: AsyncIterator[CompletionDelta],
    metrics: WorkerMetrics,
    started: float,
) -> Response:
    """The JSON answer of a completion that does not stream, once it has finished."""
    try:
        result = await until_disconnect(request, collect(c, deltas))
    except ClientGone:
        metrics.requests.labels("client_gone").inc()
        return Response(status_code=499)
    except RequestFailed as exc:
        metrics.requests.labels("error").inc()
        return JSONResponse(failure_body(exc), status_code=exc.status)
    finally:
        await gen.aclose()
    metrics.e2e.observe(time.perf_counter() - started)
    for choice in result["choices"]:
        metrics.requests.labels(choice["finish_reason"] or "unknown").inc()
    return JSONResponse(result)


async def chat(request: Request) -> Response:
    return await completions(request, "chat")


async def text(request: Request) -> Response:
    return await completions(request, "text")


async def abort(request: Request) -> Response:
    """Abort the request sent with ``x-request-id: <request_id>`` (queued or running);
    the work it got. Unknown or finished: ``aborted: false`` (with its usage if recent)."""
    try:
        body = await read_json(request)
        rid = body.get("request_id") if isinstance(body, dict) else None
        if not isinstance(rid, str) or not 0 < len(rid) <= MAX_ID_CHARS:
            raise ProtocolError(
                f"'request_id' must be a string of 1 to {MAX_ID_CHARS} characters.",
                param="request_id",
            )
    except ProtocolError as exc:
        return error_response(exc)
    eng = current(request.app.state)
    result = None if eng is None else await eng.abort_key(rid)
    u = result.usage if result else None
    return JSONResponse(
        {
            "request_id": rid,
            "aborted": bool(result and result.aborted),
            "usage": protocol.usage(
                u.prompt_tokens if u else 0,
                u.completion_tokens if u else 0,
                u.cached_tokens if u else 0,
            ),
        }
    )
