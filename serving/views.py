"""The OpenAI-compatible tenant API: thin async views over the gateway pipeline."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import orjson
from django.conf import settings
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from prometheus_client import CONTENT_TYPE_LATEST

from serving.gateway import metrics
from serving.gateway.authentication import authenticate
from serving.gateway.call import CLIENT_REQUEST_ID_CHARS, Call, clean_label
from serving.gateway.endpoints import CHAT, COMPLETIONS, EMBEDDINGS, Endpoint
from serving.gateway.errors import GatewayError, model_not_found
from serving.gateway.pipeline import Stream, get_gateway, is_error_chunk
from serving.gateway.validation import (
    parse_content_length,
    parse_json_body,
    parse_max_cost_header,
)
from serving.model_list import callable_models
from serving.routing.table import arouting_table


def _error(exc: GatewayError, call: Call | None = None) -> JsonResponse:
    resp = exc.response()
    if call is not None:
        for k, v in call.headers().items():
            if k not in resp:
                resp[k] = v
    return resp


def _parse(request) -> dict:
    """The body, bounded: the edge refused what is over the limit before reading it (this
    check stands for deployments without the edge middleware), and the JSON's depth and size
    are checked before parsing (:func:`parse_json_body`)."""
    limit = settings.SWITCHYARD_MAX_BODY_BYTES
    length = parse_content_length(request.headers.get("Content-Length"))
    if (length is not None and length > limit) or len(request.body) > limit:
        raise GatewayError(
            413,
            f"The request body is larger than the limit of {limit} bytes.",
            code="request_too_large",
        )
    return parse_json_body(request.body or b"")


def _method_not_allowed(allowed: str) -> JsonResponse:
    resp = GatewayError(
        405, f"Method not allowed; use {allowed}.", code="method_not_allowed"
    ).response()
    resp["Allow"] = allowed
    return resp


def sse_event(chunk: dict) -> bytes:
    """One SSE event (orjson: the stream path serialises a chunk per token)."""
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def http_reader(request, translate: Callable[[dict], dict] | None = None) -> Callable[[Call], None]:
    """How an HTTP request fills its call, run by :meth:`Gateway.run` as its first stage (so
    that what it refuses is logged): the bounded JSON body (passed through ``translate`` for
    an API in another shape), the Cache-Control header and the caller's cost cap."""

    def read(call: Call) -> None:
        body = _parse(request)
        call.body = translate(body) if translate is not None else body
        call.cache_control = request.headers.get("Cache-Control", "")[:256]
        call.max_cost = parse_max_cost_header(request.headers.get("X-Switchyard-Max-Cost-Usd"))

    return read


def client_request_id(request) -> str:
    """The client's X-Request-Id, as a label: the request id is always ours, this is echoed."""
    return clean_label(request.headers.get("X-Request-Id", ""), CLIENT_REQUEST_ID_CHARS)


async def _handle(request, endpoint: Endpoint):
    if request.method != "POST":
        return _method_not_allowed("POST")
    try:
        auth = await authenticate(
            request.headers.get("Authorization"), client=request.META.get("REMOTE_ADDR")
        )
    except GatewayError as exc:
        return _error(exc)
    call = Call(api=endpoint, body={}, auth=auth, client_request_id=client_request_id(request))
    try:
        result = await get_gateway().run(call, http_reader(request))
    except GatewayError as exc:
        return _error(exc, call)
    if result.stream is not None:
        resp = _sse_response(result.stream)
    else:
        resp = JsonResponse(result.response)
    for k, v in call.headers().items():
        resp[k] = v
    return resp


def _sse_response(stream: Stream) -> StreamingHttpResponse:
    """SSE over the gateway's stream (opened before answering, so a failure before the first
    token was a proper HTTP error). A stream that ends with an error event gets no
    ``[DONE]`` after it: ``[DONE]`` means the answer is whole."""

    async def body_iter() -> AsyncIterator[bytes]:
        failed = False
        try:
            async for chunk in stream:
                failed = failed or is_error_chunk(chunk)
                yield sse_event(chunk)
            if not failed:
                yield b"data: [DONE]\n\n"
        finally:
            await stream.aclose()

    return event_stream(body_iter())


def event_stream(events: AsyncIterator[bytes]) -> StreamingHttpResponse:
    """A ``text/event-stream`` response over ``events``, neither cached nor buffered."""
    resp = StreamingHttpResponse(events, content_type="text/event-stream")
    resp["Cache-Control"] = "no-cache"
    resp["X-Accel-Buffering"] = "no"
    return resp


@csrf_exempt
async def chat_completions(request):
    return await _handle(request, CHAT)


@csrf_exempt
async def completions(request):
    return await _handle(request, COMPLETIONS)


@csrf_exempt
async def embeddings(request):
    return await _handle(request, EMBEDDINGS)


def _model_card(name: str) -> dict:
    return {"id": name, "object": "model", "created": 0, "owned_by": "switchyard"}


@csrf_exempt
async def models(request, model: str | None = None):
    if request.method != "GET":
        return _method_not_allowed("GET")
    try:
        auth = await authenticate(
            request.headers.get("Authorization"), client=request.META.get("REMOTE_ADDR")
        )
    except GatewayError as exc:
        return _error(exc)
    names = callable_models(auth.tier, await arouting_table(), tenant_id=auth.tenant.pk)
    if model is not None:
        if model not in names:
            return _error(model_not_found(model))
        return JsonResponse(_model_card(model))
    return JsonResponse({"object": "list", "data": [_model_card(m) for m in names]})


def openapi(request):
    """The tenant API's OpenAPI 3.1 document (public: it holds no tenant data)."""
    from serving.openapi import openapi_document

    return JsonResponse(openapi_document())


@csrf_exempt
async def not_found(request, rest: str):
    return GatewayError(404, f"Unknown endpoint /v1/{rest}.", code="unknown_url").response()


def prometheus_metrics(request):
    """Prometheus text. Labels name tenants, so only scrapers on an allowed address
    (``METRICS_ALLOWED_IPS``, loopback by default) and logged-in operators may read it."""
    from tenants.roles import is_operator

    if request.META.get("REMOTE_ADDR") not in settings.METRICS_ALLOWED_IPS and not is_operator(
        request.user
    ):
        return HttpResponse("Forbidden: metrics are for operators and scrapers.", status=403)
    started = time.perf_counter()
    body = metrics.render()
    resp = HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
    resp["x-render-ms"] = f"{(time.perf_counter() - started) * 1000:.1f}"
    return resp
