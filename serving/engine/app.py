"""The model worker's HTTP app (:func:`build_app`): an OpenAI-compatible API over one engine.

Endpoints: /v1/chat/completions, /v1/completions (JSON or SSE), /v1/embeddings, /v1/models,
/v1/abort, /health and /readyz (readiness), /healthz (liveness), /metrics. Tenant, fairness
weight and priority come from the headers ``x-switchyard-tenant``, ``x-switchyard-weight`` and
``x-switchyard-priority`` (the gateway sets them); the prefix cache is salted by
``x-switchyard-prefix-salt``, else by the tenant. A request is known by its ``x-request-id``
to ``POST /v1/abort``. A client that disconnects aborts its request (queued, streaming or
not): the engine frees its blocks.

The app answers at once and its engine comes up behind it: until it is loaded and has run a
warm-up step, readiness answers 503 ``{"status": "starting"}`` and generation 503 with
``Retry-After`` (``code: "model_loading"``). With an auth token every endpoint but health,
readiness, liveness and metrics wants ``Authorization: Bearer <token>``.

Here: the app, its routes, embeddings, models, health and metrics. Completions and abort are
``completions.py``; the engine's bring-up and the answers before it, ``lifecycle.py``;
reading requests, ``inputs.py``; answers made from deltas, ``responses.py``; the token,
``auth.py``; the process around the app (options, uvicorn), ``cli.py``. See docs/engine.md.

The app's state (``app.state``): ``status`` (starting, ready or failed), ``error``,
``engine`` and ``batcher`` (the embedding batcher, None without embeddings), ``auth_token``,
``metrics`` and ``startup`` (how the engine comes up).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import struct
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from serving.engine.auth import TokenAuth
from serving.engine.completions import abort, chat, text
from serving.engine.embeddings import DIMENSIONS, EMBEDDING_MODEL, MiniLMEmbedder
from serving.engine.engine import AsyncEngine
from serving.engine.inputs import read_json
from serving.engine.lifecycle import Loader, Startup, current, lifespan, not_ready, readiness
from serving.engine.metrics import WorkerMetrics
from serving.engine.protocol import ProtocolError, parse_embeddings
from serving.engine.responses import error_response

log = logging.getLogger(__name__)


async def embeddings(request: Request) -> Response:
    """Embeddings of one string or a list of them, as floats or base64 (little-endian f32)."""
    state = request.app.state
    if current(state) is None:
        return not_ready(state)
    batcher = state.batcher
    if batcher is None:
        return error_response(
            ProtocolError(
                "This worker serves no embedding model.", status=404, code="model_not_found"
            )
        )
    try:
        inputs, fmt = parse_embeddings(await read_json(request), EMBEDDING_MODEL)
    except ProtocolError as exc:
        return error_response(exc)
    try:
        vectors = await batcher.embed(inputs)
        tokens = await asyncio.to_thread(batcher.embedder.count_tokens, inputs)
    except Exception as exc:  # noqa: BLE001 - an OpenAI error, never a bare 500 page
        log.exception("embedding failed")
        return error_response(
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
    """The model served, and the embedding model when there is one."""
    state = request.app.state
    eng = current(state)
    if eng is None:
        return not_ready(state)
    names = [eng.model_name] + ([EMBEDDING_MODEL] if state.batcher else [])
    return JSONResponse(
        {
            "object": "list",
            "data": [
                {"id": n, "object": "model", "created": 0, "owned_by": "switchyard"} for n in names
            ],
        }
    )


async def health(request: Request) -> Response:
    """Readiness with the engine's numbers (the gateway's active health check)."""
    state = request.app.state
    eng = current(state)
    if eng is None:
        return readiness(state)
    s = eng.stats()
    batcher = state.batcher
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
    return readiness(request.app.state) or JSONResponse({"status": "ready"})


async def healthz(request: Request) -> Response:
    """Liveness: the process answers (loading or not)."""
    return JSONResponse({"status": "alive"})


async def prometheus(request: Request) -> Response:
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )


ROUTES = [
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
]


def build_app(
    engine: AsyncEngine | None = None,
    embedder: MiniLMEmbedder | None = None,
    *,
    loader: Loader | None = None,
    auth_token: str | None = None,
    warm_up: bool = True,
    on_load_failure: Callable[[BaseException], None] | None = None,
    max_batch: int = 32,
    max_wait_ms: float = 2,
) -> Starlette:
    """The ASGI app serving ``engine`` (and embeddings when ``embedder`` is given).

    With ``loader`` instead, the app answers at once and loads in the background: readiness
    is 503 ``starting`` until the engine is loaded and warmed up (one short request), then
    200 ``ready``. ``auth_token`` guards every path outside ``auth.OPEN_PATHS``.
    """
    app = Starlette(routes=list(ROUTES), lifespan=lifespan)
    state = app.state
    state.status = "starting"
    state.error = None
    state.engine = engine
    state.batcher = None
    state.auth_token = auth_token or None
    state.startup = Startup(
        engine, embedder, loader, warm_up, on_load_failure, max_batch, max_wait_ms
    )
    state.metrics = WorkerMetrics(lambda: current(state))
    if auth_token:
        app.add_middleware(TokenAuth, token=auth_token)
    return app
