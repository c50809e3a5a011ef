"""The engine's numbers against transformers' ``LlamaForCausalLM`` (float32) on the same GGUF.

The reference is built from the file's tensors dequantized by ``gguf`` (the same values
transformers' own GGUF loader produces, which takes minutes here), with Q and K rows put back
from the GGUF's interleaved rotary layout into transformers' half-split one, and the file's
hyper-parameters. Our side runs through the paged KV pool: the whole prompt in one chunk,
7-token chunks over a scattered block table, one token at a time (the decode kernel), and 32
greedy steps of the real engine.

- ``float32`` weights: the same function as the reference up to float rounding. Logits agree
  within ``FLOAT_ATOL`` at every position (measured: at most 8.3e-5 on logits up to ~38, in
  every chunking) and the 32 greedy tokens and their logprobs are the reference's.
- ``quantized`` weights (int4 products with bfloat16 scales, zero points and activations; the
  Q8_0 LM head exact in float32): a slightly different function. Measured over the 378 prompt
  positions below (each prompt whole and in 7-token chunks): the argmax agrees at 99.2% of
  positions, KL(reference || ours) is 0.0007 nats on average and 0.019 at most
  (docs/engine.md, "Weights"). The bounds leave about 5x room for other CPUs' rounding, not for
  a wrong layout or scale: the zero points off by the 8-code offset fail them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from serving.engine.config import EngineConfig
from serving.engine.engine import LLMEngine
from serving.engine.model import (
    AttentionMetadata,
    DecodeTables,
    KVCache,
    LlamaModel,
    PrefillChunk,
)
from serving.engine.quant import Int4Linear, as_float32
from serving.engine.types import GenerationRequest, SamplingParams
from tests.serving.engine.conftest import MODEL

transformers = pytest.importorskip("transformers")

FLOAT_ATOL = 1e-3  # logits (magnitude up to ~38); measured at most 8.3e-5
QUANT_MIN_TOP1 = 0.97  # share of positions whose argmax agrees; measured 0.992 (375 of 378)
QUANT_MAX_MEAN_KL = 0.005  # nats; measured 0.0007
QUANT_MAX_KL = 0.1  # nats, at any one position; measured 0.019

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Fix this code:\n\n```python\ndef add(a, b):\n    return a - b\n"
                                 "print(add(2, 3))  # should print 5\n```"}],
    [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "Why is the sky blue? The sun's white light hits air "
                                    "molecules, and short wavelengths scatter more (Rayleigh "
                                    "scattering, about 1/wavelength^4), so blue light comes "
                                    "from every direction of the sky while red goes straight "
                                    "through; at sunset the path is 40x longer."},
    ],
]  # fmt: skip


def _unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """GGUF (interleaved rotary pairs) back to transformers' half-split rows, per head."""
    half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def reference_model(gguf) -> transformers.LlamaForCausalLM:
    c = gguf.config
    config = transformers.LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.dim, intermediate_size=c.ffn_dim,
        num_hidden_layers=c.n_layers, num_attention_heads=c.n_heads,
        num_key_value_heads=c.n_kv_heads, head_dim=c.head_dim, rms_norm_eps=c.norm_eps,
        rope_theta=c.rope_base,
        max_position_embeddings=c.context_length, tie_word_embeddings=c.tied_embeddings,
        bos_token_id=gguf.tokenizer.bos_id, eos_token_id=gguf.tokenizer.eos_id,
    )  # fmt: skip
    w = {k: as_float32(v) for k, v in gguf.weights.items()}
    state = {"model.embed_tokens.weight": w["token_embd.weight"],
             "model.norm.weight": w["output_norm.weight"]}  # fmt: skip
    for i in range(c.n_layers):
        p, h = f"blk.{i}.", f"model.layers.{i}."
        state |= {
            h + "self_attn.q_proj.weight": _unpermute(w[p + "attn_q.weight"], c.n_heads),
            h + "self_attn.k_proj.weight": _unpermute(w[p + "attn_k.weight"], c.n_kv_heads),
            h + "self_attn.v_proj.weight": w[p + "attn_v.weight"],
            h + "self_attn.o_proj.weight": w[p + "attn_output.weight"],
            h + "mlp.gate_proj.weight": w[p + "ffn_gate.weight"],
            h + "mlp.up_proj.weight": w[p + "ffn_up.weight"],
            h + "mlp.down_proj.weight": w[p + "ffn_down.weight"],
            h + "input_layernorm.weight": w[p + "attn_norm.weight"],
            h + "post_attention_layernorm.weight": w[p + "ffn_norm.weight"],
        }
    with torch.device("meta"):  # no random initialisation of weights about to be replaced
        model = transformers.LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(
        {k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=False, assign=True
    )
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    model.tie_weights()  # the LM head is the embedding
    # Buffers computed at construction (the rotary frequencies) were made on "meta" too.
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)
    assert all(t.device.type == "cpu" for t in [*model.parameters(), *model.buffers()])
    assert model.lm_head.weight is model.model.embed_tokens.weight
    return model.eval()


