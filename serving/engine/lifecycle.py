"""How the worker's engine comes up and what the app answers until it has: the app's
lifespan loads (or takes) the engine, warms it up and starts it behind an open port; until
then readiness is 503 ``starting`` (``failed`` with the reason if it cannot load) and the
model's endpoints answer 503 ``model_loading`` with ``Retry-After``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.responses import JSONResponse

from serving.engine.embeddings import DynamicBatcher, MiniLMEmbedder
from serving.engine.engine import AsyncEngine
from serving.engine.protocol import ProtocolError
from serving.engine.responses import error_response

log = logging.getLogger(__name__)

RETRY_AFTER_LOADING = 5  # seconds, in Retry-After while the model loads

Loader = Callable[[], tuple[AsyncEngine, MiniLMEmbedder | None]]


@dataclass(frozen=True)
class Startup:
    """How the app's engine comes up: the one given, or the one ``loader`` loads (in a
    thread), then a warm-up step, the engine thread and the embedding batcher."""

    engine: AsyncEngine | None
    embedder: MiniLMEmbedder | None
    loader: Loader | None
    warm_up: bool
    on_load_failure: Callable[[BaseException], None] | None
    max_batch: int  # the embedding batcher's
    max_wait_ms: float


def current(state: State) -> AsyncEngine | None:
    """The engine once it is ready to serve; None while it loads or after it failed to."""
    return state.engine if state.status == "ready" else None


async def bring_up(state: State) -> None:
    """Load (or take) the engine, warm it up and start it; ``state.status`` says how it went."""
    s: Startup = state.startup
    eng, emb = s.engine, s.embedder
    try:
        if s.loader is not None:
            eng, emb = await asyncio.to_thread(s.loader)
        state.engine = eng
        batcher = (
            DynamicBatcher(emb, max_batch_size=s.max_batch, max_wait_ms=s.max_wait_ms)
            if emb
            else None
        )
        state.batcher = batcher
        if s.warm_up:
            started = time.perf_counter()
            await asyncio.to_thread(eng.engine.warm_up)
            log.info("warm-up step ran in %.2f s", time.perf_counter() - started)
        await eng.start()
        if batcher:
            await batcher.start()
        state.status = "ready"
        log.info("ready: serving %s", eng.model_name)
    except Exception as exc:  # noqa: BLE001 - reported by readiness and the log
        log.exception("the model worker could not start")
        state.status, state.error = "failed", f"{type(exc).__name__}: {exc}"
        if s.on_load_failure is not None:
            s.on_load_failure(exc)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Bring the engine up in the background while the app serves; stop it at shutdown."""
    state = app.state
    task = asyncio.create_task(bring_up(state))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        if state.batcher:
            await state.batcher.stop()
        if state.engine is not None:
            await state.engine.stop()


def not_ready(state: State) -> JSONResponse:
    """The 503 answer of a generation, embedding or models request before the engine is up."""
    if state.status == "failed":
        return error_response(
            ProtocolError(
                f"The model worker failed to start: {state.error}",
                code="model_load_failed",
                status=503,
            )
        )
    return error_response(
        ProtocolError(
            "The model is loading; retry in a few seconds.", code="model_loading", status=503
        ),
        headers={"Retry-After": str(RETRY_AFTER_LOADING)},
    )


def readiness(state: State) -> JSONResponse | None:
    """The 503 answer while not ready (None when ready)."""
    if state.status == "ready":
        return None
    body: dict[str, Any] = {"status": state.status}
    headers = None
    if state.status == "failed":
        body["error"] = state.error
    else:
        headers = {"Retry-After": str(RETRY_AFTER_LOADING)}
    return JSONResponse(body, status_code=503, headers=headers)
