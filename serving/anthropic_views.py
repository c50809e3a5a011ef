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

from serving.gateway.authentication import authenticate
from serving.gateway.call import Call
from serving.gateway.endpoints import CHAT
from serving.gateway.errors import GatewayError
from serving.gateway.pipeline import Stream, get_gateway, is_error_chunk
from serving.providers import anthropic
from serving.views import _parse, client_request_id, event_stream, http_reader


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
    try:
        auth = await authenticate(authorization(request), client=request.META.get("REMOTE_ADDR"))
    except GatewayError as exc:
        return error_response(exc)
    call = Call(api=CHAT, body={}, auth=auth, client_request_id=client_request_id(request))
    read = http_reader(request, anthropic.from_messages_request)
    try:
        result = await get_gateway().run(call, read)
    except GatewayError as exc:
        return error_response(exc, call)
    model = call.body["model"]
    if result.stream is not None:
        resp = _event_response(result.stream, call, model)
    else:
        resp = JsonResponse(anthropic.to_message(result.response, model))
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
    try:
        await authenticate(authorization(request), client=request.META.get("REMOTE_ADDR"))
        body = anthropic.from_messages_request({"max_tokens": 1, **_parse(request)})
    except GatewayError as exc:
        return error_response(exc)
    texts = CHAT.prompt_texts(body)
    n = await asyncio.to_thread(CHAT.count_prompt_tokens, texts)
    return JsonResponse({"input_tokens": n})


def _stream_failure(chunk: dict) -> GatewayError | None:
    """The error that ends a stream, as a ``GatewayError`` for Anthropic's ``error`` event."""
    if not is_error_chunk(chunk):
        return None
    err = chunk["error"] if isinstance(chunk["error"], dict) else {}
    status = 400 if err.get("type") == "invalid_request_error" else 502
    return GatewayError(status, str(err.get("message") or "upstream error"))


def _event_response(stream: Stream, call: Call, model: str) -> StreamingHttpResponse:
    """Messages SSE events over the gateway's OpenAI chunks. As for the OpenAI views, the
    upstream stream was opened before answering, so a failure before the first token was an
    HTTP error; a later one ends the stream with an ``error`` event and no ``message_stop``."""
    writer = anthropic.MessageStreamWriter(model)

    async def body_iter() -> AsyncIterator[bytes]:
        try:
            yield writer.start(0)
            async for chunk in stream:
                exc = _stream_failure(chunk)
                if exc is not None:
                    yield writer.error(exc)
                    return
                out = writer.feed(chunk)
                if out:
                    yield out
            yield writer.end(call.input_tokens, call.output_tokens, call.cached_tokens)
        finally:
            await stream.aclose()

    return event_stream(body_iter())
