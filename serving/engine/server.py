"""The model worker's HTTP server: an OpenAI-compatible API over one loaded engine.

    python -m serving.engine.server --model smollm2-135m-instruct --port 8100
    (or: manage.py serve_model ...)

Endpoints: /v1/chat/completions, /v1/completions (JSON or SSE), /v1/embeddings, /v1/models,
/health, /metrics. Tenant, fairness weight and priority come from the headers
``x-switchyard-tenant``, ``x-switchyard-weight`` and ``x-switchyard-priority`` (the gateway
sets them). A client that disconnects aborts its request: the engine frees its blocks.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import struct
import time
import uuid
from collections.abc import AsyncIterator
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
from serving.engine.errors import EngineOverloaded
from serving.engine.protocol import ProtocolError
from serving.engine.types import CompletionDelta, GenerationRequest

log = logging.getLogger("serving.engine.server")

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class WorkerMetrics:
    def __init__(self, engine: AsyncEngine) -> None:
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
        s = self.engine.stats()
        for name, doc, value in (
            ("switchyard_num_requests_running", "Sequences running.", s.running),
            ("switchyard_num_requests_waiting", "Sequences waiting.", s.waiting),
            ("switchyard_kv_cache_usage_perc", "KV blocks in use (0-1).", s.kv_usage),
            ("switchyard_prefix_cache_hit_rate", "Prompt blocks found cached.", s.prefix_hit_rate),
            ("switchyard_kv_cache_blocks_total", "KV blocks in the pool.", s.kv_blocks_total),
            ("switchyard_prompt_tokens_total", "Prompt tokens computed.", s.prompt_tokens_total),
            ("switchyard_generation_tokens_total", "Tokens generated.", s.generation_tokens_total),
            ("switchyard_num_preemptions_total", "Sequences preempted.", s.preemptions_total),
        ):
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], float(value))
            yield g

    def describe(self):
        return []


def _error(exc: ProtocolError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


def _tenant(request: Request) -> tuple[str, float, int]:
    h = request.headers
    try:
        weight = float(h.get("x-switchyard-weight", "1"))
        priority = int(h.get("x-switchyard-priority", "0"))
    except ValueError as exc:
        raise ProtocolError("Bad x-switchyard-weight or x-switchyard-priority header.") from exc
    if not 0 < weight <= 1000:
        raise ProtocolError("x-switchyard-weight must be in (0, 1000].")
    return h.get("x-switchyard-tenant", "default")[:64], weight, priority


def build_app(
    engine: AsyncEngine,
    embedder: MiniLMEmbedder | None = None,
    *,
    max_batch: int = 32,
    max_wait_ms: float = 50,
) -> Starlette:
    """The Starlette app serving ``engine`` (and embeddings when ``embedder`` is given)."""
    metrics = WorkerMetrics(engine)
    batcher = (
        DynamicBatcher(embedder, max_batch_size=max_batch, max_wait_ms=max_wait_ms)
        if (embedder)
        else None
    )

    @asynccontextmanager
    async def lifespan(app):
        await engine.start()
        if batcher:
            await batcher.start()
        try:
            yield
        finally:
            if batcher:
                await batcher.stop()
            await engine.stop()

    async def read_json(request: Request) -> Any:
        try:
            return json.loads(await request.body())
        except ValueError:
            raise ProtocolError(
                "We could not parse the JSON body of your request.", code="invalid_json"
            ) from None

    async def completions(request: Request, kind: str) -> Response:
        try:
            body = await read_json(request)
            parsed = protocol.parse(
                body, kind, engine.tokenizer, engine.model_name, engine.max_model_len
            )
            if parsed.model != engine.model_name:
                raise ProtocolError(
                    f"The model `{parsed.model}` does not exist on this worker "
                    f"(it serves `{engine.model_name}`).",
                    param="model",
                    code="model_not_found",
                    status=404,
                )
            tenant, weight, priority = _tenant(request)
        except ProtocolError as exc:
            return _error(exc)
        rid = protocol.new_id(kind)
        greq = GenerationRequest(
            request_id=request.headers.get("x-request-id") or rid + uuid.uuid4().hex[:6],
            prompt_token_ids=parsed.prompt_ids,
            params=parsed.params,
            tenant=tenant,
            weight=weight,
            priority=priority,
        )
        try:
            engine.validate(greq)
        except ValueError as exc:
            return _error(ProtocolError(str(exc)))
        started = time.perf_counter()
        created = protocol.now()
        try:
            gen = engine.generate(greq)
            first = await gen.__anext__()
        except EngineOverloaded as exc:
            return JSONResponse(
                ProtocolError(str(exc), code="overloaded", status=503).body(),
                status_code=503,
                headers={"Retry-After": "1"},
            )
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
                _sse(
                    kind, rid, created, engine.model_name, deltas(), gen, parsed, metrics, started
                ),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:
            result = await _collect(kind, rid, created, engine.model_name, deltas(), parsed)
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

    async def embeddings(request: Request) -> Response:
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
        vectors = await batcher.embed(inputs)
        tokens = await asyncio.to_thread(embedder.count_tokens, inputs)
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
        names = [engine.model_name] + ([EMBEDDING_MODEL] if batcher else [])
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": n, "object": "model", "created": 0, "owned_by": "switchyard"}
                    for n in names
                ],
            }
        )

    async def health(request: Request) -> Response:
        s = engine.stats()
        return JSONResponse(
            {
                "status": "ok" if engine.step_error is None else "degraded",
                "model": engine.model_name,
                "running": s.running,
                "waiting": s.waiting,
                "kv_cache_usage": round(s.kv_usage, 4),
                "kv_blocks_total": s.kv_blocks_total,
                "prefix_cache_hit_rate": round(s.prefix_hit_rate, 4),
                "embeddings": EMBEDDING_MODEL if batcher else None,
                "embedding_dimensions": DIMENSIONS if batcher else None,
            }
        )

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/completions", text, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", prometheus, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.batcher = batcher
    return app


async def _sse(kind, rid, created, model, deltas, gen, parsed, metrics, started):
    sent_first: set[int] = set()
    completion: dict[int, int] = {}
    last: CompletionDelta | None = None
    try:
        async for d in deltas:
            first = d.index not in sent_first
            sent_first.add(d.index)
            completion[d.index] = d.completion_tokens
            if d.finish_reason:
                metrics.requests.labels(d.finish_reason).inc()
            last = d
            data = protocol.chunk(kind, rid, created, model, d, first)
            yield b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"
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
            yield b"data: " + json.dumps(u, separators=(",", ":")).encode() + b"\n\n"
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
            c: dict[str, Any] = {
                "index": i,
                "message": {"role": "assistant", "content": texts[i]},
                "finish_reason": finish[i],
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
    log_level: str = "info",
) -> None:
    """Load ``model`` once and serve it until interrupted."""
    import uvicorn

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
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
    )
    embedder = MiniLMEmbedder() if embeddings else None
    log.info(
        "loaded %s in %.1f s (%d KV blocks)",
        engine.model_name,
        time.perf_counter() - started,
        engine.stats().kv_blocks_total,
    )
    app = build_app(engine, embedder)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
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
        type=bounded_int(0),
        default=None,
        help="latency isolation: while several tenants are active, all but the least-served "
        "share this many tokens per step, 0 for none (default: off; docs/engine.md)",
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
        "isolation_tokens": o["isolation_tokens"],
        "isolation_prefill_tokens": o["isolation_prefill_tokens"],
        "kv_dtype": o["kv_dtype"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Switchyard model worker")
    add_arguments(parser)
    o = vars(parser.parse_args(argv))
    serve(o["model"], **serve_options(o))


if __name__ == "__main__":
    main()
