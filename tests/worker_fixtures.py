"""A model worker (the real engine and MiniLM) served in-process over real HTTP, with an auth
token like every deployed worker: callers send ``worker.headers`` (or ``worker.token`` as the
deployment's API key)."""

from __future__ import annotations

import secrets
import threading
import time

import httpx
import pytest
import uvicorn

from serving.engine.app import build_app
from serving.engine.config import EngineConfig
from serving.engine.embeddings import MiniLMEmbedder
from serving.engine.engine import AsyncEngine, LLMEngine
from switchyard.embedded import free_port

MODEL = "smollm2-135m-instruct"


class Worker:
    def __init__(self, app, token: str | None = None) -> None:
        self.app = app
        self.token = token
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            assert time.monotonic() < deadline, "worker did not start"
            time.sleep(0.05)
        # Bound at once; ready once the engine has warmed up.
        while httpx.get(f"{self.url}/readyz", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "worker did not get ready"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="session")
def embedder():
    return MiniLMEmbedder()


@pytest.fixture(scope="session")
def worker(loaded, embedder):
    """uvicorn serving the worker app on a free port, in a thread, for the whole session."""
    model, tokenizer = loaded
    config = EngineConfig(kv_cache_bytes=96 << 20)
    engine = AsyncEngine(LLMEngine(model, tokenizer, model_name=MODEL, config=config))
    token = secrets.token_urlsafe(24)
    w = Worker(build_app(engine, embedder, auth_token=token), token)
    yield w
    w.stop()
