"""The real SmolLM2 model, loaded once per test session; a fresh engine (own KV pool) per
test so tests never see each other's cache."""

from __future__ import annotations

import pytest
import torch

from serving.engine.config import EngineConfig
from serving.engine.engine import LLMEngine
from serving.engine.gguf_loader import load_gguf
from serving.engine.model import LlamaModel
from serving.engine.registry import resolve
from serving.engine.types import GenerationRequest, SamplingParams
from tests.conftest import MODEL

__all__ = ["MODEL"]


@pytest.fixture(scope="session")
def gguf_file():
    """The default model's GGUF as read by the engine (blocks kept), read once."""
    return load_gguf(resolve(MODEL)[1])


@pytest.fixture(scope="session")
def loaded_float32(loaded, gguf_file):
    """The same model with float32 weights (``--weights float32``, the reference path) and
    the tokenizer, built once: where native kernels and torch ops must agree exactly."""
    gguf = gguf_file
    cpu = torch.device("cpu")
    return LlamaModel(gguf.config, gguf.weights, cpu, torch.float32, "float32"), loaded[1]


@pytest.fixture
def make_engine(loaded):
    model, tokenizer = loaded

    def make(**kw) -> LLMEngine:
        """A fresh engine; ``kw`` overrides ``EngineConfig`` fields (64 MiB KV pool)."""
        kw.setdefault("kv_cache_bytes", 64 << 20)
        return LLMEngine(model, tokenizer, model_name=MODEL, config=EngineConfig(**kw))

    return make


@pytest.fixture
def engine(make_engine) -> LLMEngine:
    return make_engine()


def chat_request(tokenizer, rid: str, question: str, **params) -> GenerationRequest:
    params.setdefault("temperature", 0.0)
    params.setdefault("max_tokens", 24)
    extra = {k: params.pop(k) for k in ("tenant", "weight", "priority") if k in params}
    ids = tokenizer.encode(tokenizer.apply_chat_template([{"role": "user", "content": question}]))
    return GenerationRequest(rid, ids, SamplingParams(**params), **extra)
