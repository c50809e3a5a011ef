"""WebSocket streaming API at /v1/ws: many requests on one socket, deltas interleaved.

Client → server messages (JSON text frames):
  {"type": "auth", "api_key": "sy-…"}            (or send "Authorization: Bearer" on connect)
  {"type": "request", "id": "c1", "endpoint": "chat.completions" | "completions",
   "body": {…OpenAI request body…}}                (always streamed)
  {"type": "cancel", "id": "c1"}
Server → client:
  {"type": "ready"}                               once authenticated
  {"type": "chunk", "id": "c1", "data": {…OpenAI stream chunk…}}
  {"type": "done", "id": "c1"}
  {"type": "cancelled", "id": "c1"}
  {"type": "error", "id": "c1" | null, "error": {"message", "type", "param", "code"}}

Each request ends with ``done`` or ``cancelled``, or with ``error`` (one per failed choice of
a stream): nothing more is sent for that id afterwards. An error with ``"id": null`` is about
the socket or about a message that named no request in flight.

A socket lives as long as its client: there is no channel layer behind it (nothing here uses
group messaging) and no timeout but the server's keepalive pings, which a live client answers.
Its key is authenticated again for every request (so tier changes apply to the next request),
and watched while the socket is open (:mod:`serving.key_watch`): once the key is revoked or
expires, or the tenant is suspended, every request in flight ends with that error (and is
metered as client-closed), the socket gets the error with ``"id": null`` and is closed with
4401 (invalid key) or 4403 (suspended tenant); refusals close with 4000 + the HTTP status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from channels.generic.websocket import AsyncWebsocketConsumer

from serving.gateway.authentication import authenticate
from serving.gateway.call import Call
from serving.gateway.endpoints import CHAT, ENDPOINTS, Endpoint
from serving.gateway.errors import GatewayError, invalid
from serving.gateway.pipeline import Stream, get_gateway, is_error_chunk
from serving.gateway.validation import parse_json_body
from serving.key_watch import key_watch
from tenants.auth import AuthContext, AuthFailure

MAX_IN_FLIGHT = 16
# A socket that has not authenticated this long after opening is closed (4401): sockets live
# as long as their clients, but only an authenticated client may hold one.
AUTH_TIMEOUT_SECONDS = 10.0
MAX_ID_CHARS = 128
# The endpoints a socket may call, by name: those that stream.
STREAMED = {name: api for name, api in ENDPOINTS.items() if api.streams}

log = logging.getLogger(__name__)


def _short(value: Any) -> str:
    """A client value for an error message, bounded."""
    text = repr(value)
    return text if len(text) <= 64 else text[:61] + "..."


def close_code(error: GatewayError) -> int:
    """The WebSocket close code for a refusal: 4000 + its HTTP status (4401, 4403, 4429)."""
    return 4000 + error.status if 400 <= error.status < 600 else 4400


def internal_error() -> GatewayError:
    return GatewayError(
        500, "The server failed to handle this message.", type="api_error", code="internal_error"
    )


class StreamConsumer(AsyncWebsocketConsumer):
    # No channel layer: this consumer takes part in no group messaging. (Subscribed to the
    # Redis layer, every socket died when the layer's idle read timed out, 5 s after opening.)
    channel_layer_alias = None

    async def connect(self) -> None:
        self.auth: AuthContext | None = None
        self.authorization: str | None = None
        client = self.scope.get("client")
        self.client: str | None = client[0] if client else None
        self.tasks: dict[str, asyncio.Task] = {}  # requests in flight, by client id
        self.ending: set[asyncio.Task] = set()  # ended for the client, still being metered
        self.closing_error: GatewayError | None = None
        self.closed = False
        self._unwatch = None
        self._auth_deadline: asyncio.TimerHandle | None = None
        self._closer: asyncio.Task | None = None
        await self.accept()
        header = dict(self.scope.get("headers") or []).get(b"authorization")
        if header:
            await self._authenticate(header.decode(errors="replace"))
        if self.auth is None and not self.closed:
            self._auth_deadline = asyncio.get_running_loop().call_later(
                AUTH_TIMEOUT_SECONDS, self._auth_timed_out
            )

    def _auth_timed_out(self) -> None:
        if self.auth is None and not self.closed and self._closer is None:
            error = GatewayError(
                401,
                f"Authenticate within {AUTH_TIMEOUT_SECONDS:g} s of connecting.",
                code="missing_api_key",
            )
            self._closer = asyncio.create_task(self._fail(error))

    async def disconnect(self, code) -> None:
        self.closed = True
        if self._auth_deadline is not None:
            self._auth_deadline.cancel()
        self._stop_watching()
        await self._cancel_all()

    # ---- sending and closing ------------------------------------------------------------

    async def _send(self, event: dict[str, Any]) -> None:
        if self.closed:
            return
        try:
            await self.send(text_data=orjson.dumps(event).decode())
        except Exception:  # the client is gone; disconnect() cleans up
            self.closed = True

    async def _send_error(self, request_id: str | None, error: GatewayError) -> None:
        await self._send({"type": "error", "id": request_id, **error.body()})

    async def _end(self, request_id: str, *events: dict[str, Any]) -> None:
        """Send a request's last events, once: whoever ends a request first (the request
        itself, a cancel, the socket failing) is the only one heard."""
        if self.tasks.pop(request_id, None) is not None:
            for event in events:
                await self._send(event)

    def _cancel(self, request_id: str) -> None:
        """Stop a request; it meters what it produced (client-closed) after its end is sent."""
        task = self.tasks.get(request_id)
        if task is not None and task.cancel():
            self.ending.add(task)
            task.add_done_callback(self.ending.discard)

    async def _cancel_all(self) -> None:
        for request_id in list(self.tasks):
            self._cancel(request_id)
        self.tasks.clear()
        for task in list(self.ending):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _fail(self, error: GatewayError) -> None:
        """End the socket for ``error``: each request in flight ends with it at once, then
        the socket gets it and is closed; the cancelled requests are metered after that."""
        if self.closed or self.closing_error is not None:
            return
        self.closing_error = error
        self._stop_watching()
        for request_id in list(self.tasks):
            self._cancel(request_id)
            await self._end(request_id, {"type": "error", "id": request_id, **error.body()})
        await self._send_error(None, error)
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                await self.close(code=close_code(error))
        await self._cancel_all()

    # ---- authentication -----------------------------------------------------------------

    async def _authenticate(self, authorization: str) -> bool:
        try:
            auth = await authenticate(authorization, client=self.client)
        except GatewayError as exc:
            await self._fail(exc)
            return False
        self.authorization = authorization
        self.auth = auth
        self._stop_watching()
        self._unwatch = key_watch().watch(auth.key.key_hash, self._key_failed)
        await self._send({"type": "ready"})
        return True

    async def _reauthenticate(self) -> bool:
        """The key's current context (through the 1-s cache), or end the socket."""
        try:
            self.auth = await authenticate(self.authorization, client=self.client)
        except GatewayError as exc:
            await self._fail(exc)
            return False
        return True

    def _stop_watching(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None

    def _key_failed(self, failure: AuthFailure) -> None:
        self._unwatch = None  # the watch forgets a key once it reports it
        if not self.closed and self._closer is None:
            self._closer = asyncio.create_task(self._revoked())

    async def _revoked(self) -> None:
        # The refusal as HTTP would give it, from the cache the watch just filled (no client
        # address: the socket did not try again, so nothing counts against its address).
        try:
            self.auth = await authenticate(self.authorization)
        except GatewayError as exc:
            await self._fail(exc)
            return
        finally:
            self._closer = None
        # Usable again by now (e.g. the tenant was reactivated at once): keep watching.
        if not self.closed and self.auth is not None:
            self._unwatch = key_watch().watch(self.auth.key.key_hash, self._key_failed)

    # ---- receiving ----------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closed:
            return
        if text_data is None:
            await self._send_error(
                None,
                invalid(
                    "Send each message as a JSON text frame; binary frames are not accepted.",
                    code="invalid_message",
                ),
            )
            return
        try:
            # The same bounds as an HTTP body: depth and container count checked before
            # parsing, so deep nesting never reaches recursive code.
            content = parse_json_body(text_data.encode("utf-8", "surrogatepass"))
        except GatewayError as exc:
            await self._send_error(None, exc)
            return
        try:
            await self._handle(content)
        except Exception:
            log.exception("websocket: handling a message failed")
            await self._send_error(None, internal_error())

    async def _handle(self, content: Any) -> None:
        if not isinstance(content, dict):
            await self._send_error(None, invalid("Each message must be a JSON object."))
            return
        kind = content.get("type")
        if kind == "auth":
            key = content.get("api_key")
            await self._authenticate(f"Bearer {key}" if isinstance(key, str) else "")
            return
        if self.auth is None:
            await self._fail(GatewayError(401, "Authenticate first.", code="missing_api_key"))
            return
        if kind not in ("request", "cancel"):
            await self._send_error(
                None, invalid(f"Unknown message type {_short(kind)}.", "type", "unknown_type")
            )
            return
        request_id = content.get("id")
        if not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_ID_CHARS:
            await self._send_error(
                None,
                invalid(
                    f"Each {kind} needs a string 'id' of 1 to {MAX_ID_CHARS} characters.", "id"
                ),
            )
            return
        if kind == "cancel":
            if request_id not in self.tasks:
                await self._send_error(
                    None,
                    invalid(
                        f"No request {_short(request_id)} is in flight.",
                        "id",
                        "request_not_in_flight",
                    ),
                )
            else:
                self._cancel(request_id)
                await self._end(request_id, {"type": "cancelled", "id": request_id})
            return
        await self._request(request_id, content)

    async def _request(self, request_id: str, content: dict) -> None:
        if request_id in self.tasks:
            await self._send_error(request_id, invalid("This id is already in flight.", "id"))
            return
        if len(self.tasks) >= MAX_IN_FLIGHT:
            await self._send_error(
                request_id,
                GatewayError(
                    429,
                    f"At most {MAX_IN_FLIGHT} requests in flight per socket.",
                    type="requests",
                    code="too_many_in_flight",
                ),  # fmt: skip
            )
            return
        endpoint = content.get("endpoint", CHAT.name)
        body = content.get("body")
        api = STREAMED.get(endpoint) if isinstance(endpoint, str) else None
        if api is None:
            await self._send_error(
                request_id, invalid(f"Unknown endpoint {_short(endpoint)}.", "endpoint")
            )
            return
        if not isinstance(body, dict):
            await self._send_error(request_id, invalid("'body' must be an object.", "body"))
            return
        # Every request authenticates again: a revoked key stops here, a new tier applies.
        if not await self._reauthenticate():
            return
        body = {**body, "stream": True}
        self.tasks[request_id] = asyncio.create_task(self._run(request_id, api, body))

    async def _run(self, request_id: str, api: Endpoint, body: dict) -> None:
        call = Call(api=api, body=body, auth=self.auth)
        stream: Stream | None = None
        try:
            stream = (await get_gateway().run(call)).stream
            assert stream is not None  # the body asks for a stream, and the endpoint streams
            errors = []
            async for chunk in stream:
                if is_error_chunk(chunk):
                    errors.append({"type": "error", "id": request_id, **chunk})  # sent last
                    continue
                await self._send({"type": "chunk", "id": request_id, "data": chunk})
            end = errors or [{"type": "done", "id": request_id}]
        except GatewayError as exc:
            end = [{"type": "error", "id": request_id, **exc.body()}]
        except asyncio.CancelledError:
            # Ended for the client by whoever cancelled; the stream meters what it produced.
            if stream is not None:
                await stream.aclose()
            raise
        except Exception:
            log.exception("websocket: request %s failed", call.request_id)
            if stream is not None:
                with contextlib.suppress(Exception):
                    await stream.aclose()
            end = [{"type": "error", "id": request_id, **internal_error().body()}]
        await self._end(request_id, *end)
