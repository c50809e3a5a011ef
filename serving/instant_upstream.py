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
``/tools/v1`` calls tools like an OpenAI model: a chat request with ``tools`` (and a
``tool_choice`` other than ``none``) is answered with a ``tool_calls`` message (the named
function, else the first tool, and the second too when there are two and
``parallel_tool_calls`` is not false; arguments ``{"query": <last user message>}``) and
``finish_reason: tool_calls``, streamed as OpenAI does (id and name first, then the
arguments in pieces); once the last message is a tool result, it answers in text. Asked
for JSON (``response_format``), it answers ``{"answer": <the echo>, "response_format": <what
it received>}``. ``/tools-nousage/v1`` does the same and never reports usage.

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
    modes = (
        "fail", "slow", "drop", "delay", "nousage", "unauth", "loading", "echo", "badreq", "tools",
        "tools-nousage",
    )  # fmt: skip
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
    if mode.startswith("tools") and endpoint == "chat":
        calls = _tool_calls(body)
        if calls:
            return _tool_answer(body, calls, usage=mode == "tools")
    words, prompt_tokens = _words(body, endpoint)
    fmt = body.get("response_format") or {}
    if mode.startswith("tools") and fmt.get("type") in ("json_object", "json_schema"):
        words = json.dumps({"answer": " ".join(words), "response_format": fmt}).split(" ")
    if mode == "tools-nousage":
        mode = "nousage"
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


def _tool_calls(body: dict) -> list[dict]:
    """The calls a tool-calling model makes for ``body`` (none once a tool has answered)."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    choice = body.get("tool_choice", "auto")
    messages = body.get("messages") or []
    if not tools or choice == "none" or (messages and messages[-1].get("role") == "tool"):
        return []
    names = [(t.get("function") or {}).get("name") for t in tools]
    if isinstance(choice, dict):
        names = [(choice.get("function") or {}).get("name")]
    elif body.get("parallel_tool_calls") is False:
        names = names[:1]
    else:
        names = names[:2]
    users = [m for m in messages if m.get("role") == "user"]
    query = users[-1].get("content", "") if users else ""
    if isinstance(query, list):
        query = " ".join(p.get("text", "") for p in query if isinstance(p, dict))
    arguments = json.dumps({"query": query})
    return [
        {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
         "function": {"name": name, "arguments": arguments}}
        for name in names
    ]  # fmt: skip


def _tool_answer(body: dict, calls: list[dict], *, usage: bool = True) -> Response:
    rid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
    created = int(time.time())
    model = body.get("model", "instant")
    prompt_tokens = max(1, len(json.dumps(body.get("messages", [])).split()))
    completion_tokens = sum(len(c["function"]["arguments"].split()) + 3 for c in calls)
    counts = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
              "total_tokens": prompt_tokens + completion_tokens}  # fmt: skip
    head = {"id": rid, "created": created, "model": model}
    if not body.get("stream"):
        message = {"role": "assistant", "content": None, "tool_calls": calls}
        choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
        answer = {**head, "object": "chat.completion", "choices": [choice]}
        return JSONResponse({**answer, "usage": counts} if usage else answer)

    def event(delta: dict, finish: str | None = None, **extra) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        data = {**head, "object": "chat.completion.chunk", "choices": [choice], **extra}
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    async def events():
        yield event({"role": "assistant", "content": None})
        for i, c in enumerate(calls):
            fn = c["function"]
            first = {"index": i, "id": c["id"], "type": "function",
                     "function": {"name": fn["name"], "arguments": ""}}  # fmt: skip
            yield event({"tool_calls": [first]})
            args = fn["arguments"]
            for k in range(0, len(args), 8):  # in pieces, as a model generates them
                piece = {"index": i, "function": {"arguments": args[k : k + 8]}}
                yield event({"tool_calls": [piece]})
        yield event({}, "tool_calls")
        if usage and (body.get("stream_options") or {}).get("include_usage"):
            data = {**head, "object": "chat.completion.chunk", "choices": [], "usage": counts}
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
    modes = ("/nousage", "/unauth", "/loading", "/echo", "/badreq", "/tools", "/tools-nousage")
    for prefix in (*prefixes, *modes):
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
