"""The native paged decode attention against gather + SDPA, and the engine with and without it."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from serving.engine.config import EngineConfig
from serving.engine.engine import LLMEngine
from serving.engine.kernels import native_ops
from tests.serving.engine.conftest import MODEL, chat_request


@pytest.fixture(scope="module")
def kernel():
    ops = native_ops()
    if ops is None and os.environ.get("SWITCHYARD_ENGINE_KERNELS", "1") == "0":
        pytest.skip("native kernels switched off")
    assert ops is not None, "the native kernels did not build (see the warning logged)"
    return ops.paged_decode_attention


def reference(q, k_pool, v_pool, tables, lens, block_size, scale):
    out = torch.empty_like(q)
    for b in range(q.shape[0]):
        n = int(lens[b])
        slots = (tables[b].long().unsqueeze(1) * block_size + torch.arange(block_size)).flatten()
        k = k_pool[slots[:n]].transpose(0, 1).float()
        v = v_pool[slots[:n]].transpose(0, 1).float()
        out[b] = F.scaled_dot_product_attention(
            q[b].unsqueeze(1), k, v, scale=scale, enable_gqa=True
        ).squeeze(1)
    return out


@pytest.mark.parametrize(
    "dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-5), (torch.float16, 1e-5)]
)
@pytest.mark.parametrize(
    "heads,kv_heads,head_dim", [(9, 3, 64), (4, 4, 32), (6, 2, 40), (6, 2, 36)]
)
def test_kernel_matches_gather_and_sdpa(kernel, dtype, tol, heads, kv_heads, head_dim):
    """Context lengths around block edges, blocks scattered over the pool, GQA groups of 1-3;
    head sizes that take the AVX-512 path (64, where the CPU has it), the AVX2 path (32, 40,
    and 64 elsewhere) and the portable loop (36); the pool's own dtype is the reference's."""
    gen = torch.Generator().manual_seed(heads * head_dim)
    block_size, num_blocks = 16, 512
    lens = torch.tensor([1, 15, 16, 17, 33, 250, 1000], dtype=torch.int32)
    width = int((lens.max() + block_size - 1) // block_size)
    tables = torch.randperm(num_blocks, generator=gen)[: len(lens) * width]
    tables = tables.view(len(lens), width).int()
    k_pool = torch.randn(num_blocks * block_size, kv_heads, head_dim, generator=gen).to(dtype)
    v_pool = torch.randn(num_blocks * block_size, kv_heads, head_dim, generator=gen).to(dtype)
    q = torch.randn(len(lens), heads, head_dim, generator=gen)
    scale = head_dim**-0.5
    got = kernel(q, k_pool, v_pool, tables, lens, block_size, scale)
    want = reference(q, k_pool, v_pool, tables, lens, block_size, scale)
    torch.testing.assert_close(got, want, atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_rope_and_cache_matches_torch(kernel, loaded, dtype):
    """The fused rotary + cache write gives the model's own torch rotary and index_put."""
    model, _ = loaded
    cfg = model.cfg
    gen = torch.Generator().manual_seed(7)
    T = 37
    qkv = torch.randn(T, (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim, generator=gen)
    positions = torch.randint(0, 2000, (T,), generator=gen)
    slots = torch.randperm(512, generator=gen)[:T]
    pools = [torch.zeros(512, cfg.n_kv_heads, cfg.head_dim, dtype=dtype) for _ in range(4)]
    q = native_ops().rope_and_cache(
        qkv, model.cos, model.sin, positions, slots, pools[0], pools[1], cfg.n_heads
    )
    cos, sin = model.cos[positions].unsqueeze(1), model.sin[positions].unsqueeze(1)
    nq, nk = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    want_q = model._rope(qkv[:, :nq].view(T, cfg.n_heads, -1), cos, sin)
    pools[2][slots] = model._rope(qkv[:, nq : nq + nk].view(T, cfg.n_kv_heads, -1), cos, sin).to(
        dtype
    )
    pools[3][slots] = qkv[:, nq + nk :].view(T, cfg.n_kv_heads, -1).to(dtype)
    torch.testing.assert_close(q, want_q, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pools[0].float(), pools[2].float(), atol=1e-2, rtol=1e-2)
    assert torch.equal(pools[1], pools[3])


def test_kernel_refuses_bad_input(kernel):
    q = torch.randn(2, 9, 64)
    pool = torch.randn(64, 3, 64)
    tables = torch.zeros(2, 4, dtype=torch.int32)
    with pytest.raises(RuntimeError, match="int32"):
        kernel(q, pool, pool, tables.long(), torch.tensor([3, 4], dtype=torch.int32), 16, 0.1)
    with pytest.raises(RuntimeError, match="float32"):
        kernel(q.double(), pool, pool, tables, torch.tensor([3, 4], dtype=torch.int32), 16, 0.1)
    with pytest.raises(RuntimeError, match="dtype"):
        kernel(q, pool, pool.half(), tables, torch.tensor([3, 4], dtype=torch.int32), 16, 0.1)


QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about rivers.",
    "List three prime numbers.",
    "Why is the sky blue? Explain in detail, with the physics.",
]


