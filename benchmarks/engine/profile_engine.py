"""In-process engine throughput and per-step profile (no HTTP), for finding where time goes.

    python -m benchmarks.engine.profile_engine [--streams 1 32] [--requests N] [--profile]
        [--decode-only] [--kv-mb 1024]

Workload like ``run_all.py``: prompts of 20-1000 words from a small vocabulary (about a token
a word), outputs of 16-256 tokens, greedy, ``ignore_eos`` so every run makes the same tokens.
``--decode-only`` gives every request a short prompt and a long output instead, to time the
decode loop alone. For each stream count it keeps ``streams`` requests in flight (a new one
is added as one finishes) and prints output tokens/s, total tokens/s and the mean step time by
kind (decode-only steps vs steps that carry prefill). ``--profile`` also prints the torch
profiler's top operators for a few steady decode steps.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

import torch

from benchmarks.engine.run_all import WORDS
from serving.engine.config import EngineConfig
from serving.engine.engine import LLMEngine
from serving.engine.types import GenerationRequest, SamplingParams


def workload(engine: LLMEngine, n: int, seed: int, decode_only: bool) -> list[GenerationRequest]:
    """``n`` requests with prompt lengths 20-1000 words and outputs of 16-256 tokens."""
    rng = random.Random(seed)
    reqs = []
    for i in range(n):
        words = rng.randint(20, 40) if decode_only else rng.randint(20, 1000)
        out = 256 if decode_only else rng.randint(16, 256)
        text = f"Run {seed}-{i}. " + " ".join(rng.choice(WORDS) for _ in range(words))
        ids = engine.tokenizer.encode(text)
        params = SamplingParams(temperature=0.0, max_tokens=out, ignore_eos=True)
        reqs.append(GenerationRequest(f"r{seed}-{i}", ids, params))
    return reqs


def run(engine: LLMEngine, reqs: list[GenerationRequest], streams: int) -> dict[str, float]:
    """Keep ``streams`` requests in flight until all are done; timings in seconds."""
    pending = list(reqs)
    open_ids: set[str] = set()
    out_tokens = 0
    prompt_tokens = sum(len(r.prompt_token_ids) for r in reqs)
    decode_steps: list[float] = []
    mixed_steps: list[float] = []
    batch_sizes: list[int] = []
    t0 = time.perf_counter()
    while pending or open_ids:
        while pending and len(open_ids) < streams:
            r = pending.pop(0)
            engine.add_request(r)
            open_ids.add(r.request_id)
        waiting_prefill = any(
            s.num_tokens - s.num_computed > 1 for s in engine.scheduler.running
        ) or bool(engine.scheduler.num_waiting)
        ts = time.perf_counter()
        deltas = engine.step()
        dt = time.perf_counter() - ts
        (mixed_steps if waiting_prefill else decode_steps).append(dt)
        if not waiting_prefill:
            batch_sizes.append(len(deltas))
        for d in deltas:
            out_tokens += len(d.token_ids)
            if d.finish_reason is not None:
                open_ids.discard(d.request_id)
    wall = time.perf_counter() - t0
    return {
        "wall": wall,
        "out_tokens": out_tokens,
        "out_tps": out_tokens / wall,
        "total_tps": (out_tokens + prompt_tokens) / wall,
        "prompt_tokens": prompt_tokens,
        "decode_step_ms": 1e3 * statistics.mean(decode_steps) if decode_steps else 0.0,
        "decode_batch": statistics.mean(batch_sizes) if batch_sizes else 0.0,
        "decode_steps": len(decode_steps),
        "mixed_step_ms": 1e3 * statistics.mean(mixed_steps) if mixed_steps else 0.0,
        "mixed_steps": len(mixed_steps),
    }


def profile_decode(engine: LLMEngine, streams: int) -> None:
    """torch.profiler over 5 decode steps at ``streams`` sequences of ~300 tokens."""
    from torch.profiler import ProfilerActivity, profile

    for r in workload(engine, streams, 99, decode_only=True):
        r.prompt_token_ids = (r.prompt_token_ids * 10)[:300]
        engine.add_request(r)
    while engine.scheduler.num_waiting or any(
        s.num_tokens - s.num_computed > 1 for s in engine.scheduler.running
    ):
        engine.step()
    for _ in range(3):
        engine.step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            engine.step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))
    for r in list(engine._requests):
        engine.abort(r)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--requests", type=int, default=0, help="default: max(4, 2 x streams)")
    ap.add_argument("--kv-mb", type=int, default=1024)
    ap.add_argument("--max-num-batched-tokens", type=int, default=512)
    ap.add_argument("--decode-only", action="store_true")
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    t = time.perf_counter()
    engine = LLMEngine.from_model(
        a.model,
        EngineConfig(kv_cache_bytes=a.kv_mb << 20, max_num_batched_tokens=a.max_num_batched_tokens),
    )
    print(f"loaded in {time.perf_counter() - t:.1f}s on {engine.model.device}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    run(engine, workload(engine, 2, 0, True)[:2], 2)  # warm up
    print(
        "streams | requests | out tok | prompt tok | wall s | out tok/s | all tok/s | "
        "decode step ms (batch, n) | prefill step ms (n)"
    )
    for s in a.streams:
        n = a.requests or max(4, 2 * s)
        r = run(engine, workload(engine, n, s, a.decode_only), s)
        print(
            f"{s:7d} | {n:8d} | {r['out_tokens']:7d} | {r['prompt_tokens']:10d} | "
            f"{r['wall']:6.1f} | {r['out_tps']:9.1f} | {r['total_tps']:9.1f} | "
            f"{r['decode_step_ms']:6.1f} ({r['decode_batch']:.1f}, {r['decode_steps']}) | "
            f"{r['mixed_step_ms']:6.1f} ({r['mixed_steps']})"
        )
    if a.profile:
        for s in a.streams:
            print(f"\n== torch.profiler, decode at {s} streams ==")
            profile_decode(engine, s)


if __name__ == "__main__":
    main()
