"""Stand-ins for Anthropic's Messages API and Azure OpenAI on loopback, for gateway tests.

Both answer at once and deterministically, speaking the providers' documented wire formats
and refusing what the real services refuse (a missing key or version header, a missing
``max_tokens``, a ``system`` role inside ``messages``, a missing ``api-version``), so a
translation mistake in the gateway fails a test.

Anthropic (``POST /v1/messages``, ``x-api-key`` and ``anthropic-version: 2023-06-01``): the
reply echoes the last user text (``"echo: …"``, one word a token, cut at ``max_tokens`` with
``stop_reason: max_tokens``, ``stop_sequence`` when a stop sequence comes up). With tools and
a last user text that mentions ``weather`` (or ``tool_choice`` any/tool), it calls the first
tool with ``{"city": "Paris"}``; after a ``tool_result`` it answers ``"tool said: …"``. Usage
reports 2 ``cache_read_input_tokens``. Path prefixes: ``/unauth/v1`` answers 401,
``/overloaded/v1`` answers 529 ``overloaded_error``, ``/streamerror/v1`` streams two tokens and
then an ``error`` event, ``/garbage/v1`` answers a malformed message (streamed: one token, then
a malformed event).

Azure (``POST /openai/deployments/{name}/chat/completions?api-version=…`` with ``api-key``):
OpenAI's format, the model named after the deployment, streaming too.

``GET /last`` returns the last request received (path, query, headers, body) for tests.

Run: ``python -m serving.anthropic_upstream --port 8301`` (uvicorn, no Django).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

API_VERSION = "2023-06-01"
CACHE_READ = 2
_last: dict = {}


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"type": "error", "error": {"type": kind, "message": message}}, status_code=status
    )


def _texts(content) -> str:
    if isinstance(content, str):
        return content
    return " ".join(b.get("text", "") for b in content if b.get("type") == "text")


def _check(body: dict, request: Request) -> JSONResponse | None:
    if not request.headers.get("x-api-key"):
        return _error(401, "authentication_error", "x-api-key header is required")
    if request.headers.get("anthropic-version") != API_VERSION:
        return _error(400, "invalid_request_error", "anthropic-version header is required")
    if not isinstance(body.get("max_tokens"), int):
        return _error(400, "invalid_request_error", "max_tokens: Field required")
    for m in body.get("messages", []):
        if m.get("role") not in ("user", "assistant"):
            return _error(400, "invalid_request_error", f"Unexpected role {m.get('role')!r}")
        for b in m["content"] if isinstance(m.get("content"), list) else []:
            if b.get("type") not in ("text", "image", "tool_use", "tool_result"):
                return _error(400, "invalid_request_error", f"bad block {b.get('type')!r}")
    roles = [m["role"] for m in body.get("messages", [])]
    if any(a == b for a, b in zip(roles, roles[1:], strict=False)):
        return _error(400, "invalid_request_error", "roles must alternate")
    return None


def _answer(body: dict) -> tuple[list[dict], str, int, str | None]:
    """Content blocks, stop reason, input tokens, the stop sequence met."""
    msgs = body.get("messages", [])
    last = msgs[-1] if msgs else {"content": ""}
    content = last.get("content")
    input_tokens = sum(len(_texts(m.get("content", "")).split()) + 3 for m in msgs)
    input_tokens += len(str(body.get("system", "")).split())
    results = [
        b for b in (content if isinstance(content, list) else []) if b.get("type") == "tool_result"
    ]
    if results:
        words = ["tool", "said:", *_texts(results[0].get("content", "")).split()]
    else:
        text = _texts(content)
        choice = (body.get("tool_choice") or {}).get("type")
        if body.get("tools") and ("weather" in text or choice in ("any", "tool")):
            name = body["tool_choice"]["name"] if choice == "tool" else body["tools"][0]["name"]
            block = {
                "type": "tool_use",
                "id": f"toolu_{uuid.uuid4().hex[:20]}",
                "name": name,
                "input": {"city": "Paris"},
            }
            return (
                [{"type": "text", "text": "Let me check."}, block],
                "tool_use",
                input_tokens,
                None,
            )
        words = ["echo:", *text.split()]
    stop, met = "end_turn", None
    for i, w in enumerate(words):
        if w in (body.get("stop_sequences") or []):
            words, stop, met = words[:i], "stop_sequence", w
            break
    if len(words) > body["max_tokens"]:
        words, stop = words[: body["max_tokens"]], "max_tokens"
    return [{"type": "text", "text": " ".join(words)}], stop, input_tokens, met


def _tokens(blocks: list[dict]) -> int:
    n = 0
    for b in blocks:
        n += len(b["text"].split()) if b["type"] == "text" else 5
    return n


def _sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


async def messages(request: Request) -> Response:
    body = await request.json()
    _last.clear()
    _last.update(
        path=request.url.path, query=dict(request.query_params), headers=dict(request.headers)
    )
    _last["body"] = body
    mode = request.url.path.strip("/").split("/")[0]
    if mode == "unauth":
        return _error(401, "authentication_error", "invalid x-api-key sk-ant-op***")
    if mode == "overloaded":
        return _error(529, "overloaded_error", "Overloaded")
    if mode == "garbage":
        return _garbage(body)
    refused = _check(body, request)
    if refused is not None:
        return refused
    blocks, stop, input_tokens, met = _answer(body)
    usage = {
        "input_tokens": input_tokens,
        "output_tokens": _tokens(blocks),
        "cache_read_input_tokens": CACHE_READ,
        "cache_creation_input_tokens": 0,
    }
    msg_id = f"msg_{uuid.uuid4().hex[:24]}"
    if not body.get("stream"):
        return JSONResponse(
            {
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": blocks,
                "stop_reason": stop,
                "stop_sequence": met,
                "usage": usage,
            }
        )

    async def events():
        start = {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**usage, "output_tokens": 1},
        }
        yield _sse("message_start", {"type": "message_start", "message": start})
        yield _sse("ping", {"type": "ping"})
        for i, block in enumerate(blocks):
            if block["type"] == "text":
                empty = {"type": "text", "text": ""}
                yield _sse(
                    "content_block_start",
                    {"type": "content_block_start", "index": i, "content_block": empty},
                )
                for n, word in enumerate(block["text"].split(" ")):
                    if mode == "streamerror" and n == 2:
                        err = {"type": "overloaded_error", "message": "Overloaded"}
                        yield _sse("error", {"type": "error", "error": err})
                        return
                    delta = {"type": "text_delta", "text": word if n == 0 else " " + word}
                    yield _sse(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": i, "delta": delta},
                    )
                    await asyncio.sleep(0)
            else:
                start_block = {**block, "input": {}}
                yield _sse(
                    "content_block_start",
                    {"type": "content_block_start", "index": i, "content_block": start_block},
                )
                raw = json.dumps(block["input"])
                for piece in (raw[: len(raw) // 2], raw[len(raw) // 2 :]):
                    delta = {"type": "input_json_delta", "partial_json": piece}
                    yield _sse(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": i, "delta": delta},
                    )
            yield _sse("content_block_stop", {"type": "content_block_stop", "index": i})
        yield _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": met},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
        yield _sse("message_stop", {"type": "message_stop"})

    return StreamingResponse(events(), media_type="text/event-stream")


def _garbage(body: dict) -> Response:
    """A 200 whose message (or whose stream, after one token) is malformed."""
    if not body.get("stream"):
        return JSONResponse({"type": "message", "content": "x", "stop_reason": [1], "usage": 5})

    async def events():
        start = {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "usage": {}}
        yield _sse("message_start", {"type": "message_start", "message": start})
        delta = {"type": "text_delta", "text": "one"}
        yield _sse(
            "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
        )
        bad = {"type": "content_block_start", "index": [1], "content_block": {"type": "tool_use"}}
        yield _sse("content_block_start", bad)

    return StreamingResponse(events(), media_type="text/event-stream")


async def azure_chat(request: Request) -> Response:
    body = await request.json()
    _last.clear()
    _last.update(
        path=request.url.path, query=dict(request.query_params), headers=dict(request.headers)
    )
    _last["body"] = body
    if not request.headers.get("api-key"):
        return JSONResponse(
            {"error": {"code": "401", "message": "Access denied due to invalid subscription key"}},
            status_code=401,
        )
    if not request.query_params.get("api-version"):
        return JSONResponse(
            {"error": {"code": "404", "message": "Resource not found"}}, status_code=404
        )
    deployment = request.path_params["deployment"]
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    words = ["echo:", *_texts(users[-1]["content"] if users else "").split()]
    cap = body.get("max_tokens") or body.get("max_completion_tokens") or len(words)
    finish = "length" if len(words) > cap else "stop"
    words = words[:cap]
    prompt = sum(len(_texts(m.get("content", "")).split()) + 4 for m in body.get("messages", []))
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": len(words),
        "total_tokens": prompt + len(words),
    }
    cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
    if not body.get("stream"):
        message = {"role": "assistant", "content": " ".join(words)}
        return JSONResponse(
            {
                "id": cid,
                "object": "chat.completion",
                "created": 0,
                "model": deployment,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": usage,
            }
        )

    def chunk(delta: dict, finish_reason=None, **extra) -> bytes:
        data = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": 0,
            "model": deployment,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            **extra,
        }
        return f"data: {json.dumps(data)}\n\n".encode()

    async def events():
        yield chunk({"role": "assistant", "content": ""})
        for n, w in enumerate(words):
            yield chunk({"content": w if n == 0 else " " + w})
        yield chunk({}, finish)
        if (body.get("stream_options") or {}).get("include_usage"):
            data = {"id": cid, "object": "chat.completion.chunk", "choices": [], "usage": usage}
            yield f"data: {json.dumps(data)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def last(request: Request) -> Response:
    return JSONResponse(_last)


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


app = Starlette(
    routes=[
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/{mode:str}/v1/messages", messages, methods=["POST"]),
        Route(
            "/openai/deployments/{deployment:str}/chat/completions", azure_chat, methods=["POST"]
        ),
        Route("/last", last),
        Route("/health", health),
    ]
)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8301)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
