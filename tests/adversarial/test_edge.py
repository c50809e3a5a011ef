"""Limits at the ASGI edge (switchyard/edge.py), attacked over raw sockets against the real
gateway process: bodies are refused by their claimed or counted size before they are read,
WebSocket messages are capped, and the gateway stays responsive throughout."""

from __future__ import annotations

import asyncio
import json
import select
import socket
import time

import httpx
import websockets

from tests.gateway_fixtures import MODEL

LIMIT = 1_048_576  # SWITCHYARD_MAX_BODY_BYTES and SWITCHYARD_MAX_WS_MESSAGE_BYTES defaults


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _read_response(sock: socket.socket, timeout: float = 5) -> tuple[int, dict, bytes]:
    """Status, headers and body of one HTTP/1.1 response with a Content-Length."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def _assert_too_large(status: int, body: bytes) -> None:
    assert status == 413
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "request_too_large" and error["type"] == "invalid_request_error"


def _assert_responsive(caller) -> None:
    t0 = time.monotonic()
    assert httpx.get(f"{caller.base_url}/healthz", timeout=5).status_code == 200
    resp = caller.post(
        "/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "still here"}]},
    )
    assert resp.status_code == 200, resp.text
    assert time.monotonic() - t0 < 5


def test_a_100_mb_content_length_claim_is_refused_before_the_body(caller):
    for path in ("/v1/chat/completions", "/console/login/"):
        sock = _connect(caller.base_url)
        with sock:
            sock.sendall(
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {caller.key}\r\nContent-Type: application/json\r\n"
                "Content-Length: 100000000\r\n\r\n".encode()
                + b'{"model": "'
            )
            t0 = time.monotonic()
            status, headers, body = _read_response(sock)
            assert time.monotonic() - t0 < 2
            _assert_too_large(status, body)
            assert headers.get("connection") == "close"
            # The server hangs up: the other 99.99 MB are never read.
            sock.settimeout(5)
            assert sock.recv(1) == b""
    _assert_responsive(caller)


def test_a_chunked_5_mb_body_is_cut_once_past_the_limit(caller):
    sock = _connect(caller.base_url)
    piece = b"x" * 65536
    frame = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    sent = 0
    response = None
    with sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Authorization: Bearer {caller.key}\r\n".encode()
            + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        try:
            while sent < 5 * LIMIT:
                if select.select([sock], [], [], 0)[0]:
                    response = _read_response(sock)
                    break
                sock.sendall(frame)
                sent += len(piece)
            else:
                response = _read_response(sock)
        except (BrokenPipeError, ConnectionResetError):
            pass
        if response is None:
            response = _read_response(sock)
    status, _, body = response
    _assert_too_large(status, body)
    # Whether the 413 overtakes the last chunks depends on the machine's load (loopback takes
    # 5 MB in milliseconds); the refusal itself is what the edge guarantees.
    _assert_responsive(caller)


def test_a_body_at_the_limit_without_a_length_still_works(caller):
    """Counting is exact: a chunked body under the limit reaches the view."""

    def chunks():
        yield json.dumps(
            {"model": MODEL, "messages": [{"role": "user", "content": "a" * 1000}], "max_tokens": 2}
        ).encode()

    resp = httpx.post(
        f"{caller.base_url}/v1/chat/completions",
        content=chunks(),
        headers={"Authorization": f"Bearer {caller.key}", "Content-Type": "application/json"},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text


async def _ready(caller):
    ws = await websockets.connect(
        caller.base_url.replace("http", "ws") + "/v1/ws",
        additional_headers={"Authorization": f"Bearer {caller.key}"},
        max_size=None,
    )
    assert json.loads(await ws.recv()) == {"type": "ready"}
    return ws


async def test_a_5_mb_websocket_message_closes_with_1009(caller):
    ws = await _ready(caller)
    huge = json.dumps({"type": "request", "id": "big", "body": {"pad": "x" * (5 * LIMIT)}})
    await ws.send(huge)
    msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert msg["type"] == "error" and msg["id"] is None
    assert msg["error"]["code"] == "message_too_large"
    assert set(msg["error"]) == {"message", "type", "param", "code"}
    try:
        await asyncio.wait_for(ws.recv(), 5)
        raise AssertionError("the socket should be closed")
    except websockets.ConnectionClosed as closed:
        assert closed.rcvd.code == 1009
    # Just under the limit in characters but over it in UTF-8 bytes counts as over.
    ws = await _ready(caller)
    await ws.send(
        json.dumps({"type": "cancel", "id": "x", "pad": "é" * (LIMIT // 2)}, ensure_ascii=False)
    )
    msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert msg["error"]["code"] == "message_too_large"
    await asyncio.to_thread(_assert_responsive, caller)


async def _expect_error_then_work(ws, frame, code: str) -> None:
    await ws.send(frame)
    msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert msg["type"] == "error" and msg["id"] is None, msg
    assert msg["error"]["code"] == code
    await ws.send(
        json.dumps(
            {
                "type": "request",
                "id": "after",
                "body": {
                    "model": MODEL,
                    "max_tokens": 3,
                    "messages": [{"role": "user", "content": "ok"}],
                },
            }  # fmt: skip
        )
    )
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if msg["type"] != "chunk":
            break
    assert msg == {"type": "done", "id": "after"}


async def test_deeply_nested_binary_and_non_json_messages_get_error_events(caller):
    ws = await _ready(caller)
    async with ws:
        # Deep enough for Python's JSON parser to run out of stack (RecursionError).
        await _expect_error_then_work(ws, "[" * 200_000 + "]" * 200_000, "invalid_json")
        nested = (
            '{"type": "request", "id": "n", "body": ' + '{"a": ' * 100_000 + "1" + "}" * 100_001
        )
        await _expect_error_then_work(ws, nested, "invalid_json")
        await _expect_error_then_work(ws, b'{"type": "request"}', "invalid_message")
        await _expect_error_then_work(ws, "not json at all", "invalid_json")