@pytest.fixture(scope="module")
def models(loaded, loaded_float32, gguf_file):
    """(reference, ours with float32 weights, ours with quantized weights, tokenizer)."""
    gguf = gguf_file
    quantized = loaded[0]
    if quantized.weight_format != "quantized":  # SWITCHYARD_ENGINE_WEIGHTS chose another
        cpu = torch.device("cpu")
        quantized = LlamaModel(gguf.config, gguf.weights, cpu, torch.float32, "quantized")
    return reference_model(gguf), loaded_float32[0], quantized, loaded[1]


@pytest.fixture(scope="module")
def prompts(models):
    tok = models[3]
    return [tok.encode(tok.apply_chat_template(m)) for m in PROMPTS]


@torch.inference_mode()
def reference_logits(ref, ids: list[int]) -> torch.Tensor:
    return ref(torch.tensor([ids])).logits[0].float()


def paged_logits(model: LlamaModel, ids: list[int], chunk: int, seed: int = 0) -> torch.Tensor:
    """Logits at every position, the prompt fed ``chunk`` tokens a step through the paged pool
    (blocks scattered over it); one-token steps take the decode path."""
    block_size = 16
    kv = KVCache(model.cfg, 64, block_size, model.device, model.dtype)
    table = torch.randperm(64, generator=torch.Generator().manual_seed(seed))
    slot = (table.unsqueeze(1) * block_size + torch.arange(block_size)).flatten()
    out = []
    for start in range(0, len(ids), chunk):
        end = min(len(ids), start + chunk)
        meta = AttentionMetadata(slot_mapping=slot[start:end])
        if end - start == 1 and model.ops is not None:
            n_blocks = -(-end // block_size)
            meta.decode_tables = DecodeTables(
                table[:n_blocks].view(1, -1).int(), torch.tensor([end], dtype=torch.int32)
            )
        else:
            meta.prefills.append(PrefillChunk(0, end - start, slot[:end], torch.arange(start, end)))
        hidden = model.forward(torch.tensor(ids[start:end]), torch.arange(start, end), meta, kv)
        out.append(model.logits(hidden))
    return torch.cat(out)


@pytest.mark.parametrize("chunk", [0, 7, 1], ids=["whole", "chunks-of-7", "one-by-one"])
def test_float_weights_give_the_references_logits(models, prompts, chunk):
    ref, ours, _, _ = models
    for ids in prompts:
        want = reference_logits(ref, ids)
        got = paged_logits(ours, ids, chunk or len(ids))
        torch.testing.assert_close(got, want, atol=FLOAT_ATOL, rtol=0)


def test_float_weights_greedy_32_steps_are_the_references(models, prompts):
    """The engine's 32 greedy tokens (ignore_eos) and their logprobs match transformers'
    ``generate`` (cached decode) on every prompt, batched together."""
    ref, ours, _, tok = models
    engine = LLMEngine(ours, tok, model_name=MODEL, config=EngineConfig(kv_cache_bytes=64 << 20))
    params = SamplingParams(
        temperature=0.0, max_tokens=32, ignore_eos=True, logprobs=True, top_logprobs=1
    )
    got: dict[str, list] = {f"p{i}": [] for i in range(len(prompts))}
    for i, ids in enumerate(prompts):
        engine.add_request(GenerationRequest(f"p{i}", ids, params))
    while engine.has_work():
        for d in engine.step():
            got[d.request_id].extend(zip(d.token_ids, d.logprobs or [], strict=True))
    for i, ids in enumerate(prompts):
        with torch.inference_mode():
            out = ref.generate(
                torch.tensor([ids]), max_new_tokens=32, do_sample=False, output_scores=True,
                return_dict_in_generate=True, eos_token_id=None, pad_token_id=0,
            )  # fmt: skip
        want_tokens = out.sequences[0, len(ids) :].tolist()
        assert [t for t, _ in got[f"p{i}"]] == want_tokens
        want_lp = [F.log_softmax(s[0].float(), -1)[t].item() for s, t in zip(out.scores, want_tokens, strict=True)]  # fmt: skip
        got_lp = [lp.logprob for _, lp in got[f"p{i}"]]
        np.testing.assert_allclose(got_lp, want_lp, atol=FLOAT_ATOL)


def kl_and_top1(want: torch.Tensor, got: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position: KL(reference || ours) in nats, and whether the argmax agrees."""
    lp_want, lp_got = F.log_softmax(want, -1), F.log_softmax(got, -1)
    kl = (lp_want.exp() * (lp_want - lp_got)).sum(-1)
    return kl, want.argmax(-1) == got.argmax(-1)


def test_quantized_weights_stay_close_to_the_dequantized_reference(models, prompts):
    ref, _, ours, _ = models
    kls, agree = [], []
    for ids in prompts:
        want = reference_logits(ref, ids)
        for chunk in (len(ids), 7):
            kl, top1 = kl_and_top1(want, paged_logits(ours, ids, chunk))
            kls.append(kl)
            agree.append(top1)
    kl, top1 = torch.cat(kls), torch.cat(agree).float()
    print(f"quantized vs reference over {len(top1)} positions: top-1 {top1.mean():.3f}, "
          f"KL mean {kl.mean():.4f} max {kl.max():.4f}")  # fmt: skip
    assert top1.mean() >= QUANT_MIN_TOP1, f"top-1 agreement {top1.mean():.3f}"
    assert kl.mean() <= QUANT_MAX_MEAN_KL, f"mean KL {kl.mean():.4f}"
    assert kl.max() <= QUANT_MAX_KL, f"max KL {kl.max():.4f}"


def test_a_forgotten_offset_is_caught(models, prompts):
    """The bounds above can fail: the same int4 products with the zero point off by the
    8-code offset (``zero = m`` instead of ``m + 8d``, a plausible slip) fall outside them."""
    ref, _, ours, _ = models
    linears = [lin for lin in ours.linears() if isinstance(lin, Int4Linear)]
    saved = [lin.scales_zeros.clone() for lin in linears]
    try:
        for lin in linears:
            lin.scales_zeros[..., 1] -= 8 * lin.scales_zeros[..., 0]
        ids = prompts[0]
        kl, top1 = kl_and_top1(reference_logits(ref, ids), paged_logits(ours, ids, len(ids)))
    finally:
        for lin, sz in zip(linears, saved, strict=True):
            lin.scales_zeros.copy_(sz)
    assert kl.mean() > QUANT_MAX_MEAN_KL and top1.float().mean() < QUANT_MIN_TOP1
