"""The gateway's sentence embedder: MiniLM in-process, off the event loop.

One model per process, loaded on first use in a worker thread; concurrent lookups are batched
(serving.engine.embeddings.DynamicBatcher) with a short wait, since a lookup sits on the
request's path.
"""

from __future__ import annotations

import asyncio
import threading
from array import array
from collections import OrderedDict

from serving.engine.embeddings import DynamicBatcher, MiniLMEmbedder

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
    loop = asyncio.get_running_loop()
    batcher = _batchers.get(id(loop))
    if batcher is None:
        embedder = _embedder or await asyncio.to_thread(load_embedder)
        batcher = _batchers.setdefault(
            id(loop), DynamicBatcher(embedder, max_batch_size=16, max_wait_ms=MAX_WAIT_MS)
        )
    (vec,) = await batcher.embed([text])
    return vec
