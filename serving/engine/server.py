"""The model worker's HTTP server: an OpenAI-compatible API over one loaded engine.

    python -m serving.engine.server --model smollm2-135m-instruct --port 8100
    (or: manage.py serve_model ...)

Endpoints: /v1/chat/completions, /v1/completions (JSON or SSE), /v1/embeddings, /v1/models,
/v1/abort, /health and /readyz (readiness), /healthz (liveness), /metrics. Tenant, fairness
weight and priority come from the headers ``x-switchyard-tenant``, ``x-switchyard-weight`` and
``x-switchyard-priority`` (the gateway sets them); the prefix cache is salted by
``x-switchyard-prefix-salt``, else by the tenant. A request is known by its ``x-request-id``
to ``POST /v1/abort``. A client that disconnects aborts its request (queued, streaming or
not): the engine frees its blocks.

The port is bound at once and the model loads behind it: until it is loaded and has run a
warm-up step, readiness answers 503 ``{"status": "starting"}`` and generation 503 with
``Retry-After`` (``code: "model_loading"``). With an auth token (``--auth-token`` or
``SWITCHYARD_WORKER_TOKEN``) every endpoint but health, readiness, liveness and metrics
wants ``Authorization: Bearer <token>``. See docs/engine.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import torch
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from serving.engine import protocol
from serving.engine.embeddings import DIMENSIONS, EMBEDDING_MODEL, DynamicBatcher, MiniLMEmbedder
from serving.engine.engine import AsyncEngine
from serving.engine.errors import EngineOverloaded, RequestFailed
from serving.engine.protocol import ProtocolError
from serving.engine.quant import WEIGHT_FORMATS
from serving.engine.tools import CallStream
from serving.engine.types import CompletionDelta, GenerationRequest, RequestUsage

log = logging.getLogger("serving.engine.server")

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
TOKEN_ENV = "SWITCHYARD_WORKER_TOKEN"
# Open without the token: probes and scrapes (they reveal load, never content).
OPEN_PATHS = frozenset({"/health", "/healthz", "/livez", "/readyz", "/metrics"})
RETRY_AFTER_LOADING = 5  # seconds, in Retry-After while the model loads
MAX_BODY_BYTES = 8 << 20
MAX_ID_CHARS = 256


class WorkerMetrics:
    def __init__(self, engine: Callable[[], AsyncEngine | None]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.engine = engine
        r = self.registry
        self.ttft = Histogram(
            "switchyard_time_to_first_token_seconds",
            "Time to first token.",
            buckets=_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "switchyard_inter_token_latency_seconds",
            "Time between tokens.",
            buckets=_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "switchyard_e2e_request_latency_seconds",
            "Request latency.",
            buckets=_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "switchyard_requests", "Finished requests by reason.", ["finish_reason"], registry=r
        )
        r.register(self)

    def collect(self):
        engine = self.engine()
        if engine is None:  # still loading
            return
        s = engine.stats()
        for name, doc, value in (
            ("switchyard_num_requests_running", "Sequences running.", s.running),
            ("switchyard_num_requests_waiting", "Sequences waiting.", s.waiting),
            ("switchyard_kv_cache_usage_perc", "KV blocks in use (0-1).", s.kv_usage),
            ("switchyard_prefix_cache_hit_rate", "Prompt blocks found cached.", s.prefix_hit_rate),
            ("switchyard_kv_cache_blocks_total", "KV blocks in the pool.", s.kv_blocks_total),
            ("switchyard_prompt_tokens_total", "Prompt tokens computed.", s.prompt_tokens_total),
            ("switchyard_generation_tokens_total", "Tokens generated.", s.generation_tokens_total),
            ("switchyard_num_preemptions_total", "Sequences preempted.", s.preemptions_total),
            ("switchyard_failed_requests_total", "Requests ended by an error.", s.failed_total),
        ):
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], float(value))
            yield g

    def describe(self):
        return []


def _error(exc: ProtocolError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def _failure_body(exc: RequestFailed) -> dict[str, Any]:
    """The OpenAI error of a request that ended early, with the work it got (``usage``)."""
    kind = "invalid_request_error" if exc.status < 500 else "server_error"
    u = exc.usage
    return {
        "error": {"message": exc.message, "type": kind, "param": None, "code": exc.code},
        "usage": protocol.usage(u.prompt_tokens, u.completion_tokens, u.cached_tokens),
    }


def _tenant(request: Request) -> tuple[str, float, int, str]:
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


def token_matches(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries ``Bearer <token>`` (constant time)."""
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8", "surrogateescape"), token.encode()
    )


