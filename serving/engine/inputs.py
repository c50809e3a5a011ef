"""Reading a worker request: its JSON body (size-capped), the gateway's tenant headers, and
a watch for the client going away while its request waits or runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable
from typing import Any

from starlette.requests import Request

from serving.engine.protocol import ProtocolError

MAX_BODY_BYTES = 8 << 20
MAX_ID_CHARS = 256


class ClientGone(Exception):
    """The HTTP client disconnected while its request waited or ran."""


async def until_disconnect(request: Request, aw: Awaitable[Any]) -> Any:
    """Await ``aw``; if the client disconnects first, cancel it and raise :class:`ClientGone`.

    Cancelling a task that waits on the engine's generator aborts the request there (queued
    or running) and frees its blocks."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    work = asyncio.ensure_future(aw)
    watch = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        work.cancel()
        watch.cancel()
        raise
    watch.cancel()
    if work.done():
        return work.result()
    work.cancel()
    with contextlib.suppress(BaseException):
        await work
    raise ClientGone


async def read_json(request: Request) -> Any:
    """The request's JSON body; a ProtocolError when it is too large (413) or not JSON."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ProtocolError(
            f"The request body is larger than {MAX_BODY_BYTES} bytes.",
            code="request_too_large",
            status=413,
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ProtocolError(
                f"The request body is larger than {MAX_BODY_BYTES} bytes.",
                code="request_too_large",
                status=413,
            )
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, RecursionError):
        raise ProtocolError(
            "We could not parse the JSON body of your request.", code="invalid_json"
        ) from None


def tenant_of(request: Request) -> tuple[str, float, int, str]:
    """Tenant, fairness weight, priority and prefix-cache salt from the gateway's headers."""
    h = request.headers
    try:
        weight = float(h.get("x-switchyard-weight", "1")[:32])
        priority = int(h.get("x-switchyard-priority", "0")[:16])
    except ValueError as exc:
        raise ProtocolError("Bad x-switchyard-weight or x-switchyard-priority header.") from exc
    if not 0.01 <= weight <= 1000:  # a tier's range; tinier ones overflow the counters
        raise ProtocolError("x-switchyard-weight must be between 0.01 and 1000.")
    tenant = h.get("x-switchyard-tenant", "default")[:64]
    salt = h.get("x-switchyard-prefix-salt") or tenant
    return tenant, weight, priority, salt[:MAX_ID_CHARS]
