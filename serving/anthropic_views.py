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

from django.views.decorators.csrf import csrf_exempt

from serving.gateway.authentication import authenticate
from serving.gateway.call import Call
from serving.gateway.endpoints import CHAT
from serving.gateway.errors import GatewayError
from serving.gateway.pipeline import Stream, get_gateway, is_error_chunk
from serving.providers import anthropic
from serving.tenant_api import (
    ApiReply,
    ApiRequest,
    client_request_id,
    event_reply,
    http_reader,
    json_reply,
    parse_body,
)
from serving.views import as_django


def error_reply(exc: GatewayError, call: Call | None = None) -> ApiReply:
    """A gateway refusal in Anthropic's error shape, with its status and headers."""
    reply = json_reply(anthropic.error_body(exc), exc.status)
    reply.update(exc.headers)
    if call is not None:
        reply.update(call.headers(), keep=True)
        reply.headers["request-id"] = call.request_id
    return reply


def _post_only() -> ApiReply:
    reply = error_reply(GatewayError(405, "Method not allowed; use POST."))
    reply.headers["Allow"] = "POST"
    return reply


def authorization(req: ApiRequest) -> str | None:
    """The caller's key as an ``Authorization`` value: Bearer wins, else ``x-api-key``."""
    authz = req.headers.get("authorization")
    key = req.headers.get("x-api-key")
    if not authz and key is not None:
        return f"Bearer {key}"
    return authz


async def create_message(req: ApiRequest) -> ApiReply:
    """``POST /v1/messages``: a Messages request through the chat completions pipeline."""
    if req.method != "POST":
        return _post_only()
    try:
        auth = await authenticate(authorization(req), client=req.client)
    except GatewayError as exc:
        return error_reply(exc)
    call = Call(api=CHAT, body={}, auth=auth, client_request_id=client_request_id(req))
    read = http_reader(req, anthropic.from_messages_request)
    try:
        result = await get_gateway().run(call, read)
    except GatewayError as exc:
        return error_reply(exc, call)
    model = call.body["model"]
    if result.stream is not None:
        reply = event_reply(_message_events(result.stream, call, model))
    else:
        reply = json_reply(anthropic.to_message(result.response, model))
    reply.update(call.headers())
    reply.headers["request-id"] = call.request_id
    return reply


async def count_message_tokens(req: ApiRequest) -> ApiReply:
    """``POST /v1/messages/count_tokens``: the prompt's tokens by the gateway's tokenizer (the
    count metering uses when an upstream reports none; an estimate for other providers')."""
    if req.method != "POST":
        return _post_only()
    try:
        await authenticate(authorization(req), client=req.client)
        body = anthropic.from_messages_request({"max_tokens": 1, **parse_body(req)})
    except GatewayError as exc:
        return error_reply(exc)
    texts = CHAT.prompt_texts(body)
    n = await asyncio.to_thread(CHAT.count_prompt_tokens, texts)
    return json_reply({"input_tokens": n})


@csrf_exempt
async def messages(request):
    return as_django(await create_message(ApiRequest.from_django(request)))


@csrf_exempt
async def count_tokens(request):
    return as_django(await count_message_tokens(ApiRequest.from_django(request)))


def _stream_failure(chunk: dict) -> GatewayError | None:
    """The error that ends a stream, as a ``GatewayError`` for Anthropic's ``error`` event."""
    if not is_error_chunk(chunk):
        return None
    err = chunk["error"] if isinstance(chunk["error"], dict) else {}
    status = 400 if err.get("type") == "invalid_request_error" else 502
    return GatewayError(status, str(err.get("message") or "upstream error"))


async def _message_events(stream: Stream, call: Call, model: str) -> AsyncIterator[bytes]:
    """Messages SSE events over the gateway's OpenAI chunks. As for the OpenAI API, the
    upstream stream was opened before answering, so a failure before the first token was an
    HTTP error; a later one ends the stream with an ``error`` event and no ``message_stop``."""
    writer = anthropic.MessageStreamWriter(model)
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
