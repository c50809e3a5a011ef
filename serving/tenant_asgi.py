"""The tenant API's hot endpoints as a plain ASGI app, in front of Django.

Every production request to ``/v1/chat/completions``, ``/v1/completions``,
``/v1/embeddings``, ``/v1/models`` and ``/v1/messages`` is answered here, on the event loop,
by the same handlers the Django views adapt (:mod:`serving.tenant_api`): the body is read
into bytes, the reply is sent as it is. Django's handler costs a request object, a spooled
temporary file for the body, URL resolution, two signals (run on a worker thread) and a
response object; profiled under load that was about half the gateway's CPU per request
(benchmarks/RESULTS.md, "Gateway"). Other paths go to ``fallback`` (Django).

What Django's handler did that matters here is kept: a client that disconnects before its
answer is complete cancels the handler (so the gateway aborts the generation upstream and
meters what was done), and an unexpected exception is a 500 (in the OpenAI error shape here)
with the traceback logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

from serving import anthropic_views, tenant_api
from serving.gateway.errors import GatewayError
from serving.tenant_api import ApiReply, ApiRequest, error_reply, header_value

logger = logging.getLogger("serving.tenant_asgi")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Handler = Callable[[ApiRequest], Awaitable[ApiReply]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

ROUTES: dict[str, Handler] = {
    "/v1/chat/completions": tenant_api.chat_completions,
    "/v1/completions": tenant_api.completions,
    "/v1/embeddings": tenant_api.embeddings,
    "/v1/models": tenant_api.models,
    "/v1/messages": anthropic_views.create_message,
    "/v1/messages/count_tokens": anthropic_views.count_message_tokens,
}
MODEL_PREFIX = "/v1/models/"


def handler_for(path: str) -> Handler | None:
    """The handler of ``path`` (already percent-decoded, as ASGI gives it), or None."""
    handler = ROUTES.get(path)
    if handler is not None:
        return handler
    if path.startswith(MODEL_PREFIX) and len(path) > len(MODEL_PREFIX):
        model = path[len(MODEL_PREFIX) :]
        return lambda req: tenant_api.models(req, model)
    return None


class ClientGone(Exception):
    """The client disconnected before its request body was whole."""


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None when it grows past ``limit`` (the edge refuses that first,
    with a 413; this bound stands for an app mounted without it)."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                return None
            parts.append(chunk)
        if not message.get("more_body", False):
            return parts[0] if len(parts) == 1 else b"".join(parts)


async def send_reply(reply: ApiReply, send: Send) -> None:
    headers = [(b"content-type", reply.content_type.encode("latin-1"))]
    if reply.events is None:
        headers.append((b"content-length", str(len(reply.body)).encode()))
    headers += [(k.encode("latin-1"), header_value(v)) for k, v in reply.headers.items()]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    if reply.events is None:
        await send({"type": "http.response.body", "body": reply.body})
        return
    events = reply.events
    try:
        async for event in events:
            await send({"type": "http.response.body", "body": event, "more_body": True})
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    await send({"type": "http.response.body", "body": b""})


def _internal_error() -> ApiReply:
    return error_reply(
        GatewayError(
            500,
            "The gateway failed while handling this request; it was logged.",
            type="api_error",
            code="internal_error",
        )
    )


class TenantApi:
    """ASGI app: the hot ``/v1`` endpoints here, everything else to ``fallback``."""

    def __init__(
        self,
        fallback: App,
        body_limit: int | None = None,
        resolve: Callable[[str], Handler | None] = handler_for,
    ) -> None:
        self.fallback = fallback
        self.body_limit = body_limit or settings.SWITCHYARD_MAX_BODY_BYTES
        self.resolve = resolve

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.resolve(scope["path"]) if scope["type"] == "http" else None
        if handler is None:
            await self.fallback(scope, receive, send)
            return
        try:
            body = await read_body(receive, self.body_limit)
        except ClientGone:
            return
        if body is None:
            await send_reply(error_reply(too_large(self.body_limit)), send)
            return
        client = scope.get("client")
        req = ApiRequest(
            method=scope["method"],
            headers=_joined(scope["headers"]),
            body=body,
            client=client[0] if client else None,
        )
        await self._serve(handler, req, receive, send)

    async def _serve(self, handler: Handler, req: ApiRequest, receive: Receive, send: Send):
        """Run the handler and send its reply, cancelled if the client disconnects first."""
        work = asyncio.create_task(self._respond(handler, req, send))
        watch = asyncio.create_task(_disconnected(receive))
        await asyncio.wait((work, watch), return_when=asyncio.FIRST_COMPLETED)
        if work.done():
            watch.cancel()
            work.result()
            return
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await work

    @staticmethod
    async def _respond(handler: Handler, req: ApiRequest, send: Send) -> None:
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await send_reply(await handler(req), tracked)
        except Exception:
            logger.exception("tenant API: %s failed", req.method)
            if not started:
                await send_reply(_internal_error(), send)


def too_large(limit: int) -> GatewayError:
    message = f"The request body is larger than the limit of {limit} bytes."
    return GatewayError(413, message, code="request_too_large")


def _joined(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Headers with repeats joined by ``,`` (RFC 9110), as Django's ``request.headers``."""
    out: dict[str, str] = {}
    for k, v in raw:
        name, value = k.decode("latin-1").lower(), v.decode("latin-1")
        out[name] = f"{out[name]},{value}" if name in out else value
    return out


async def _disconnected(receive: Receive) -> None:
    """Returns when the client disconnects (the only message after a whole body)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
