"""The gateway's sentence embedder for semantic-cache lookups.

By default (``SWITCHYARD_CACHE_EMBEDDER=deployment``) the embedding is computed off the
gateway's CPU: by the deployment that serves the embedding model (``all-minilm-l6-v2``; on a
fresh ``make run``, the model worker, which batches MiniLM across requests and gateways).
Concurrent lookups in one gateway process go out as one request. When no such deployment is
healthy, or with ``SWITCHYARD_CACHE_EMBEDDER=local``, MiniLM runs in-process (one model per
process, loaded on first use in a worker thread, concurrent lookups batched with a short
wait). Recent texts are remembered either way.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from array import array
from collections import OrderedDict

import orjson
from django.conf import settings

from serving.engine.embeddings import EMBEDDING_MODEL, DynamicBatcher, MiniLMEmbedder

log = logging.getLogger(__name__)

REMOTE_TIMEOUT = 5.0  # seconds; a lookup waits no longer for its embedding
REMOTE_BACKOFF = 10.0  # seconds of local embedding after the deployment failed
MAX_WAIT_MS = 0.2  # on the request path: take what is queued, hardly wait for more
# Prompts repeat (that is why there is a cache): the last few thousand embeddings are kept.
RECENT_TEXTS = 4096

_lock = threading.Lock()
_embedder: MiniLMEmbedder | None = None
_batchers: dict[int, DynamicBatcher] = {}
_recent: OrderedDict[str, array] = OrderedDict()


def load_embedder() -> MiniLMEmbedder:
    """The process's MiniLM (blocking: call from a thread, or at start-up)."""
    global _embedder
    with _lock:
        if _embedder is None:
            import torch

            # One short sentence gains nothing from more threads, and a gateway's threads
            # compete with its event loop and other processes on the host.
            torch.set_num_threads(1)
            _embedder = MiniLMEmbedder()
        return _embedder


async def embed(text: str) -> list[float]:
    """The L2-normalised 384-d embedding of ``text`` (the same text again: from memory)."""
    kept = _recent.get(text)
    if kept is not None:
        _recent.move_to_end(text)
        return list(kept)
    vec = await _embed(text)
    _recent[text] = array("f", vec)  # 1.5 KB, not the 12 KB of a list of floats
    while len(_recent) > RECENT_TEXTS:
        _recent.popitem(last=False)
    return vec


async def _embed(text: str) -> list[float]:
    if settings.SWITCHYARD_CACHE_EMBEDDER == "deployment":
        target = await _embedding_target()
        if target is not None:
            vec = await _remote(target).embed(text)
            if vec is not None:
                return vec
    return await _embed_locally(text)


async def _embedding_target():
    from serving.routing.table import arouting_table

    group = (await arouting_table()).groups.get(EMBEDDING_MODEL)
    return group.targets[0] if group and group.targets else None


class _RemoteBatcher:
    """Sends the texts queued in this event loop as one ``/embeddings`` request."""

    def __init__(self, target) -> None:
        self.target = target
        self.pending: list[tuple[str, asyncio.Future]] = []
        self.failed_until = 0.0
        self._tasks: set[asyncio.Task] = set()

    async def embed(self, text: str) -> list[float] | None:
        loop = asyncio.get_running_loop()
        if loop.time() < self.failed_until:
            return None
        fut = loop.create_future()
        self.pending.append((text, fut))
        if len(self.pending) == 1:
            # Flushed once the lookups that are ready in this turn of the loop have queued.
            loop.call_soon(self._start_flush)
        return await fut

    def _start_flush(self) -> None:
        task = asyncio.get_running_loop().create_task(self._flush())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self) -> None:
        batch, self.pending = self.pending, []
        from serving.gateway.upstream import post

        t = self.target
        headers = {"content-type": "application/json"}
        if t.api_key:
            headers["authorization"] = f"Bearer {t.api_key}"
        try:
            resp = await post(
                f"{t.base_url}/embeddings",
                {"model": t.upstream_model, "input": [text for text, _ in batch]},
                headers,
                REMOTE_TIMEOUT,
            )
            if resp.status != 200:
                raise ValueError(f"status {resp.status}")
            data = sorted(orjson.loads(resp.body)["data"], key=lambda d: d["index"])
            vectors = [d["embedding"] for d in data]
            if len(vectors) != len(batch):
                raise ValueError("embedding count mismatch")
        except Exception:  # noqa: BLE001 - the lookup falls back to the local model
            log.warning("embedding deployment %s failed; embedding locally for a while", t.name)
            self.failed_until = asyncio.get_running_loop().time() + REMOTE_BACKOFF
            vectors = [None] * len(batch)
        for (_, fut), vec in zip(batch, vectors, strict=True):
            if not fut.done():
                fut.set_result(vec)


_remotes: dict[tuple[int, str, str], _RemoteBatcher] = {}


def _remote(target) -> _RemoteBatcher:
    key = (id(asyncio.get_running_loop()), target.name, target.base_url)
    batcher = _remotes.get(key)
    if batcher is None or batcher.target != target:
        batcher = _remotes[key] = _RemoteBatcher(target)
    return batcher


async def _embed_locally(text: str) -> list[float]:
    loop = asyncio.get_running_loop()
    batcher = _batchers.get(id(loop))
    if batcher is None:
        embedder = _embedder or await asyncio.to_thread(load_embedder)
        batcher = _batchers.setdefault(
            id(loop), DynamicBatcher(embedder, max_batch_size=16, max_wait_ms=MAX_WAIT_MS)
        )
    (vec,) = await batcher.embed([text])
    return vec