class TokenAuth:
    """ASGI middleware: with a token, every HTTP path outside ``OPEN_PATHS`` needs it."""

    def __init__(self, app, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            header = None
            for name, value in scope["headers"]:
                if name == b"authorization":
                    header = value.decode("latin-1")
                    break
            if not token_matches(header, self.token):
                message = (
                    "This model worker wants its token: send 'Authorization: Bearer <token>'."
                    if header is None
                    else "The worker token is not valid."
                )
                resp = _error(
                    ProtocolError(message, code="invalid_api_key", status=401),
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await resp(scope, receive, send)
                return
        await self.app(scope, receive, send)


class ClientGone(Exception):
    """The HTTP client disconnected while its request waited or ran."""


async def _until_disconnect(request: Request, aw: Awaitable[Any]) -> Any:
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


def build_app(
    engine: AsyncEngine | None = None,
    embedder: MiniLMEmbedder | None = None,
    *,
    loader: Callable[[], tuple[AsyncEngine, MiniLMEmbedder | None]] | None = None,
    auth_token: str | None = None,
    warm_up: bool = True,
    on_load_failure: Callable[[BaseException], None] | None = None,
    max_batch: int = 32,
    max_wait_ms: float = 2,
):
    """The ASGI app serving ``engine`` (and embeddings when ``embedder`` is given).

    With ``loader`` instead, the app answers at once and loads in the background: readiness
    is 503 ``starting`` until the engine is loaded and warmed up (one short request), then
    200 ``ready``. ``auth_token`` guards every path outside ``OPEN_PATHS``.
    """

    def current() -> AsyncEngine | None:
        return app.state.engine if app.state.status == "ready" else None

    metrics = WorkerMetrics(current)

    async def bring_up(eng: AsyncEngine | None, emb: MiniLMEmbedder | None) -> None:
        try:
            if loader is not None:
                eng, emb = await asyncio.to_thread(loader)
            app.state.engine = eng
            batcher = (
                DynamicBatcher(emb, max_batch_size=max_batch, max_wait_ms=max_wait_ms)
                if emb
                else None
            )
            app.state.batcher = batcher
            if warm_up:
                started = time.perf_counter()
                await asyncio.to_thread(eng.engine.warm_up)
                log.info("warm-up step ran in %.2f s", time.perf_counter() - started)
            await eng.start()
            if batcher:
                await batcher.start()
            app.state.status = "ready"
            log.info("ready: serving %s", eng.model_name)
        except Exception as exc:  # noqa: BLE001 - reported by readiness and the log
            log.exception("the model worker could not start")
            app.state.status, app.state.error = "failed", f"{type(exc).__name__}: {exc}"
            if on_load_failure is not None:
                on_load_failure(exc)

    @asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(bring_up(engine, embedder))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            if app.state.batcher:
                await app.state.batcher.stop()
            if app.state.engine is not None:
                await app.state.engine.stop()

    def not_ready() -> JSONResponse:
        if app.state.status == "failed":
            return _error(
                ProtocolError(
                    f"The model worker failed to start: {app.state.error}",
                    code="model_load_failed",
                    status=503,
                )
            )
        return _error(
            ProtocolError(
                "The model is loading; retry in a few seconds.", code="model_loading", status=503
            ),
            headers={"Retry-After": str(RETRY_AFTER_LOADING)},
        )

    async def read_json(request: Request) -> Any:
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

    async def completions(request: Request, kind: str) -> Response:
        eng = current()
        if eng is None:
            return not_ready()
        try:
            body = await read_json(request)
            parsed = await asyncio.to_thread(
                protocol.parse, body, kind, eng.tokenizer, eng.model_name, eng.max_model_len
            )
            if parsed.model != eng.model_name:
                raise ProtocolError(
                    f"The model `{parsed.model}` does not exist on this worker "
                    f"(it serves `{eng.model_name}`).",
                    param="model",
                    code="model_not_found",
                    status=404,
                )
            tenant, weight, priority, salt = _tenant(request)
        except ProtocolError as exc:
            return _error(exc)
        rid = protocol.new_id(kind)
        greq = GenerationRequest(
            request_id=rid,
            prompt_token_ids=parsed.prompt_ids,
            params=parsed.params,
            tenant=tenant,
            weight=weight,
            priority=priority,
            cache_salt=salt,
        )
        try:
            eng.validate(greq)
        except ValueError as exc:
            return _error(ProtocolError(str(exc)))
        started = time.perf_counter()
        created = protocol.now()
        key = (request.headers.get("x-request-id") or "")[:MAX_ID_CHARS] or None
        gen = eng.generate(greq, key=key)

        async def first_delta() -> CompletionDelta:
            return await gen.__anext__()

        try:
            first = await _until_disconnect(request, first_delta())
        except ClientGone:
            metrics.requests.labels("client_gone").inc()
            return Response(status_code=499)  # nobody reads it
        except EngineOverloaded as exc:
            return _error(
                ProtocolError(str(exc), code="overloaded", status=503), headers={"Retry-After": "1"}
            )
        except RequestFailed as exc:
            metrics.requests.labels("error").inc()
            return JSONResponse(_failure_body(exc), status_code=exc.status)
        except ValueError as exc:
            return _error(ProtocolError(str(exc)))
        metrics.ttft.observe(time.perf_counter() - started)

        async def deltas() -> AsyncIterator[CompletionDelta]:
            last = time.perf_counter()
            yield first
            async for d in gen:
                t = time.perf_counter()
                metrics.itl.observe(t - last)
                last = t
                yield d

        if parsed.stream:
            return StreamingResponse(
                _sse(kind, rid, created, eng.model_name, deltas(), gen, parsed, metrics, started),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:
            result = await _until_disconnect(
                request, _collect(kind, rid, created, eng.model_name, deltas(), parsed)
            )
        except ClientGone:
            metrics.requests.labels("client_gone").inc()
            return Response(status_code=499)
        except RequestFailed as exc:
            metrics.requests.labels("error").inc()
            return JSONResponse(_failure_body(exc), status_code=exc.status)
        finally:
            await gen.aclose()
        metrics.e2e.observe(time.perf_counter() - started)
        for c in result["choices"]:
            metrics.requests.labels(c["finish_reason"] or "unknown").inc()
        return JSONResponse(result)

    async def chat(request: Request) -> Response:
        return await completions(request, "chat")

    async def text(request: Request) -> Response:
        return await completions(request, "text")

    async def abort(request: Request) -> Response:
        """Abort the request sent with ``x-request-id: <request_id>`` (queued or running);
        the work it got. Unknown or finished: ``aborted: false`` (with its usage if recent)."""
        try:
            body = await read_json(request)
            rid = body.get("request_id") if isinstance(body, dict) else None
            if not isinstance(rid, str) or not 0 < len(rid) <= MAX_ID_CHARS:
                raise ProtocolError(
                    f"'request_id' must be a string of 1 to {MAX_ID_CHARS} characters.",
                    param="request_id",
                )
        except ProtocolError as exc:
            return _error(exc)
        eng = current()
        result = None if eng is None else await eng.abort_key(rid)
        u = result.usage if result else None
        return JSONResponse(
            {
                "request_id": rid,
                "aborted": bool(result and result.aborted),
                "usage": protocol.usage(
                    u.prompt_tokens if u else 0,
                    u.completion_tokens if u else 0,
                    u.cached_tokens if u else 0,
                ),
            }
        )

    async def embeddings(request: Request) -> Response:
        if current() is None:
            return not_ready()
        batcher = app.state.batcher
        if batcher is None:
            return _error(
                ProtocolError(
                    "This worker serves no embedding model.", status=404, code="model_not_found"
                )
            )
        try:
            body = await read_json(request)
            if not isinstance(body, dict) or body.get("model") != EMBEDDING_MODEL:
                raise ProtocolError(
                    f"Use model `{EMBEDDING_MODEL}` for embeddings.",
                    param="model",
                    code="model_not_found",
                    status=404,
                )
            inputs = body.get("input")
            if isinstance(inputs, str):
                inputs = [inputs]
            if not (
                isinstance(inputs, list)
                and inputs
                and len(inputs) <= 2048
                and all(isinstance(t, str) and t for t in inputs)
            ):
                raise ProtocolError(
                    "'input' must be a non-empty string or array of strings.", param="input"
                )
            fmt = body.get("encoding_format", "float")
            if fmt not in ("float", "base64"):
                raise ProtocolError(
                    "'encoding_format' must be float or base64.", param="encoding_format"
                )
        except ProtocolError as exc:
            return _error(exc)
        try:
            vectors = await batcher.embed(inputs)
            tokens = await asyncio.to_thread(batcher.embedder.count_tokens, inputs)
        except Exception as exc:  # noqa: BLE001 - an OpenAI error, never a bare 500 page
            log.exception("embedding failed")
            return _error(
                ProtocolError(
                    f"The worker could not embed this input: {exc}",
                    code="embedding_failed",
                    status=500,
                )
            )
        data = []
        for i, v in enumerate(vectors):
            emb: Any = v
            if fmt == "base64":
                emb = base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": EMBEDDING_MODEL,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def models(request: Request) -> Response:
        eng = current()
        if eng is None:
            return not_ready()
        names = [eng.model_name] + ([EMBEDDING_MODEL] if app.state.batcher else [])
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": n, "object": "model", "created": 0, "owned_by": "switchyard"}
                    for n in names
                ],
            }
        )

    def readiness() -> JSONResponse | None:
        """The 503 answer while not ready (None when ready)."""
        if app.state.status == "ready":
            return None
        body: dict[str, Any] = {"status": app.state.status}
        headers = None
        if app.state.status == "failed":
            body["error"] = app.state.error
        else:
            headers = {"Retry-After": str(RETRY_AFTER_LOADING)}
        return JSONResponse(body, status_code=503, headers=headers)

    async def health(request: Request) -> Response:
        """Readiness with the engine's numbers (the gateway's active health check)."""
        eng = current()
        if eng is None:
            return readiness()
        s = eng.stats()
        batcher = app.state.batcher
        return JSONResponse(
            {
                "status": "ready",
                "model": eng.model_name,
                "running": s.running,
                "waiting": s.waiting,
                "kv_cache_usage": round(s.kv_usage, 4),
                "kv_blocks_total": s.kv_blocks_total,
                "prefix_cache_hit_rate": round(s.prefix_hit_rate, 4),
                "failed_requests": s.failed_total,
                "embeddings": EMBEDDING_MODEL if batcher else None,
                "embedding_dimensions": DIMENSIONS if batcher else None,
            }
        )

    async def readyz(request: Request) -> Response:
        return readiness() or JSONResponse({"status": "ready"})

    async def healthz(request: Request) -> Response:
        """Liveness: the process answers (loading or not)."""
        return JSONResponse({"status": "alive"})

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/completions", text, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/abort", abort, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/livez", healthz, methods=["GET"]),
            Route("/metrics", prometheus, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.status = "starting"
    app.state.error = None
    app.state.engine = engine
    app.state.batcher = None
    app.state.auth_token = auth_token or None
    if auth_token:
        app.add_middleware(TokenAuth, token=auth_token)
    return app


def _sse_event(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


async def _sse(kind, rid, created, model, deltas, gen, parsed, metrics, started):
    """The SSE body. A stream that ends early (the request failed, or was aborted) ends with
    one ``data: {"error": {...}, "usage": {...}}`` event and no ``[DONE]``."""
    sent_first: set[int] = set()
    completion: dict[int, int] = {}
    last: CompletionDelta | None = None
    calls: dict[int, CallStream] = {}  # per choice, when the answer may be a tool call
    try:
        try:
            async for d in deltas:
                first = d.index not in sent_first
                sent_first.add(d.index)
                completion[d.index] = d.completion_tokens
                if d.finish_reason:
                    metrics.requests.labels(d.finish_reason).inc()
                last = d
                if parsed.tools:
                    stream = calls.setdefault(d.index, CallStream())
                    for c in protocol.chat_chunks(rid, created, model, d, first, stream):
                        yield _sse_event(c)
                    continue
                yield _sse_event(protocol.chunk(kind, rid, created, model, d, first))
        except RequestFailed as exc:
            metrics.requests.labels("error").inc()
            yield _sse_event(_failure_body(exc))
            return
        except Exception as exc:  # noqa: BLE001 - the client hears of it, never a bare end
            log.exception("stream %s failed", rid)
            metrics.requests.labels("error").inc()
            done = sum(completion.values())
            yield _sse_event(
                _failure_body(
                    RequestFailed(
                        f"The worker could not complete this request: {exc}",
                        code="engine_error",
                        status=500,
                        usage=None
                        if last is None
                        else RequestUsage(last.prompt_tokens, done, last.cached_tokens),
                    )
                )
            )
            return
        if parsed.include_usage and last is not None:
            u = {
                "id": rid,
                "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
                "created": created,
                "model": model,
                "choices": [],
                "usage": protocol.usage(
                    last.prompt_tokens, sum(completion.values()), last.cached_tokens
                ),
            }
            yield _sse_event(u)
        yield b"data: [DONE]\n\n"
        metrics.e2e.observe(time.perf_counter() - started)
    finally:
        await gen.aclose()


async def _collect(kind, rid, created, model, deltas, parsed) -> dict[str, Any]:
    n = parsed.params.n
    texts = [""] * n
    finish: list[str | None] = [None] * n
    lps: list[list] = [[] for _ in range(n)]
    completion = [0] * n
    prompt = cached = 0
    async for d in deltas:
        texts[d.index] += d.text
        if d.logprobs:
            lps[d.index].extend(d.logprobs)
        completion[d.index] = d.completion_tokens
        prompt, cached = d.prompt_tokens, d.cached_tokens
        if d.finish_reason:
            finish[d.index] = d.finish_reason
    choices = []
    for i in range(n):
        if kind == "chat":
            message, reason = protocol.chat_message(texts[i], finish[i], parsed.tools)
            c: dict[str, Any] = {
                "index": i,
                "message": message,
                "finish_reason": reason,
                "logprobs": protocol.chat_logprobs(lps[i]) if parsed.params.logprobs else None,
            }
        else:
            c = {
                "index": i,
                "text": texts[i],
                "finish_reason": finish[i],
                "logprobs": protocol.text_logprobs(lps[i]) if parsed.params.logprobs else None,
            }
        choices.append(c)
    return {
        "id": rid,
        "object": "chat.completion" if kind == "chat" else "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": protocol.usage(prompt, sum(completion), cached),
    }


def serve(
    model: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8100,
    embeddings: bool = True,
    kv_cache_bytes: int | None = None,
    max_num_seqs: int = 64,
    max_num_batched_tokens: int = 512,
    max_prefill_tokens_while_decoding: int | None = None,
    isolation_tokens: int | None = None,
    isolation_prefill_tokens: int = 64,
    kv_dtype: str = "auto",
    weights: str = "auto",
    threads: int | None = None,
    auth_token: str | None = None,
    log_level: str = "info",
) -> None:
    """Serve ``model`` until interrupted: the port answers at once (503 while loading), the
    model loads and warms up behind it. Exits with status 1 if it cannot load."""
    import uvicorn

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    warn_if_open(host, auth_token)

    def load() -> tuple[AsyncEngine, MiniLMEmbedder | None]:
        started = time.perf_counter()
        engine = AsyncEngine.from_model(
            model,
            kv_cache_bytes=kv_cache_bytes,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            max_prefill_tokens_while_decoding=max_prefill_tokens_while_decoding,
            isolation_tokens=isolation_tokens,
            isolation_prefill_tokens=isolation_prefill_tokens,
            kv_dtype=KV_DTYPES[kv_dtype],
            weights=weights,
            threads=threads,
        )
        embedder = MiniLMEmbedder() if embeddings else None
        log.info(
            "loaded %s in %.1f s (%d KV blocks)",
            engine.model_name,
            time.perf_counter() - started,
            engine.stats().kv_blocks_total,
        )
        return engine, embedder

    failures: list[BaseException] = []

    def failed(exc: BaseException) -> None:
        failures.append(exc)
        server.should_exit = True

    app = build_app(loader=load, auth_token=auth_token, on_load_failure=failed)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
    )
    log.info("listening on %s:%d; loading %s", host, port, model)
    server.run()
    if failures:
        raise SystemExit(1)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def warn_if_open(host: str, auth_token: str | None) -> None:
    """Warn loudly when a worker without a token listens beyond this machine."""
    if not auth_token and not is_loopback(host):
        bar = "!" * 78
        log.warning(
            "\n%s\nThis model worker listens on %s WITHOUT an auth token: anyone who can reach "
            "it can\ngenerate, and set any tenant, weight and cache salt. Set --auth-token or "
            "%s,\nand store the same token as the deployment's API key.\n%s",
            bar,
            host,
            TOKEN_ENV,
            bar,
        )


KV_DTYPES: dict[str, torch.dtype | None] = {
    "auto": None,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def bounded_int(low: int):
    """An argparse type: an integer of at least ``low``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse's "invalid integer value: 'x'"
    return parse


def isolation_value(text: str) -> int | str:
    """An argparse type for ``--isolation-tokens``: ``auto``, ``off`` or an integer >= 0."""
    if text in ("auto", "off"):
        return text
    return bounded_int(0)(text)


isolation_value.__name__ = "integer"  # argparse's "invalid integer value: 'x'"


def resolve_isolation(value: int | str | None, *, cuda: bool | None = None) -> int | None:
    """The scheduler's ``isolation_tokens`` for an ``--isolation-tokens`` value: ``auto`` is 0
    (steps of its own for the least-served tenant) on a CPU worker, where a step's time grows
    with every token in it, and off (None) on CUDA, where sharing every step costs little."""
    if value == "auto":
        if cuda is None:
            cuda = torch.cuda.is_available()
        return None if cuda else 0
    if value == "off" or value is None:
        return None
    return int(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m-instruct", help="name or .gguf path")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--no-embeddings", action="store_true", help="do not load MiniLM")
    parser.add_argument("--kv-cache-mb", type=int, default=None, help="KV cache size in MiB")
    parser.add_argument("--max-num-seqs", type=int, default=64)
    parser.add_argument("--max-num-batched-tokens", type=int, default=512)
    parser.add_argument(
        "--max-prefill-tokens-while-decoding",
        type=int,
        default=None,
        help="cap on prompt tokens in a step that also decodes running streams (default: none)",
    )
    parser.add_argument(
        "--isolation-tokens",
        type=isolation_value,
        default="auto",
        help="latency isolation: while several tenants are active, all but the least-served "
        "share this many tokens per step, 0 for none; 'off' to share every step (default auto: "
        "0 on a CPU worker, off on CUDA; docs/engine.md)",
    )
    parser.add_argument(
        "--isolation-prefill-tokens",
        type=bounded_int(1),
        default=64,
        help="under isolation, prompt tokens per step for a least-served tenant that is "
        "already running beside other tenants' streams (default 64)",
    )
    parser.add_argument(
        "--kv-dtype",
        choices=sorted(KV_DTYPES),
        default="auto",
        help="KV cache element type (default auto: the model's, float32 on CPU, bfloat16 on CUDA)",
    )
    parser.add_argument(
        "--weights",
        choices=WEIGHT_FORMATS,
        default="auto",
        help="weight format on a CPU (default auto: the GGUF's own quantized blocks where the "
        "CPU has native bfloat16, else float32; docs/engine.md, 'Weights')",
    )
    parser.add_argument(
        "--threads",
        type=bounded_int(1),
        default=None,
        help="torch threads on a CPU (default: the physical cores this process may use)",
    )
    parser.add_argument(
        "--auth-token",
        default=os.environ.get(TOKEN_ENV) or None,
        help=f"require 'Authorization: Bearer <token>' on every endpoint but health and metrics "
        f"(default: ${TOKEN_ENV}; prefer the environment, the command line is visible to ps)",
    )


def serve_options(o: dict) -> dict:
    """``serve`` keyword arguments from parsed ``add_arguments`` options (CLI and manage.py)."""
    return {
        "host": o["host"],
        "port": o["port"],
        "embeddings": not o["no_embeddings"],
        "kv_cache_bytes": o["kv_cache_mb"] * (1 << 20) if o["kv_cache_mb"] else None,
        "max_num_seqs": o["max_num_seqs"],
        "max_num_batched_tokens": o["max_num_batched_tokens"],
        "max_prefill_tokens_while_decoding": o["max_prefill_tokens_while_decoding"],
        "isolation_tokens": resolve_isolation(o["isolation_tokens"]),
        "isolation_prefill_tokens": o["isolation_prefill_tokens"],
        "kv_dtype": o["kv_dtype"],
        "weights": o["weights"],
        "threads": o["threads"],
        "auth_token": o["auth_token"] or None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Switchyard model worker")
    add_arguments(parser)
    o = vars(parser.parse_args(argv))
    serve(o["model"], **serve_options(o))


if __name__ == "__main__":
    main()