def _greedy(engine, tokenizer) -> dict:
    return engine.generate_sync(
        [chat_request(tokenizer, f"r{i}", q, max_tokens=40) for i, q in enumerate(QUESTIONS)]
    )


def test_engine_output_is_the_same_with_and_without_the_kernel(kernel, loaded_float32):
    """On float32 weights, where the kernels and torch's ops differ by float32 rounding only
    (with the default quantized weights the products take bfloat16 activations, and such a
    difference can change a rounding there and part greedy outputs at a near tie)."""
    model, tokenizer = loaded_float32

    def make_engine():
        return LLMEngine(
            model, tokenizer, model_name=MODEL, config=EngineConfig(kv_cache_bytes=64 << 20)
        )

    with_kernel = _greedy(make_engine(), tokenizer)
    saved = model.ops
    model.ops = None
    try:
        without = _greedy(make_engine(), tokenizer)
    finally:
        model.ops = saved
    assert with_kernel == without


def _greedy_tokens(engine, tokenizer, questions: dict[str, str]) -> dict:
    """Greedy token ids and per-token top-2 logprobs of each request, run as one batch."""
    out: dict[str, list] = {rid: [] for rid in questions}
    for rid, q in questions.items():
        engine.add_request(
            chat_request(tokenizer, rid, q, max_tokens=40, logprobs=True, top_logprobs=2)
        )
    while engine.has_work():
        for d in engine.step():
            out[d.request_id].extend(zip(d.token_ids, d.logprobs or [], strict=True))
    return out


@pytest.mark.parametrize("kv_dtype", [torch.bfloat16, torch.float16])
def test_half_precision_kv_cache(make_engine, loaded, kv_dtype):
    """A 16-bit KV pool holds twice the tokens, still answers, and batching changes nothing
    but float rounding: a batched request gets the tokens it gets alone, or parts from them
    only at a near tie (the BLAS library rounds a 1-row product differently from a 4-row one,
    and a 16-bit cache can turn that into a different token where two are all but equal)."""
    _model, tokenizer = loaded
    full = make_engine()
    half = make_engine(kv_dtype=kv_dtype)
    assert half.kv.k.dtype == kv_dtype
    assert len(half.block_manager.blocks) == 2 * len(full.block_manager.blocks)
    questions = {f"r{i}": q for i, q in enumerate(QUESTIONS)}
    batched = _greedy_tokens(half, tokenizer, questions)
    assert "Paris" in tokenizer.decode([t for t, _ in batched["r0"]])
    for rid, q in questions.items():
        alone = _greedy_tokens(make_engine(kv_dtype=kv_dtype), tokenizer, {rid: q})[rid]
        for (tok_b, _), (tok_a, lp_a) in zip(batched[rid], alone, strict=False):
            if tok_b != tok_a:
                (first, _, lp1), (second, _, lp2) = lp_a.top
                assert (first, second) == (tok_a, tok_b), f"{rid}: not the runner-up alone"
                assert lp1 - lp2 < 0.05, f"{rid}: parted at a logprob gap of {lp1 - lp2:.3f}"
                break
        else:
            assert len(batched[rid]) == len(alone)
