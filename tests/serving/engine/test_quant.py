"""GGUF block weights kept as stored: unpacking, the int4 and Q8_0 products against the
dequantized weights, row independence, the weight formats, and the worker's options."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf.quants import quantize

from serving.engine import cli
from serving.engine.config import EngineConfig
from serving.engine.kernels import native_ops, physical_cores
from serving.engine.quant import (
    BlockTensor,
    DenseLinear,
    Int4Linear,
    Q8Linear,
    SwitchLinear,
    make_linear,
    resolve_format,
    unpack_q4,
    unpack_q8_0,
)

CPU = torch.device("cpu")


def block_tensor(qtype: Q, rows: int, cols: int, seed: int = 0) -> BlockTensor:
    """A random weight quantized by ``gguf`` (rows have different scales and offsets)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    w *= rng.uniform(0.01, 2.0, (rows, 1)).astype(np.float32)
    w += rng.uniform(-0.5, 0.5, (rows, 1)).astype(np.float32)
    return BlockTensor(qtype, (rows, cols), quantize(w, qtype))


@pytest.fixture(scope="module")
def q8_op():
    ops = native_ops()
    if ops is None:
        pytest.skip("native kernels unavailable")
    return ops.q8_0_linear


@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q4_1])
def test_q4_unpacking_is_gguf_dequantization(qtype):
    t = block_tensor(qtype, 48, 256)
    q, d, m = unpack_q4(t)
    assert q.min() >= 0 and q.max() <= 15
    w = (q.reshape(48, 8, 32) * d[..., None] + m[..., None]).reshape(48, 256)
    np.testing.assert_allclose(w, t.dequantize(), rtol=0, atol=1e-6)


def test_q8_unpacking_and_rows_are_gguf_dequantization(q8_op):
    t = block_tensor(Q.Q8_0, 40, 192)
    q, d = unpack_q8_0(t)
    w = (q.reshape(40, 6, 32).astype(np.float32) * d[..., None]).reshape(40, 192)
    assert np.array_equal(w, t.dequantize())
    lin = Q8Linear(t, q8_op)
    ids = torch.tensor([3, 0, 39, 3])
    assert torch.equal(lin.rows(ids), torch.from_numpy(t.dequantize())[ids])


@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q4_1])
def test_int4_product_is_the_dequantized_product(qtype):
    """Within bfloat16 rounding of the scales, zero points and activations (the weights
    themselves are exact: 4-bit codes)."""
    t = block_tensor(qtype, 96, 320, seed=1)
    lin = Int4Linear(t)
    x = torch.randn(5, 320)
    want = x.double() @ torch.from_numpy(t.dequantize()).double().T
    got = lin(x).double()
    scale = want.abs().max()
    assert (got - want).abs().max() / scale < 2e-2
    # The same weights, not merely close ones: a 1-row product of each unit vector.
    torch.testing.assert_close(lin.dense(), torch.from_numpy(t.dequantize()), atol=0.02, rtol=0.01)


def test_q8_product_is_exact_in_float32(q8_op):
    t = block_tensor(Q.Q8_0, 200, 576, seed=2)
    lin = Q8Linear(t, q8_op)
    x = torch.randn(11, 576)
    want = x.double() @ torch.from_numpy(t.dequantize()).double().T
    torch.testing.assert_close(lin(x).double(), want, atol=1e-4, rtol=1e-5)
    with pytest.raises(RuntimeError, match="float32"):
        q8_op(x.double(), lin.q, lin.d)
    with pytest.raises(RuntimeError, match="multiple of 32"):
        q8_op(x[:, :40].contiguous(), lin.q[:, :40].contiguous(), lin.d[:, :1].contiguous())


@pytest.mark.parametrize("kind", ["int4", "q8_0"])
def test_a_rows_result_does_not_depend_on_the_batch(kind, q8_op):
    """Bitwise: batched and one-at-a-time decoding see the same products."""
    if kind == "int4":
        lin = Int4Linear(block_tensor(Q.Q4_1, 64, 576, seed=3))
    else:
        lin = Q8Linear(block_tensor(Q.Q8_0, 64, 576, seed=3), q8_op)
    x = torch.randn(40, 576)
    alone = lin(x[:1])
    for rows in (2, 3, 4, 7, 8, 9, 16, 33, 40):
        assert torch.equal(lin(x[:rows])[:1], alone), rows


