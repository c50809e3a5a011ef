"""WebSocket streaming API at /v1/ws: many requests on one socket, deltas interleaved.

Client → server messages (JSON):
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
"""

from __future__ import annotations

import asyncio
import contextlib

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from serving.gateway.errors import GatewayError, invalid
from serving.gateway.pipeline import Call, get_gateway

MAX_IN_FLIGHT = 16
ENDPOINTS = ("chat.completions", "completions")


class StreamConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.auth = None
        self.tasks: dict[str, asyncio.Task] = {}
        await self.accept()
        header = dict(self.scope.get("headers") or []).get(b"authorization")
        if header:
            await self._authenticate(header.decode(errors="replace"))

    async def disconnect(self, code) -> None:
        for task in list(self.tasks.values()):
            task.cancel()
        for task in list(self.tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _send_error(self, request_id, error: GatewayError) -> None:
        await self.send_json({"type": "error", "id": request_id, **error.body()})

    async def _authenticate(self, authorization: str) -> bool:
        try:
            self.auth = await get_gateway().authenticate(authorization)
        except GatewayError as exc:
            await self._send_error(None, exc)
            await self.close(code=4401)
            return False
        await self.send_json({"type": "ready"})
        return True

    async def receive_json(self, content, **kwargs) -> None:
        if not isinstance(content, dict):
            await self._send_error(None, invalid("Each message must be a JSON object."))
            return
        kind = content.get("type")
        if kind == "auth":
            key = content.get("api_key")
            await self._authenticate(f"Bearer {key}" if isinstance(key, str) else "")
            return
        if self.auth is None:
            await self._send_error(
                None, GatewayError(401, "Authenticate first.", code="missing_api_key")
            )
            await self.close(code=4401)
            return
        request_id = content.get("id")
        if kind == "cancel":
            task = self.tasks.get(request_id)
            if task is not None:
                task.cancel()
            return
        if kind != "request":
            await self._send_error(request_id, invalid(f"Unknown message type {kind!r}.", "type"))
            return
        if not isinstance(request_id, str) or not request_id or len(request_id) > 128:
            await self._send_error(None, invalid("Each request needs a string 'id'.", "id"))
            return
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
        endpoint = content.get("endpoint", "chat.completions")
        body = content.get("body")
        if endpoint not in ENDPOINTS:
            await self._send_error(
                request_id, invalid(f"Unknown endpoint {endpoint!r}.", "endpoint")
            )
            return
        if not isinstance(body, dict):
            await self._send_error(request_id, invalid("'body' must be an object.", "body"))
            return
        body = {**body, "stream": True}
        self.tasks[request_id] = asyncio.create_task(self._run(request_id, endpoint, body))

    async def _run(self, request_id: str, endpoint: str, body: dict) -> None:
        gw = get_gateway()
        call = Call(endpoint=endpoint, body=body, auth=self.auth)
        chunks = None
        try:
            try:
                await gw.aprepare(call)
                await gw.admit(call)
            except GatewayError as exc:
                await gw.log_refusal(call, exc)
                await self._send_error(request_id, exc)
                return
            chunks = gw.stream(call)
            async for chunk in chunks:
                if "error" in chunk and "choices" not in chunk:
                    await self.send_json({"type": "error", "id": request_id, **chunk})
                    continue
                await self.send_json({"type": "chunk", "id": request_id, "data": chunk})
            await self.send_json({"type": "done", "id": request_id})
        except GatewayError as exc:
            await self._send_error(request_id, exc)
        except asyncio.CancelledError:
            if chunks is not None:
                await chunks.aclose()
            with contextlib.suppress(Exception):
                await self.send_json({"type": "cancelled", "id": request_id})
        finally:
            self.tasks.pop(request_id, None)
