"""The task classifier: simple / complex / code, for routing rules.

A multinomial logistic regression over all-MiniLM-L6-v2 sentence embeddings of the prompt,
trained at build time (``manage.py train_task_classifier``) from the labelled examples in
``serving/routing/data/train.jsonl``; its weights are ``serving/routing/data/classifier.json``
(committed, and rebuilt and checked by a test). When embeddings are unavailable (MiniLM
cannot be loaded, or ``SWITCHYARD_CLASSIFIER=heuristic``) cheap keyword heuristics decide.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from functools import cache
from pathlib import Path

import numpy as np
from django.conf import settings

log = logging.getLogger(__name__)

CLASSES = ("simple", "complex", "code")
DATA_DIR = Path(__file__).resolve().parent / "data"
WEIGHTS = DATA_DIR / "classifier.json"
MAX_CHARS = 1000  # the head of a prompt says what kind of task it is; keeps P99 flat
MAX_TOKENS = 128

_CODE = re.compile(
    r"```|\bdef |\bclass \w|\bfunction\b|\bimport \w|#include|\bSELECT\b|\bregex\b|"
    r"\b(python|javascript|typescript|java|rust|golang|c\+\+|sql|bash|html|css|json|yaml|"
    r"kotlin|swift|ruby|php|haskell|dockerfile|kubernetes|git|api endpoint|stack trace|"
    r"compile|compiler|segfault|null pointer|exception|bug|refactor|unit test|function|"
    r"script|code|snippet|algorithm|recursion|linked list|array|debug)\b|[{};]\s*$|=>|\(\)",
    re.IGNORECASE | re.MULTILINE,
)
_COMPLEX = re.compile(
    r"\b(explain|analy[sz]e|compare|contrast|evaluate|design|prove|derive|argue|trade-?offs?|"
    r"implications|strategy|in depth|step by step|essay|critique|assess|justify|why does|"
    r"how would|what are the (pros|consequences|differences)|plan|architecture|policy)\b",
    re.IGNORECASE,
)


def heuristic_class(text: str) -> str:
    """Keywords and length: the fallback when embeddings are unavailable."""
    if _CODE.search(text):
        return "code"
    if _COMPLEX.search(text) or len(text.split()) > 60:
        return "complex"
    return "simple"


class LinearClassifier:
    """softmax(W·x + b) over L2-normalised 384-d embeddings."""

    def __init__(self, weights: np.ndarray, bias: np.ndarray, classes: tuple[str, ...]) -> None:
        self.weights = weights.astype(np.float32)
        self.bias = bias.astype(np.float32)
        self.classes = classes

    @classmethod
    def load(cls, path: Path = WEIGHTS) -> LinearClassifier:
        data = json.loads(path.read_text())
        return cls(np.array(data["weights"]), np.array(data["bias"]), tuple(data["classes"]))

    def predict(self, vectors: np.ndarray) -> list[str]:
        logits = vectors @ self.weights.T + self.bias
        return [self.classes[i] for i in logits.argmax(axis=1)]


@cache
def _embedder():
    import torch

    from serving.engine.embeddings import MiniLMEmbedder

    # A gateway process runs no other torch work: one thread per classification keeps a
    # request's latency flat instead of fighting the other requests' threads for the cores.
    torch.set_num_threads(settings.SWITCHYARD_CLASSIFIER_THREADS)
    embedder = MiniLMEmbedder(device="cpu", backend="torch")  # its own bf16 forward below
    if classifier_dtype() == "bfloat16":
        bert = getattr(embedder.model[0], "auto_model", None)
        if bert is not None:
            bert.to(torch.bfloat16)  # embed_one pools in the model's dtype, returns float32
    return embedder


def classifier_dtype() -> str:
    """The dtype the gateway's MiniLM runs in: ``SWITCHYARD_CLASSIFIER_DTYPE``, where "auto" is
    bfloat16 on CPUs with native bf16 (measured: P99 10.8 -> 7.8 ms, held-out accuracy equal)."""
    import torch

    wanted = settings.SWITCHYARD_CLASSIFIER_DTYPE
    if wanted in ("float32", "bfloat16"):
        return wanted
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return "bfloat16" if native else "float32"


def embed_one(embedder, text: str) -> np.ndarray:
    """The MiniLM sentence embedding of ``text`` (mean-pooled, L2-normalised, at most
    ``MAX_TOKENS`` tokens), without ``SentenceTransformer.encode``'s per-call overhead; the
    same vector ``embedder.embed`` gives for texts that short."""
    import torch

    bert = getattr(embedder.model[0], "auto_model", None)
    if bert is None:  # another sentence-transformers layout: take the slow path
        return np.asarray(embedder.embed([text]), dtype=np.float32)
    with torch.inference_mode():
        enc = embedder.tokenizer([text], return_tensors="pt", truncation=True,
                                 max_length=MAX_TOKENS).to(bert.device)  # fmt: skip
        hidden = bert(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        vec = torch.nn.functional.normalize(vec, dim=1)
    return vec.float().cpu().numpy()


_lock = threading.Lock()


class TaskClassifier:
    """``classify(text)``: blocking (run it off the event loop); thread-safe."""

    def __init__(self, mode: str | None = None, embedder=None) -> None:
        """``embedder``: a loaded ``MiniLMEmbedder`` to share (default: load one lazily)."""
        self.mode = mode or settings.SWITCHYARD_CLASSIFIER
        self._embedder = embedder
        self._model: LinearClassifier | None = None
        self._failed = self.mode != "embeddings"

    def _ready(self) -> bool:
        if self._failed:
            return False
        if self._model is None:
            try:
                self._embedder = self._embedder or _embedder()
                self._model = LinearClassifier.load()
            except Exception:  # noqa: BLE001 - any failure means: use the heuristics
                log.warning("task classifier: embeddings unavailable, using heuristics")
                self._failed = True
                return False
        return True

    def classify(self, text: str) -> tuple[str, str]:
        """(class, how): how is ``embeddings`` or ``heuristic``."""
        text = text[:MAX_CHARS]
        if not text.strip():
            return "simple", "heuristic"
        if not self._ready():
            return heuristic_class(text), "heuristic"
        with _lock:  # one forward at a time: torch threads are shared anyway
            vec = embed_one(self._embedder, text)
        return self._model.predict(vec)[0], "embeddings"


@cache
def task_classifier() -> TaskClassifier:
    return TaskClassifier()
