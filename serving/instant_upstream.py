"""An instant OpenAI-compatible upstream on loopback, for gateway tests and benchmarks.

It answers at once and deterministically, so what is measured through it is the gateway. The
reply echoes the last user message (``"echo: …"``), one word a token, cut at ``max_tokens``.
Path prefixes change its behaviour, for failure tests: ``/v1`` normal, ``/fail/v1`` answers
500, ``/slow/v1`` waits ``SLOW_SECONDS`` before answering, ``/drop/v1`` streams three tokens
and then breaks the connection, ``/paced/<ms>/v1`` waits ``ms`` milliseconds before each token
(a long stream from a slow model), ``/delay/<ms>/v1`` waits ``ms`` milliseconds before
answering, ``/nousage/v1`` never reports usage, ``/unauth/v1`` refuses the operator's key
(401, with a provider message that must not reach tenants), ``/loading/v1`` answers 503
``model_loading`` with ``Retry-After`` like a model worker still loading, ``/echo/v1``
adds the body it received as ``x_received`` (non-streaming), and ``/badreq/v1`` blames the
request: a 400, or in a stream two tokens and then an ``invalid_request_error`` event.

Run: ``python -m serving.instant_upstream --port 8300`` (uvicorn, no Django).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

SLOW_SECONDS = 30.0
EMBED_DIM = 384


def _words(body: dict, endpoint: str) -> tuple[list[str], int]:
    if endpoint == "chat":
        users = [m for m in body.get("messages", []) if m.get("role") == "user"]
        content = users[-1].get("content", "") if users else ""
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content)
        prompt_tokens = sum(
            len(str(m.get("content", "")).split()) + 4 for m in body.get("messages", [])
        )
    else:
        content = body.get("prompt", "")
        content = content if isinstance(content, str) else " ".join(map(str, content))
        prompt_tokens = len(content.split())
    words = ("echo: " + content).split()
    return words, max(1, prompt_tokens)


def _mode(request: Request) -> str:
    first = request.url.path.strip("/").split("/")[0]
    modes = ("fail", "slow", "drop", "delay", "nousage", "unauth", "loading", "echo", "badreq")
    return first if first in modes else "ok"


async def _completion(request: Request, endpoint: str) -> Response:
    mode = _mode(request)
    if mode == "fail":
        return JSONResponse(
            {"error": {"message": "instant upstream: failing on purpose", "type": "server_error"}},
            status_code=500,
        )
    if mode == "slow":
        await asyncio.sleep(SLOW_SECONDS)
    if mode == "delay":
        await asyncio.sleep(request.path_params["ms"] / 1000)
    if mode == "unauth":
        return JSONResponse(
            {"error": {"message": "Incorrect API key provided: sk-op***", "type": "auth"}}, 401
        )
    if mode == "badreq" and not (await request.json()).get("stream"):
        return JSONResponse(
            {"error": {"message": "bad", "type": "invalid_request_error", "param": "x"}}, 400
        )
    if mode == "loading":
        return JSONResponse(
            {"error": {"message": "loading", "type": "api_error", "code": "model_loading"}},
            status_code=503,
            headers={"Retry-After": "7"},
        )
    pace = request.path_params.get("ms", 0) / 1000
    body = await request.json()
    words, prompt_tokens = _words(body, endpoint)
    limit = body.get("max_tokens") or body.get("max_completion_tokens") or 16
    finish = "length" if len(words) > limit else "stop"
    words = words[:limit]
    rid = f"cmpl-{uuid.uuid4().hex[:12]}"
    created = int(time.time())
    model = body.get("model", "instant")
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": len(words),
        "total_tokens": prompt_tokens + len(words),
    }
    if not body.get("stream"):
        text = " ".join(words)
        if endpoint == "chat":
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish,
            }
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
            obj = "text_completion"
        answer = {"id": rid, "object": obj, "created": created, "model": model,
                  "choices": [choice], "usage": usage}  # fmt: skip
        if mode == "echo":
            answer["x_received"] = body
        if mode == "nousage":
            del answer["usage"]
        return JSONResponse(answer)

    obj = "chat.completion.chunk" if endpoint == "chat" else "text_completion"

    def chunk(text: str | None, finish_reason: str | None) -> bytes:
        if endpoint == "chat":
            delta = {} if text is None else {"content": text}
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": finish_reason}
        data = {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice]}
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    async def events():
        for i, w in enumerate(words):
            if pace:
                await asyncio.sleep(pace)
            if mode == "drop" and i == 3:
                raise ConnectionResetError("instant upstream: dropping the stream on purpose")
            if mode == "badreq" and i == 2:
                err = {"message": "bad", "type": "invalid_request_error", "param": "x"}
                yield b"data: " + json.dumps({"error": err}).encode() + b"\n\n"
                return
            yield chunk(w if i == 0 else " " + w, None)
        yield chunk(None, finish)
        if mode != "nousage" and (body.get("stream_options") or {}).get("include_usage"):
            data = {"id": rid, "object": obj, "created": created, "model": model,
                    "choices": [], "usage": usage}  # fmt: skip
            yield b"data: " + json.dumps(data).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def chat(request: Request) -> Response:
    return await _completion(request, "chat")


async def completions(request: Request) -> Response:
    return await _completion(request, "text")


async def embeddings(request: Request) -> Response:
    if _mode(request) == "fail":
        return JSONResponse({"error": {"message": "failing", "type": "server_error"}}, 500)
    body = await request.json()
    inputs = body.get("input")
    inputs = [inputs] if isinstance(inputs, str) else list(inputs)
    data = []
    for i, text in enumerate(inputs):
        seed = sum(map(ord, str(text))) or 1
        vec = [((seed * 7 + j * 31) % 97 + 1) / 97.0 for j in range(EMBED_DIM)]
        norm = sum(v * v for v in vec) ** 0.5
        data.append({"object": "embedding", "index": i, "embedding": [v / norm for v in vec]})
    tokens = sum(len(str(t).split()) for t in inputs)
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "model": body.get("model"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }  # fmt: skip
    )


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def loading_health(request: Request) -> Response:
    return JSONResponse({"status": "starting"}, status_code=503, headers={"Retry-After": "7"})


def _routes() -> list[Route]:
    routes = [Route("/health", health), Route("/loading/health", loading_health)]
    prefixes = ("", "/fail", "/slow", "/drop", "/paced/{ms:int}", "/delay/{ms:int}")
    for prefix in (*prefixes, "/nousage", "/unauth", "/loading", "/echo", "/badreq"):
        routes += [
            Route(f"{prefix}/v1/chat/completions", chat, methods=["POST"]),
            Route(f"{prefix}/v1/completions", completions, methods=["POST"]),
            Route(f"{prefix}/v1/embeddings", embeddings, methods=["POST"]),
        ]
    return routes


app = Starlette(routes=_routes())


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8300)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
    )


if __name__ == "__main__":
    main()
