"""The engine on a CUDA machine with no network and no model file: numerics and speed.

    python -m benchmarks.engine.gpu_check [--out DIR] [--device cuda] [--smoke]

Builds SmolLM2-135M-Instruct's shapes (embedded below, read from the GGUF) with random
weights, and a byte-level tokenizer of the model's vocabulary size with its special tokens,
end-of-text ids and chat template (the real merges need the file), then:

1. Numerics, float32 on the device: the engine's logits at every prompt position (whole
   prompt, 7-token chunks, one token at a time through the decode path) against transformers'
   ``LlamaForCausalLM`` built from the same weights (Q and K rows moved from the GGUF's
   interleaved rotary layout to transformers' half-split one); 16 greedy tokens of the engine
   against transformers' ``generate``; the engine's outputs batched against one request at a
   time, under preemption (a KV pool too small for the batch) and with aborts in the middle.
   Greedy outputs may part only at a near tie (the two best logprobs within ``TIE``).
2. Speed, bfloat16 on the device: decode tokens/s at 1, 32 and 256 streams (short prompts,
   128 output tokens each) and the mixed workload (prompts of 20-1000 tokens, outputs of
   16-256, 64 requests at once), with transformers' ``generate`` on the same batches beside it
   (static batches, left-padded).

Writes ``gpu_check.json`` and ``gpu_check.md`` to ``--out`` and exits 1 if a numerics check
failed. A budget keeps the whole run under 8 minutes on a GPU. ``--device cpu --smoke`` runs
the same code at tiny sizes in seconds (``tests/serving/engine/test_gpu_check.py``), so it never rots.
"""

from __future__ import annotations

import argparse
import inspect
import json
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from serving.engine.config import EngineConfig
from serving.engine.engine import LLMEngine
from serving.engine.gguf_loader import LlamaConfig, TokenizerData
from serving.engine.model import AttentionMetadata, DecodeGroup, KVCache, LlamaModel, PrefillChunk
from serving.engine.tokenizer import ChatTokenizer
from serving.engine.types import GenerationRequest, SamplingParams

# SmolLM2-135M-Instruct (the GGUF's metadata, read with serving.engine.gguf_loader).
SMOLLM2_135M = LlamaConfig(
    n_layers=30, dim=576, ffn_dim=1536, n_heads=9, n_kv_heads=3, head_dim=64, vocab_size=49152,
    norm_eps=1e-5, rope_base=100000.0, context_length=8192, tied_embeddings=True,
)  # fmt: skip
# The same structure, tiny: for --smoke (CI on a CPU, seconds).
SMOKE = LlamaConfig(
    n_layers=2, dim=192, ffn_dim=384, n_heads=3, n_kv_heads=1, head_dim=64, vocab_size=512,
    norm_eps=1e-5, rope_base=100000.0, context_length=2048, tied_embeddings=True,
)  # fmt: skip
# SmolLM2's tokenizer configuration: its 17 control tokens (ids 0-16), BOS/EOS, no BOS added,
# the digit-splitting "smollm" pre-tokenizer, and its chat template.
SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>", "<file_sep>",
    "<filename>", "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>",
    "<jupyter_start>", "<jupyter_text>", "<jupyter_code>", "<jupyter_output>",
    "<jupyter_script>", "<empty_output>",
]  # fmt: skip
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LOGITS_ATOL = 2e-3  # float32 logits against transformers' (random weights: |logits| ~ 1-5)
LOGPROB_ATOL = 2e-3  # float32 greedy logprobs, batched against alone
TIE = 1e-3  # greedy outputs may part where the two best logprobs are this close
BUDGET_S = 420.0  # the speed part stops adding levels past this (the run stays under 8 min)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


# ---- model and tokenizer without the file --------------------------------------------------


