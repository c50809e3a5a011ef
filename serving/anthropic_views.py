"""Anthropic's Messages API (``POST /v1/messages``) over the gateway pipeline.

The official ``anthropic`` SDK works unchanged against Switchyard: the key comes as
``x-api-key`` (or ``Authorization: Bearer``), the Messages request is translated to an OpenAI
chat body (:func:`serving.providers.anthropic.from_messages_request`) and runs through the
same pipeline as ``/v1/chat/completions`` (validation, routing, rate limits, budgets, caches,
metering), and the answer comes back in Anthropic's shapes: a ``message``, or its SSE events.
Errors use Anthropic's shape, ``{"type": "error", "error": {"type", "message"}}``, with the
gateway's status and headers (``Retry-After``, rate-limit headers, ``x-request-id``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from django.http import JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from serving.gateway import tokens
from serving.gateway.errors import GatewayError
from serving.gateway.pipeline import (
    CLIENT_REQUEST_ID_CHARS,
    Call,
    clean_label,
    get_gateway,
    prompt_texts,
)
from serving.gateway.validation import parse_max_cost_header
from serving.providers import anthropic
from serving.views import _parse


def error_response(exc: GatewayError, call: Call | None = None) -> JsonResponse:
    """A gateway refusal in Anthropic's error shape, with its status and headers."""
    resp = JsonResponse(anthropic.error_body(exc), status=exc.status)
    for k, v in exc.headers.items():
        resp[k] = v
    if call is not None:
        for k, v in call.headers().items():
            if k not in resp:
                resp[k] = v
        resp["request-id"] = call.request_id
    return resp


def authorization(request) -> str | None:
    """The caller's key as an ``Authorization`` value: Bearer wins, else ``x-api-key``."""
    authz = request.headers.get("Authorization")
    key = request.headers.get("x-api-key")
    if not authz and key is not None:
        return f"Bearer {key}"
    return authz


@csrf_exempt
async def messages(request):
    if request.method != "POST":
        resp = error_response(GatewayError(405, "Method not allowed; use POST."))
        resp["Allow"] = "POST"
        return resp
    gw = get_gateway()
    try:
        auth = await gw.authenticate(authorization(request), client=request.META.get("REMOTE_ADDR"))
    except GatewayError as exc:
        return error_response(exc)
    call = Call(endpoint="chat.completions", body={}, auth=auth)
    call.client_request_id = clean_label(
        request.headers.get("X-Request-Id", ""), CLIENT_REQUEST_ID_CHARS
    )
    try:
        raw = _parse(request)
        call.body = anthropic.from_messages_request(raw)
        call.cache_control = request.headers.get("Cache-Control", "")[:256]
        call.max_cost = parse_max_cost_header(request.headers.get("X-Switchyard-Max-Cost-Usd"))
    except GatewayError as exc:
        await gw.log_refusal(call, exc)
        return error_response(exc, call)
    model = call.body["model"]
    try:
        await gw.begin(call)
    except GatewayError as exc:
        return error_response(exc, call)
    if call.stream:
        resp = await _stream_response(gw, call, model)
        if not isinstance(resp, StreamingHttpResponse):
            return resp
    else:
        try:
            result = await gw.complete(call)
        except GatewayError as exc:
            return error_response(exc, call)
        resp = JsonResponse(anthropic.to_message(result, model))
    for k, v in call.headers().items():
        resp[k] = v
    resp["request-id"] = call.request_id
    return resp


@csrf_exempt
async def count_tokens(request):
    """``POST /v1/messages/count_tokens``: the prompt's tokens by the gateway's tokenizer (the
    count metering uses when an upstream reports none; an estimate for other providers')."""
    if request.method != "POST":
        resp = error_response(GatewayError(405, "Method not allowed; use POST."))
        resp["Allow"] = "POST"
        return resp
    gw = get_gateway()
    try:
        await gw.authenticate(authorization(request), client=request.META.get("REMOTE_ADDR"))
        body = anthropic.from_messages_request({"max_tokens": 1, **_parse(request)})
    except GatewayError as exc:
        return error_response(exc)
    texts = prompt_texts("chat.completions", body)
    n = await asyncio.to_thread(tokens.count_prompt, "chat.completions", texts)
    return JsonResponse({"input_tokens": n})


async def _stream_response(gw, call: Call, model: str):
    """Messages SSE events over the pipeline's OpenAI chunks. As for the OpenAI views, the
    upstream stream is opened before answering, so a failure before the first token is an
    HTTP error; a later one ends the stream with an ``error`` event and no ``message_stop``."""
    chunks = gw.stream(call)
    try:
        first = await chunks.__anext__()
    except StopAsyncIteration:
        first = None
    except GatewayError as exc:
        return error_response(exc, call)
    except BaseException:
        await asyncio.shield(chunks.aclose())
        raise
    writer = anthropic.MessageStreamWriter(model)

    def failure(chunk: dict) -> GatewayError | None:
        if "error" not in chunk or "choices" in chunk:
            return None
        err = chunk["error"] if isinstance(chunk["error"], dict) else {}
        status = 400 if err.get("type") == "invalid_request_error" else 502
        return GatewayError(status, str(err.get("message") or "upstream error"))

    async def body_iter() -> AsyncIterator[bytes]:
        try:
            yield writer.start(0)
            pending = [first] if first is not None else []
            async for chunk in _chain(pending, chunks):
                exc = failure(chunk)
                if exc is not None:
                    yield writer.error(exc)
                    return
                out = writer.feed(chunk)
                if out:
                    yield out
            yield writer.end(call.input_tokens, call.output_tokens, call.cached_tokens)
        finally:
            await asyncio.shield(chunks.aclose())

    resp = StreamingHttpResponse(body_iter(), content_type="text/event-stream")
    resp["Cache-Control"] = "no-cache"
    resp["X-Accel-Buffering"] = "no"
    return resp


async def _chain(first: list[dict], rest: AsyncIterator[dict]) -> AsyncIterator[dict]:
    for chunk in first:
        yield chunk
    async for chunk in rest:
        yield chunk
