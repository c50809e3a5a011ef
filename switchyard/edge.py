"""Limits at the ASGI edge, in front of the whole application (switchyard/asgi.py).

Nothing behind this middleware reads more than the limits allow, authenticated or not:

- HTTP: a ``Content-Length`` over the limit is answered 413 at once, before a byte of the
  body is read; a body without a length (chunked) is counted as it arrives and refused with
  413 as soon as it passes the limit, without reading the rest. The limit is
  ``SWITCHYARD_MAX_BODY_BYTES`` for the tenant API (``/v1/``) and Django's
  ``DATA_UPLOAD_MAX_MEMORY_SIZE`` elsewhere. The 413 closes the connection.
- WebSocket: a message over ``SWITCHYARD_MAX_WS_MESSAGE_BYTES`` gets an error event and the
  socket is closed with 1009 (message too big); the application sees a disconnect. The ASGI
  server caps a frame too (uvicorn ``--ws-max-size``, the Procfile sets it at four times this
  limit), so a message never has to be buffered whole past that.

Errors are in the OpenAI format ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

API_PREFIX = "/v1/"
WS_MESSAGE_TOO_BIG = 1009


def error_body(message: str, code: str, param: str | None = None) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    }


def _too_large(limit: int) -> bytes:
    return json.dumps(
        error_body(
            f"The request body is larger than the limit of {limit} bytes.", "request_too_large"
        )
    ).encode()


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def ws_message_over(message: Message, limit: int) -> bool:
    """Whether a ``websocket.receive`` message is over ``limit`` bytes (UTF-8 for text),
    encoding the text only when its length in characters cannot tell."""
    data = message.get("bytes")
    if data is not None:
        return len(data) > limit
    text = message.get("text") or ""
    if len(text) > limit:
        return True
    if len(text) * 4 <= limit:
        return False
    return len(text.encode("utf-8", "surrogatepass")) > limit


class EdgeLimits:
    """ASGI middleware: request-body and WebSocket-message size limits (module docstring)."""

    def __init__(
        self, app: App, *, api_body_bytes: int, other_body_bytes: int, ws_message_bytes: int
    ) -> None:
        self.app = app
        self.api_body_bytes = api_body_bytes
        self.other_body_bytes = other_body_bytes
        self.ws_message_bytes = ws_message_bytes

    @classmethod
    def from_settings(cls, app: App) -> EdgeLimits:
        from django.conf import settings

        return cls(
            app,
            api_body_bytes=settings.SWITCHYARD_MAX_BODY_BYTES,
            other_body_bytes=max(
                settings.SWITCHYARD_MAX_BODY_BYTES, settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0
            ),
            ws_message_bytes=settings.SWITCHYARD_MAX_WS_MESSAGE_BYTES,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    # ---- HTTP --------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = (
            self.api_body_bytes
            if scope.get("path", "").startswith(API_PREFIX)
            else self.other_body_bytes
        )
        length = _content_length(scope)
        if length is not None and length > limit:
            await self._refuse(send, limit)
            return
        state = {"received": 0, "refused": False, "started": False}

        async def counted_receive() -> Message:
            if state["refused"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    state["refused"] = True
                    if not state["started"]:
                        state["started"] = True
                        await self._refuse(send, limit)
                    # The application sees a client that went away and stops reading.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if state["refused"]:
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        await self.app(scope, counted_receive, guarded_send)

    @staticmethod
    async def _refuse(send: Send, limit: int) -> None:
        body = _too_large(limit)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    # Whatever of the body is still coming is not read: end the connection.
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    # ---- WebSocket ---------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.ws_message_bytes
        state = {"closed": False}

        async def counted_receive() -> Message:
            if state["closed"]:
                return {"type": "websocket.disconnect", "code": WS_MESSAGE_TOO_BIG}
            message = await receive()
            if message["type"] == "websocket.receive" and ws_message_over(message, limit):
                state["closed"] = True
                event = {
                    "type": "error",
                    "id": None,
                    **error_body(
                        f"A WebSocket message may be at most {limit} bytes.", "message_too_large"
                    ),
                }
                try:
                    await send({"type": "websocket.send", "text": json.dumps(event)})
                    await send({"type": "websocket.close", "code": WS_MESSAGE_TOO_BIG})
                except Exception:  # noqa: BLE001 - the client may be gone already
                    pass
                return {"type": "websocket.disconnect", "code": WS_MESSAGE_TOO_BIG}
            return message

        async def guarded_send(message: Message) -> None:
            if state["closed"]:
                return
            await send(message)

        await self.app(scope, counted_receive, guarded_send)