def test_formats_build_the_expected_products(q8_op):
    q4, q8 = block_tensor(Q.Q4_1, 64, 128), block_tensor(Q.Q8_0, 64, 128)
    dense = np.random.default_rng(0).standard_normal((64, 128)).astype(np.float32)

    def make(w, fmt):
        return make_linear(w, fmt, device=CPU, dtype=torch.float32, q8_op=q8_op, hybrid_rows=16)

    assert isinstance(make(q4, "quantized"), Int4Linear)
    assert isinstance(make(q8, "quantized"), Q8Linear)
    assert make(dense, "quantized").weight.dtype == torch.bfloat16  # not a kept block type
    assert make(q4, "float32").weight.dtype == torch.float32
    assert make(q4, "bfloat16").weight.dtype == torch.bfloat16
    hybrid = make(q4, "hybrid")
    assert isinstance(hybrid, SwitchLinear) and isinstance(hybrid.large, DenseLinear)
    x = torch.randn(16, 128)
    assert torch.equal(hybrid(x[:15]), hybrid.small(x[:15]))
    assert torch.equal(hybrid(x), hybrid.large(x))
    # Without the native kernels a Q8_0 weight is a dense bfloat16 product.
    no_kernel = make_linear(q8, "quantized", device=CPU, dtype=torch.float32, q8_op=None)
    assert no_kernel.weight.dtype == torch.bfloat16


def test_auto_format(monkeypatch):
    monkeypatch.delenv("SWITCHYARD_ENGINE_WEIGHTS", raising=False)
    assert resolve_format("auto", torch.device("cuda")) == "bfloat16"
    assert resolve_format("auto", CPU) in ("quantized", "float32")
    monkeypatch.setenv("SWITCHYARD_ENGINE_WEIGHTS", "hybrid")
    assert resolve_format("auto", CPU) == "hybrid"
    assert resolve_format("float32", CPU) == "float32"
    with pytest.raises(ValueError, match="weight format must be one of"):
        resolve_format("q3", CPU)


def test_the_default_model_is_kept_quantized(loaded, loaded_float32):
    """The CPU default keeps the file's blocks: about a sixth of float32's bytes."""
    model, f32 = loaded[0], loaded_float32[0]
    if model.weight_format != "quantized":
        pytest.skip(f"weights are {model.weight_format} here")
    kinds = {lin.kind for lin in model.linears()}
    assert kinds == {"int4", "q8_0"}
    assert model.embed is None  # lookups read the Q8_0 rows of the tied head
    assert model.weight_bytes() < f32.weight_bytes() / 5


def parse(*argv: str) -> EngineConfig:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli.worker_options(vars(parser.parse_args(list(argv)))).engine


def test_weights_and_threads_options_reach_the_engine_config():
    config = parse()
    assert config.weights == "auto" and config.threads is None
    config = parse("--weights", "float32", "--threads", "3")
    assert config.weights == "float32" and config.threads == 3


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--weights", "q3"], "invalid choice: 'q3'"),
        (["--threads", "0"], "must be at least 1, got 0"),
    ],
)
def test_bad_weights_and_threads_are_refused(capsys, argv, message):
    with pytest.raises(SystemExit):
        parse(*argv)
    assert message in capsys.readouterr().err


def test_physical_cores():
    import os

    assert 1 <= physical_cores() <= (os.cpu_count() or 1)


def test_hybrid_copy_holds_the_int4_kernels_weights():
    """The bfloat16 copy used by large steps is the int4 kernel's own weights (bfloat16 scales
    and zero points), so the two paths part by output rounding only."""
    t = block_tensor(Q.Q4_1, 128, 256, seed=5)
    lin = make_linear(t, "hybrid", device=CPU, dtype=torch.float32, hybrid_rows=16)
    assert torch.equal(lin.large.weight, lin.small.dense().bfloat16())
    x = torch.randn(16, 256).bfloat16()
    small, large = lin.small(x).float(), lin.large(x).float()
    ulp = torch.finfo(torch.bfloat16).eps * large.abs().max()
    assert (small - large).abs().max() <= 2 * ulp