def byte_level_tokenizer(vocab_size: int) -> ChatTokenizer:
    """SmolLM2's special tokens and template over the 256 byte-level symbols (no merges), padded
    with unused tokens to ``vocab_size``: every text encodes, one token a byte."""
    symbols = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1))
    symbols += list(range(0xAE, 0xFF + 1))
    codes, extra = symbols[:], 0
    for b in range(256):  # GPT-2's bytes_to_unicode
        if b not in symbols:
            symbols.append(b)
            codes.append(256 + extra)
            extra += 1
    byte_tokens = [chr(c) for _, c in sorted(zip(symbols, codes, strict=True))]
    tokens = SPECIALS + byte_tokens
    if vocab_size < len(tokens):
        raise ValueError(f"vocab_size {vocab_size} < {len(tokens)} tokens")
    tokens += [f"<unused_{i}>" for i in range(vocab_size - len(tokens))]
    types = [3] * len(SPECIALS) + [1] * (vocab_size - len(SPECIALS))
    data = TokenizerData(model="gpt2", pre="smollm", tokens=tokens, token_types=types, merges=[],
                         bos_id=1, eos_id=2, add_bos=False, chat_template=CHAT_TEMPLATE)  # fmt: skip
    return ChatTokenizer(data)


def random_weights(cfg: LlamaConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """GGUF-named float32 tensors of ``cfg``'s shapes ((out, in) matrices, as the file's)."""
    g = torch.Generator().manual_seed(seed)

    def mat(rows: int, cols: int) -> np.ndarray:
        return (torch.randn(rows, cols, generator=g) * cols**-0.5).numpy()

    def norm() -> np.ndarray:
        return (1.0 + 0.1 * torch.randn(cfg.dim, generator=g)).numpy()

    w = {"token_embd.weight": mat(cfg.vocab_size, cfg.dim), "output_norm.weight": norm()}
    q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    for i in range(cfg.n_layers):
        p = f"blk.{i}."
        w |= {
            p + "attn_norm.weight": norm(), p + "ffn_norm.weight": norm(),
            p + "attn_q.weight": mat(q, cfg.dim), p + "attn_k.weight": mat(kv, cfg.dim),
            p + "attn_v.weight": mat(kv, cfg.dim), p + "attn_output.weight": mat(cfg.dim, q),
            p + "ffn_gate.weight": mat(cfg.ffn_dim, cfg.dim),
            p + "ffn_up.weight": mat(cfg.ffn_dim, cfg.dim),
            p + "ffn_down.weight": mat(cfg.dim, cfg.ffn_dim),
        }  # fmt: skip
    if not cfg.tied_embeddings:
        w["output.weight"] = mat(cfg.vocab_size, cfg.dim)
    return w


def _unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """GGUF (interleaved rotary pairs) back to transformers' half-split rows, per head."""
    half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def reference_model(cfg: LlamaConfig, w: dict[str, np.ndarray], device, dtype):
    """transformers' ``LlamaForCausalLM`` with the same weights."""
    import transformers

    kw = dict(
        vocab_size=cfg.vocab_size, hidden_size=cfg.dim, intermediate_size=cfg.ffn_dim,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads, head_dim=cfg.head_dim, rms_norm_eps=cfg.norm_eps,
        max_position_embeddings=cfg.context_length, tie_word_embeddings=cfg.tied_embeddings,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )  # fmt: skip
    if int(transformers.__version__.split(".")[0]) >= 5:
        kw["rope_parameters"] = {"rope_type": "default", "rope_theta": cfg.rope_base}
    else:
        kw["rope_theta"] = cfg.rope_base
    state = {"model.embed_tokens.weight": w["token_embd.weight"],
             "model.norm.weight": w["output_norm.weight"]}  # fmt: skip
    for i in range(cfg.n_layers):
        p, h = f"blk.{i}.", f"model.layers.{i}."
        state |= {
            h + "self_attn.q_proj.weight": _unpermute(w[p + "attn_q.weight"], cfg.n_heads),
            h + "self_attn.k_proj.weight": _unpermute(w[p + "attn_k.weight"], cfg.n_kv_heads),
            h + "self_attn.v_proj.weight": w[p + "attn_v.weight"],
            h + "self_attn.o_proj.weight": w[p + "attn_output.weight"],
            h + "mlp.gate_proj.weight": w[p + "ffn_gate.weight"],
            h + "mlp.up_proj.weight": w[p + "ffn_up.weight"],
            h + "mlp.down_proj.weight": w[p + "ffn_down.weight"],
            h + "input_layernorm.weight": w[p + "attn_norm.weight"],
            h + "post_attention_layernorm.weight": w[p + "ffn_norm.weight"],
        }
    if not cfg.tied_embeddings:
        state["lm_head.weight"] = w["output.weight"]
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**kw))
    missing, unexpected = model.load_state_dict(
        {k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=False
    )
    if unexpected or not set(missing) <= {"lm_head.weight"}:
        raise RuntimeError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    if cfg.tied_embeddings:
        model.tie_weights()
    return model.to(device=device, dtype=dtype).eval()


def our_model(cfg: LlamaConfig, w: dict[str, np.ndarray], device, dtype) -> LlamaModel:
    """The engine's model, every weight dense in ``dtype`` (where the model takes a format)."""
    if "weight_format" not in inspect.signature(LlamaModel).parameters:
        return LlamaModel(cfg, w, device, dtype)
    fmt = "float32" if dtype == torch.float32 else "bfloat16"
    return LlamaModel(cfg, w, device, dtype, weight_format=fmt)


# ---- numerics ------------------------------------------------------------------------------


def paged_logits(model: LlamaModel, ids: list[int], chunk: int, seed: int = 0) -> torch.Tensor:
    """Logits at every position, the prompt fed ``chunk`` tokens a step through a paged pool
    (blocks scattered over it); one-token steps take the decode path (a decode group on CUDA,
    the native kernel on a CPU that has it)."""
    from serving.engine.model import DecodeTables

    bs, dev = 16, model.device
    n_blocks = -(-len(ids) // bs) + 1
    kv = KVCache(model.cfg, 2 * n_blocks, bs, dev, model.dtype)
    table = torch.randperm(2 * n_blocks, generator=torch.Generator().manual_seed(seed))[:n_blocks]
    slot = (table.unsqueeze(1) * bs + torch.arange(bs)).flatten().to(dev)
    out = []
    for start in range(0, len(ids), chunk):
        end = min(len(ids), start + chunk)
        meta = AttentionMetadata(slot_mapping=slot[start:end])
        if end - start == 1 and model.ops is not None:
            used = -(-end // bs)
            meta.decode_tables = DecodeTables(
                table[:used].view(1, -1).int(), torch.tensor([end], dtype=torch.int32)
            )
        elif end - start == 1:
            meta.decode_groups.append(
                DecodeGroup(
                    rows=torch.tensor([0], device=dev),
                    slots=slot[:end].view(1, -1),
                    mask=torch.ones(1, 1, 1, end, dtype=torch.bool, device=dev),
                )
            )
        else:
            chunk_ = PrefillChunk(0, end - start, slot[:end], torch.arange(start, end, device=dev))
            meta.prefills.append(chunk_)
        hidden = model.forward(
            torch.tensor(ids[start:end], device=dev), torch.arange(start, end, device=dev), meta, kv
        )
        out.append(model.logits(hidden).float().cpu())
    return torch.cat(out)


def prompts(tok: ChatTokenizer, lengths: list[int], seed: int) -> list[list[int]]:
    """Chat prompts of about ``lengths`` tokens (byte-level: one token a byte)."""
    rng = random.Random(seed)
    words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "near", "42",
             "quiet", "rivers,", "7", "bells"]  # fmt: skip
    out = []
    for n in lengths:
        text = " ".join(rng.choice(words) for _ in range(max(1, n // 5)))
        out.append(tok.encode(tok.apply_chat_template([{"role": "user", "content": text}])))
    return out


def run_engine(engine: LLMEngine, reqs: list[GenerationRequest], abort_after: dict[str, int] | None = None) -> dict[str, list]:  # fmt: skip
    """Run ``reqs`` together; (token, logprob, top-2 gap) per output token, per request.
    ``abort_after``: request id -> the step after which it is aborted."""
    got: dict[str, list] = {r.request_id: [] for r in reqs}
    for r in reqs:
        engine.add_request(r)
    steps = 0
    while engine.has_work():
        for d in engine.step():
            for lp in d.logprobs or []:
                gap = lp.top[0][2] - lp.top[1][2] if len(lp.top) > 1 else float("inf")
                got[d.request_id].append((lp.token_id, lp.logprob, gap))
        steps += 1
        for rid, at in (abort_after or {}).items():
            if at == steps:
                engine.abort(rid)
    return got


def same_greedy(want: list, got: list, n: int | None = None) -> tuple[bool, str]:
    """Greedy outputs agree: the same tokens (logprobs within ``LOGPROB_ATOL``) up to ``n`` or
    the shorter, or parting only at a near tie of ``want``'s two best."""
    n = min(len(want), len(got)) if n is None else n
    for i in range(n):
        if i >= len(want) or i >= len(got):
            return False, f"one output ends at {i}"
        (tw, lw, gap), (tg, lg, _) = want[i], got[i]
        if tw != tg:
            if gap < TIE:
                return True, f"parted at a near tie (token {i}, gap {gap:.1e})"
            return False, f"token {i}: {tg} instead of {tw} (gap {gap:.3f})"
        if abs(lw - lg) > LOGPROB_ATOL:
            return False, f"token {i}: logprob {lg:.5f} against {lw:.5f}"
    return True, "same"


def numerics(cfg: LlamaConfig, w, tok: ChatTokenizer, device, smoke: bool) -> list[Check]:
    checks: list[Check] = []
    ours = our_model(cfg, w, device, torch.float32)
    ref = reference_model(cfg, w, device, torch.float32)
    lengths = [20, 50] if smoke else [37, 120, 300]
    ps = prompts(tok, lengths, seed=1)
    worst = 0.0
    ok = True
    for ids in ps:
        with torch.inference_mode():
            want = ref(torch.tensor([ids], device=device)).logits[0].float().cpu()
        for chunk in (len(ids), 7, 1):
            diff = (paged_logits(ours, ids, chunk) - want).abs().max().item()
            worst = max(worst, diff)
            ok &= diff <= LOGITS_ATOL
    checks.append(Check("logits vs transformers (whole, 7-token chunks, one by one)", ok,
                        f"max abs diff {worst:.2e} over {sum(map(len, ps))} positions x 3 "
                        f"(tolerance {LOGITS_ATOL}, logits up to {want.abs().max():.1f})"))  # fmt: skip

    params = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True, logprobs=True,
                            top_logprobs=2)  # fmt: skip
    engine = LLMEngine(
        ours, tok, model_name="gpu-check", config=EngineConfig(kv_cache_bytes=256 << 20)
    )
    got = run_engine(engine, [GenerationRequest(f"p{i}", ids, params, cache_salt="g")
                              for i, ids in enumerate(ps)])  # fmt: skip
    ok, notes = True, []
    for i, ids in enumerate(ps):
        with torch.inference_mode():
            out = ref.generate(
                torch.tensor([ids], device=device), attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=device),
                max_new_tokens=16, do_sample=False, output_scores=True, return_dict_in_generate=True,
                eos_token_id=None, pad_token_id=0,
            )  # fmt: skip
        want = []
        for s, t in zip(out.scores, out.sequences[0, len(ids) :].tolist(), strict=True):
            lp = F.log_softmax(s[0].float(), -1)
            top2 = lp.topk(2).values
            want.append((t, lp[t].item(), (top2[0] - top2[1]).item()))
        same, note = same_greedy(want, got[f"p{i}"], 16)
        ok &= same
        notes.append(note)
    checks.append(Check("16 greedy tokens vs transformers generate", ok, "; ".join(notes)))

    # Batched against one at a time, under preemption, with aborts.
    lengths = [20, 60, 33, 150, 8, 90, 45, 120] if not smoke else [12, 40, 25, 30]
    ps = prompts(tok, lengths, seed=2)
    params = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True, logprobs=True,
                            top_logprobs=2)  # fmt: skip

    def reqs(tag: str) -> list[GenerationRequest]:
        return [GenerationRequest(f"q{i}", ids, params, cache_salt=tag) for i, ids in enumerate(ps)]

    alone = {}
    for r in reqs("alone"):
        alone |= run_engine(LLMEngine(ours, tok, model_name="gpu-check", config=EngineConfig(kv_cache_bytes=64 << 20)), [r])  # fmt: skip
    batched = run_engine(LLMEngine(ours, tok, model_name="gpu-check", config=EngineConfig(kv_cache_bytes=256 << 20)), reqs("batch"))  # fmt: skip
    results = [same_greedy(alone[k], batched[k], 24) for k in alone]
    checks.append(Check("batched vs one at a time", all(r[0] for r in results),
                        "; ".join(sorted({r[1] for r in results}))))  # fmt: skip

    # A pool with room for about a third of the batch's blocks: sequences are preempted and
    # recomputed.
    need = sum(-(-(len(ids) + 24) // 16) for ids in ps)
    per_block = KVCache.bytes_per_token(cfg, torch.float32) * 16
    small = LLMEngine(ours, tok, model_name="gpu-check", config=EngineConfig(kv_cache_bytes=per_block * max(need // 3, max(-(-(len(i) + 24) // 16) for i in ps))))  # fmt: skip
    pre = run_engine(small, reqs("preempt"))
    results = [same_greedy(alone[k], pre[k], 24) for k in alone]
    preempted = small.scheduler.preemptions
    checks.append(Check("under preemption vs one at a time",
                        preempted > 0 and all(r[0] for r in results),
                        f"{preempted} preemptions; " + "; ".join(sorted({r[1] for r in results}))))  # fmt: skip

    engine = LLMEngine(
        ours, tok, model_name="gpu-check", config=EngineConfig(kv_cache_bytes=256 << 20)
    )
    aborted = {f"q{i}": 3 + i for i in range(0, len(ps), 2)}
    got = run_engine(engine, reqs("abort"), aborted)
    results = [same_greedy(alone[k], got[k], 24) for k in alone if k not in aborted]
    results += [same_greedy(alone[k], got[k]) for k in aborted]  # their tokens so far
    bm = engine.block_manager
    clean = bm.num_free == len(bm.blocks) and not engine.has_work()
    cut = all(len(got[k]) < 24 for k in aborted)
    checks.append(Check("aborts in the middle of a batch", clean and cut and all(r[0] for r in results),
                        f"{len(aborted)} aborted (outputs cut: {cut}), blocks all free after: {clean}; "
                        + "; ".join(sorted({r[1] for r in results}))))  # fmt: skip
    del ref
    return checks


# ---- speed ---------------------------------------------------------------------------------


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def engine_speed(engine: LLMEngine, batch: list[list[int]], outs: list[int], device) -> dict:
    """All requests at once; output tok/s overall and over decode-only steps."""
    for i, (ids, n) in enumerate(zip(batch, outs, strict=True)):
        engine.add_request(GenerationRequest(f"s{i}-{time.monotonic_ns()}", ids,
                           SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True),
                           cache_salt=str(time.monotonic_ns())))  # fmt: skip
    tokens = decode_tokens = 0
    decode_s = 0.0
    start = time.perf_counter()
    while engine.has_work():
        t0 = time.perf_counter()
        running_prefill = any(s.num_tokens - s.num_computed > 1 for s in engine.scheduler.running)
        deltas = engine.step()
        sync(device)
        dt = time.perf_counter() - t0
        n = sum(len(d.token_ids) for d in deltas)
        tokens += n
        if not running_prefill and not engine.scheduler.num_waiting:
            decode_s += dt
            decode_tokens += n
    seconds = time.perf_counter() - start
    return {"output_tokens": tokens, "seconds": round(seconds, 3),
            "tok_s": round(tokens / seconds, 1),
            "decode_tok_s": round(decode_tokens / decode_s, 1) if decode_s else None}  # fmt: skip


def hf_speed(ref, batch: list[list[int]], outs: list[int], device, wave: int) -> dict:
    """transformers ``generate``, static left-padded batches of ``wave``; only each request's
    own tokens count."""
    tokens = 0
    start = time.perf_counter()
    for a in range(0, len(batch), wave):
        ids, ns = batch[a : a + wave], outs[a : a + wave]
        width = max(map(len, ids))
        x = torch.tensor([[0] * (width - len(i)) + i for i in ids], device=device)
        mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids], device=device)
        with torch.inference_mode():
            ref.generate(x, attention_mask=mask, max_new_tokens=max(ns), min_new_tokens=max(ns),
                         do_sample=False, eos_token_id=None, pad_token_id=0)  # fmt: skip
        sync(device)
        tokens += sum(ns)
    seconds = time.perf_counter() - start
    return {"output_tokens": tokens, "seconds": round(seconds, 3),
            "tok_s": round(tokens / seconds, 1)}  # fmt: skip


def speed(cfg: LlamaConfig, w, tok: ChatTokenizer, device, smoke: bool, started: float) -> list[dict]:  # fmt: skip
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    ours = our_model(cfg, w, device, dtype)
    ref = reference_model(cfg, w, device, dtype)
    levels = [1, 4] if smoke else [1, 32, 256]
    out_len = 8 if smoke else 128
    rows = []
    config = EngineConfig(max_num_seqs=max(levels + [64]),
                          max_num_batched_tokens=2048 if not smoke else 256,
                          kv_cache_bytes=None if device.type == "cuda" else 64 << 20)  # fmt: skip
    engine = LLMEngine(ours, tok, model_name="gpu-check", config=config)
    engine.warm_up()
    rng = random.Random(3)
    for n in levels:
        if time.perf_counter() - started > BUDGET_S:
            rows.append({"workload": f"{n} streams", "skipped": "over the time budget"})
            continue
        batch = prompts(tok, [rng.randint(20, 60) for _ in range(n)], seed=n)
        outs = [out_len] * n
        rows.append({"workload": f"{n} streams x {out_len} tokens",
                     "switchyard": engine_speed(engine, batch, outs, device),
                     "transformers": hf_speed(ref, batch, outs, device, wave=n)})  # fmt: skip
    if time.perf_counter() - started <= BUDGET_S:
        n = 8 if smoke else 64
        batch = prompts(tok, [rng.randint(20, 100 if smoke else 1000) for _ in range(n)], seed=7)
        outs = [rng.randint(4 if smoke else 16, 16 if smoke else 256) for _ in range(n)]
        rows.append({"workload": f"mixed, {n} requests at once",
                     "switchyard": engine_speed(engine, batch, outs, device),
                     "transformers": hf_speed(ref, batch, outs, device, wave=min(n, 32))})  # fmt: skip
    return rows


# ---- report --------------------------------------------------------------------------------


def describe(device) -> str:
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"{p.name} ({p.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def markdown(report: dict) -> str:
    lines = [f"# Engine GPU check ({report['mode']})", "",
             f"Device: {report['device']}; torch {report['torch']}, transformers "
             f"{report['transformers']}; {report['seconds']:.0f} s.", "",
             "| numerics check (float32) | ok | detail |", "|---|---|---|"]  # fmt: skip
    for c in report["checks"]:
        lines.append(f"| {c['name']} | {'yes' if c['ok'] else '**NO**'} | {c['detail']} |")
    lines += ["", f"| workload ({report['speed_dtype']}) | Switchyard tok/s | Switchyard decode "
              "tok/s | transformers generate tok/s | ratio |", "|---|---|---|---|---|"]  # fmt: skip
    for r in report["speed"]:
        if "skipped" in r:
            lines.append(f"| {r['workload']} | skipped: {r['skipped']} | | | |")
            continue
        s, h = r["switchyard"], r["transformers"]
        lines.append(f"| {r['workload']} | {s['tok_s']} | {s['decode_tok_s']} | {h['tok_s']} | "
                     f"{s['tok_s'] / h['tok_s']:.2f}x |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (CI on a CPU, seconds)")
    ap.add_argument("--out", default=".", help="folder for gpu_check.json and gpu_check.md")
    ap.add_argument("--skip-speed", action="store_true")
    a = ap.parse_args(argv)
    started = time.perf_counter()
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here (use --device cpu --smoke for the CPU smoke run)")
        return 2
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 for the numerics
        torch.backends.cudnn.allow_tf32 = False
    elif a.smoke:
        torch.set_num_threads(1)  # tiny products: threads only contend on a shared CI machine
    import transformers

    cfg = SMOKE if a.smoke else SMOLLM2_135M
    tok = byte_level_tokenizer(cfg.vocab_size)
    w = random_weights(cfg)
    checks = numerics(cfg, w, tok, device, a.smoke)
    for c in checks:
        print(f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}", flush=True)
    rows = [] if a.skip_speed else speed(cfg, w, tok, device, a.smoke, started)
    report = {
        "mode": "smoke" if a.smoke else "full", "device": describe(device),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "python": sys.version.split()[0], "config": asdict(cfg),
        "speed_dtype": "bfloat16" if device.type == "cuda" else "float32",
        "checks": [asdict(c) for c in checks], "speed": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    (out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    return 0 if all(c.ok for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
