"""The OpenAI-compatible tenant API, apart from any web framework.

A handler takes an :class:`ApiRequest` (method, lower-cased headers, the body's bytes, the
peer address) and answers an :class:`ApiReply` (status, headers, and a JSON body or a stream
of SSE events). Two transports serve the same handlers:

- :mod:`serving.tenant_asgi`, the ASGI app in front of Django that answers the hot endpoints
  on the event loop itself (no Django request or response objects, no signals, no URL
  resolution): what every production request takes;
- Django views (:mod:`serving.views`, :mod:`serving.anthropic_views`), for the URLconf (its
  names, the test client, a deployment that mounts Django alone).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from email.header import Header
from typing import Any

import orjson
from django.conf import settings

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
from switchyard.json_bytes import json_bytes
from tenants.auth import AuthContext

JSON = "application/json"


@dataclass(slots=True)
class ApiRequest:
    """One HTTP request, as the handlers read it. Header names are lower-case; a repeated
    header's values are joined with ``,`` (as Django and RFC 9110 do)."""

    method: str
    headers: dict[str, str]
    body: bytes = b""
    client: str | None = None

    @classmethod
    def from_django(cls, request) -> ApiRequest:
        return cls(
            method=request.method,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=request.body,
            client=request.META.get("REMOTE_ADDR"),
        )


@dataclass(slots=True)
class ApiReply:
    """What a handler answers: ``body`` (bytes) or, for a stream, ``events`` (SSE bytes)."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = JSON
    events: AsyncIterator[bytes] | None = None

    def update(self, headers: dict[str, str], *, keep: bool = False) -> None:
        """Add ``headers`` (``keep``: without replacing what is set already)."""
        for k, v in headers.items():
            if not (keep and k in self.headers):
                self.headers[k] = v


def json_reply(data: Any, status: int = 200) -> ApiReply:
    return ApiReply(status=status, body=json_bytes(data))


def error_reply(exc: GatewayError, call: Call | None = None) -> ApiReply:
    """A refusal in the OpenAI error shape, with its headers and the call's."""
    reply = json_reply(exc.body(), exc.status)
    reply.update(exc.headers)
    if call is not None:
        reply.update(call.headers(), keep=True)
    return reply


def method_not_allowed(allowed: str) -> ApiReply:
    reply = error_reply(
        GatewayError(405, f"Method not allowed; use {allowed}.", code="method_not_allowed")
    )
    reply.headers["Allow"] = allowed
    return reply


def event_reply(events: AsyncIterator[bytes]) -> ApiReply:
    """A ``text/event-stream`` reply over ``events``, neither cached nor buffered."""
    return ApiReply(
        content_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        events=events,
    )


def header_value(value: str) -> bytes:
    """A response header's value as bytes: Latin-1, or (like Django) MIME-encoded UTF-8 for
    what Latin-1 cannot hold (a client's own request id may be any printable text)."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return Header(value, "utf-8", maxlinelen=10**9).encode().encode("ascii")


def sse_event(chunk: dict) -> bytes:
    """One SSE event (orjson: the stream path serialises a chunk per token)."""
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def parse_body(req: ApiRequest) -> dict:
    """The body, bounded: the edge refused what is over the limit before reading it (this
    check stands for deployments without the edge middleware), and the JSON's depth and size
    are checked before parsing (:func:`parse_json_body`)."""
    limit = settings.SWITCHYARD_MAX_BODY_BYTES
    length = parse_content_length(req.headers.get("content-length"))
    if (length is not None and length > limit) or len(req.body) > limit:
        raise GatewayError(
            413,
            f"The request body is larger than the limit of {limit} bytes.",
            code="request_too_large",
        )
    return parse_json_body(req.body or b"")


def http_reader(
    req: ApiRequest, translate: Callable[[dict], dict] | None = None
) -> Callable[[Call], None]:
    """How an HTTP request fills its call, run by :meth:`Gateway.run` as its first stage (so
    that what it refuses is logged): the bounded JSON body (passed through ``translate`` for
    an API in another shape), the Cache-Control header and the caller's cost cap."""

    def read(call: Call) -> None:
        body = parse_body(req)
        call.body = translate(body) if translate is not None else body
        call.cache_control = req.headers.get("cache-control", "")[:256]
        call.max_cost = parse_max_cost_header(req.headers.get("x-switchyard-max-cost-usd"))

    return read


def client_request_id(req: ApiRequest) -> str:
    """The client's X-Request-Id, as a label: the request id is always ours, this is echoed."""
    return clean_label(req.headers.get("x-request-id", ""), CLIENT_REQUEST_ID_CHARS)


async def caller(req: ApiRequest, method: str) -> AuthContext | ApiReply:
    """The caller's key, tenant and tier, or the refusal to answer (a 405 for another
    method, the authentication's error)."""
    if req.method != method:
        return method_not_allowed(method)
    try:
        return await authenticate(req.headers.get("authorization"), client=req.client)
    except GatewayError as exc:
        return error_reply(exc)


async def generate(req: ApiRequest, endpoint: Endpoint) -> ApiReply:
    """``POST`` chat completions, completions or embeddings through the gateway pipeline."""
    auth = await caller(req, "POST")
    if isinstance(auth, ApiReply):
        return auth
    call = Call(api=endpoint, body={}, auth=auth, client_request_id=client_request_id(req))
    try:
        result = await get_gateway().run(call, http_reader(req))
    except GatewayError as exc:
        return error_reply(exc, call)
    if result.stream is not None:
        reply = event_reply(openai_events(result.stream))
    else:
        reply = json_reply(result.response)
    reply.update(call.headers())
    return reply


async def openai_events(stream: Stream) -> AsyncIterator[bytes]:
    """SSE over the gateway's stream (opened before answering, so a failure before the first
    token was a proper HTTP error). A stream that ends with an error event gets no
    ``[DONE]`` after it: ``[DONE]`` means the answer is whole."""
    failed = False
    try:
        async for chunk in stream:
            failed = failed or is_error_chunk(chunk)
            yield sse_event(chunk)
        if not failed:
            yield b"data: [DONE]\n\n"
    finally:
        await stream.aclose()


async def chat_completions(req: ApiRequest) -> ApiReply:
    return await generate(req, CHAT)


async def completions(req: ApiRequest) -> ApiReply:
    return await generate(req, COMPLETIONS)


async def embeddings(req: ApiRequest) -> ApiReply:
    return await generate(req, EMBEDDINGS)


def _model_card(name: str) -> dict:
    return {"id": name, "object": "model", "created": 0, "owned_by": "switchyard"}


async def models(req: ApiRequest, model: str | None = None) -> ApiReply:
    """``GET /v1/models`` (or one model): the names the caller's key may call."""
    auth = await caller(req, "GET")
    if isinstance(auth, ApiReply):
        return auth
    names = callable_models(auth.tier, await arouting_table(), tenant_id=auth.tenant.pk)
    if model is not None:
        if model not in names:
            return error_reply(model_not_found(model))
        return json_reply(_model_card(model))
    return json_reply({"object": "list", "data": [_model_card(m) for m in names]})
