"""The WebSocket streaming API over a real socket."""

import asyncio
import json

import websockets

from tests.serving.gateway.conftest import MODEL


async def _recv_all(ws, until_ids: set[str], timeout: float = 20) -> list[dict]:
    msgs, open_ids = [], set(until_ids)
    while open_ids:
        msg = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        msgs.append(msg)
        if msg["type"] in ("done", "cancelled", "error") and msg.get("id") in open_ids:
            open_ids.discard(msg["id"])
    return msgs


def _body(text: str, max_tokens: int = 50) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens}  # fmt: skip


async def test_two_interleaved_requests_on_one_socket(caller):
    url = caller.base_url.replace("http", "ws") + "/v1/ws"
    async with websockets.connect(
        url, additional_headers={"Authorization": f"Bearer {caller.key}"}
    ) as ws:
        assert json.loads(await ws.recv()) == {"type": "ready"}
        await ws.send(json.dumps({"type": "request", "id": "a", "body": _body("alpha beta gamma")}))
        await ws.send(json.dumps({"type": "request", "id": "b", "body": _body("one two")}))
        msgs = await _recv_all(ws, {"a", "b"})
    text = {"a": "", "b": ""}
    for m in msgs:
        if m["type"] == "chunk":
            for c in m["data"]["choices"]:
                text[m["id"]] += (c.get("delta") or {}).get("content") or ""
    assert text == {"a": "echo: alpha beta gamma", "b": "echo: one two"}
    assert {m["id"] for m in msgs if m["type"] == "done"} == {"a", "b"}


async def test_cancel_one_request_keeps_the_others(caller, upstream_url):
    from asgiref.sync import sync_to_async

    from serving.routing.deployments import deployment_set

    url = caller.base_url.replace("http", "ws") + "/v1/ws"
    set_dep = sync_to_async(deployment_set)
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "auth", "api_key": caller.key}))
        assert json.loads(await ws.recv())["type"] == "ready"
        # The slow upstream holds "long" open until it is cancelled.
        await set_dep(name="instant", model=MODEL, base_url=f"{upstream_url}/slow/v1")
        await ws.send(json.dumps({"type": "request", "id": "long", "body": _body("x")}))
        await asyncio.sleep(0.5)
        await set_dep(name="instant", model=MODEL, base_url=f"{upstream_url}/v1")
        await ws.send(json.dumps({"type": "request", "id": "short", "body": _body("hi")}))
        short = await _recv_all(ws, {"short"})
        assert short[-1] == {"type": "done", "id": "short"}
        await ws.send(json.dumps({"type": "cancel", "id": "long"}))
        msgs = await _recv_all(ws, {"long"}, timeout=5)
    assert msgs[-1] == {"type": "cancelled", "id": "long"}


async def test_errors_arrive_as_messages_in_openai_shape(caller):
    url = caller.base_url.replace("http", "ws") + "/v1/ws"
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "request", "id": "x", "body": _body("hi")}))
        msg = json.loads(await ws.recv())
        assert msg["type"] == "error" and msg["error"]["code"] == "missing_api_key"
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "auth", "api_key": caller.key}))
        await ws.recv()
        await ws.send(json.dumps({"type": "request", "id": "bad",
                                  "body": {"model": MODEL, "messages": [], "max_tokens": 5}}))  # fmt: skip
        msg = json.loads(await ws.recv())
        assert msg == {"type": "error", "id": "bad", "error": msg["error"]}
        assert msg["error"]["param"] == "messages"
        await ws.send(
            json.dumps({"type": "request", "id": "nf", "body": {**_body("x"), "model": "nope"}})
        )
        msg = json.loads(await ws.recv())
        assert msg["error"]["code"] == "model_not_found"


async def test_bad_key_closes_the_socket(caller):
    url = caller.base_url.replace("http", "ws") + "/v1/ws"
    async with websockets.connect(url, additional_headers={"Authorization": "Bearer sy-bad"}) as ws:
        msg = json.loads(await ws.recv())
        assert msg["error"]["code"] == "invalid_api_key"
        try:
            await asyncio.wait_for(ws.recv(), 5)
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd.code == 4401
