"""Gateway → real model worker (the SmolLM2 engine and MiniLM), over real HTTP and sockets."""

import asyncio
import json
import time

import websockets

from serving.routing.deployments import deployment_set
from tests.serving.gateway.conftest import MODEL


def _point_at_worker(worker) -> None:
    deployment_set(name="instant", model=MODEL, base_url=f"{worker.url}/v1", kind="local_worker",
                   api_key=worker.token)  # fmt: skip
    deployment_set(name="instant-embed", model="all-minilm-l6-v2", base_url=f"{worker.url}/v1",
                   kind="local_worker", api_key=worker.token)  # fmt: skip


def test_chat_stream_and_embeddings_through_the_gateway(make_caller, worker):
    caller = make_caller()
    _point_at_worker(worker)
    client = caller.client()
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0, max_tokens=20,
    )  # fmt: skip
    assert "Paris" in r.choices[0].message.content
    text = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            temperature=0,
            max_tokens=20,
            stream=True,
        )  # fmt: skip
        if c.choices
    )
    assert text == r.choices[0].message.content
    e = client.embeddings.create(model="all-minilm-l6-v2", input="hello")
    assert len(e.data[0].embedding) == 384


def test_websocket_cancel_frees_the_workers_sequence(make_caller, worker):
    caller = make_caller()
    _point_at_worker(worker)
    engine = worker.app.state.engine

    async def run():
        url = caller.base_url.replace("http", "ws") + "/v1/ws"
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"type": "auth", "api_key": caller.key}))
            await ws.recv()
            body = {"model": MODEL, "max_tokens": 400, "temperature": 1.0, "seed": 3,
                    "messages": [{"role": "user", "content": "Tell me a long story."}]}  # fmt: skip
            await ws.send(json.dumps({"type": "request", "id": "story", "body": body}))
            while json.loads(await ws.recv())["type"] != "chunk":
                pass
            assert engine.stats().running == 1
            await ws.send(json.dumps({"type": "cancel", "id": "story"}))
            while True:
                msg = json.loads(await ws.recv())
                if msg["type"] in ("cancelled", "done"):
                    return msg["type"]

    assert asyncio.run(run()) == "cancelled"
    deadline = time.monotonic() + 5
    while engine.stats().running and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = engine.stats()
    assert stats.running == 0 and stats.kv_blocks_used == 0
