"""The tenant API's ASGI transport (serving.tenant_asgi), called directly with ASGI messages:
what it does besides running a handler (the body bound, disconnects, failures, headers).
The handlers themselves are tested end to end through a real gateway process
(tests/serving/gateway)."""

from __future__ import annotations

import asyncio

import orjson

from serving.tenant_api import ApiReply, ApiRequest, event_reply, header_value, json_reply
from serving.tenant_asgi import TenantApi, handler_for


class Peer:
    """The server side of one HTTP exchange: the body's messages in, what was sent out."""

    def __init__(self, chunks: list[bytes], *, then_disconnect: bool = False) -> None:
        self.incoming = [
            {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
            for i, c in enumerate(chunks)
        ]
        self.then_disconnect = then_disconnect
        self.disconnect = asyncio.Event()
        self.sent: list[dict] = []

    async def receive(self) -> dict:
        if self.incoming:
            return self.incoming.pop(0)
        if not self.then_disconnect:
            await self.disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return self.sent[0]["status"]

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent[1:])


def scope(path: str = "/v1/x", headers: list[tuple[bytes, bytes]] | None = None) -> dict:
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": headers or [],
        "client": ("10.0.0.7", 5555),
    }


async def _no_fallback(scope, receive, send):  # noqa: ARG001
    raise AssertionError("not for the fallback")


def app(handler, **kw) -> TenantApi:
    return TenantApi(_no_fallback, resolve=lambda path: handler, **kw)


async def test_the_handler_gets_the_whole_body_headers_and_peer():
    seen: list[ApiRequest] = []

    async def handler(req: ApiRequest) -> ApiReply:
        seen.append(req)
        return json_reply({"ok": True}, 201)

    peer = Peer([b'{"a":', b" 1}"])
    headers = [(b"X-Request-Id", b"one"), (b"x-request-id", b"two"), (b"Content-Type", b"a/b")]
    await app(handler)(scope(headers=headers), peer.receive, peer.send)
    req = seen[0]
    assert req.body == b'{"a": 1}' and req.client == "10.0.0.7" and req.method == "POST"
    # Names lower-cased; a repeated header's values joined, as Django does.
    assert req.headers == {"x-request-id": "one,two", "content-type": "a/b"}
    assert peer.status == 201 and orjson.loads(peer.body) == {"ok": True}
    assert peer.headers[b"content-length"] == str(len(peer.body)).encode()


async def test_a_body_over_the_limit_is_413_and_the_handler_never_runs():
    async def handler(req):
        raise AssertionError("must not run")

    peer = Peer([b"x" * 60, b"x" * 60])
    await app(handler, body_limit=100)(scope(), peer.receive, peer.send)
    assert peer.status == 413
    assert orjson.loads(peer.body)["error"]["code"] == "request_too_large"


async def test_a_client_gone_before_its_body_is_whole_gets_nothing():
    async def handler(req):
        raise AssertionError("must not run")

    peer = Peer([], then_disconnect=True)
    await app(handler)(scope(), peer.receive, peer.send)
    assert peer.sent == []


async def test_a_disconnect_cancels_the_handler():
    state = {"started": asyncio.Event(), "cancelled": False}

    async def handler(req):
        state["started"].set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise
        return json_reply({})

    peer = Peer([b"{}"])
    task = asyncio.create_task(app(handler)(scope(), peer.receive, peer.send))
    await state["started"].wait()
    peer.disconnect.set()
    await asyncio.wait_for(task, 5)
    assert state["cancelled"] and peer.sent == []


async def test_a_disconnect_mid_stream_closes_the_stream():
    closed = asyncio.Event()

    async def events():
        try:
            yield b"data: 1\n\n"
            await asyncio.sleep(30)
            yield b"data: 2\n\n"
        finally:
            closed.set()

    async def handler(req):
        return event_reply(events())

    peer = Peer([b"{}"])
    task = asyncio.create_task(app(handler)(scope(), peer.receive, peer.send))
    while len(peer.sent) < 2:
        await asyncio.sleep(0.01)
    peer.disconnect.set()
    await asyncio.wait_for(task, 5)
    assert closed.is_set()
    assert peer.headers[b"content-type"] == b"text/event-stream"
    assert b"content-length" not in peer.headers and peer.body == b"data: 1\n\n"


async def test_a_whole_stream_ends_with_an_empty_last_message():
    async def events():
        yield b"data: 1\n\n"
        yield b"data: [DONE]\n\n"

    async def handler(req):
        return event_reply(events())

    peer = Peer([b"{}"])
    await app(handler)(scope(), peer.receive, peer.send)
    assert peer.body == b"data: 1\n\ndata: [DONE]\n\n"
    assert peer.sent[-1] == {"type": "http.response.body", "body": b""}


async def test_an_unexpected_failure_is_a_500_in_the_openai_shape_and_logged(caplog):
    async def handler(req):
        raise RuntimeError("secret internals")

    peer = Peer([b"{}"])
    await app(handler)(scope(), peer.receive, peer.send)
    assert peer.status == 500
    error = orjson.loads(peer.body)["error"]
    assert error["code"] == "internal_error" and "secret" not in error["message"]
    assert "secret internals" in caplog.text


def test_header_values_past_latin1_are_mime_encoded_like_django():
    from django.http import HttpResponse

    resp = HttpResponse()
    resp["x-client-request-id"] = "zażółć 請求"
    assert header_value("zażółć 請求") == resp["x-client-request-id"].encode("ascii")
    assert header_value("plain-ascii é") == "plain-ascii é".encode("latin-1")


def test_routes():
    assert handler_for("/v1/chat/completions") is not None
    assert handler_for("/v1/models/some/model") is not None
    assert handler_for("/v1/models/") is None  # Django's catch-all answers the 404
    assert handler_for("/v1/usage") is None and handler_for("/admin/") is None
