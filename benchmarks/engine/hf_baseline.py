"""Hugging Face ``transformers`` generate on the engine's own GGUF: the benchmark's baseline row.

``run_hf`` (called by ``run_all``) starts this module in its own process, so the model's
memory and torch's threads stay out of the benchmark client, and hands it each level's
requests on stdin. The child loads the same GGUF the engine serves
(``AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)``: transformers dequantizes the
Q4_1 weights to float32; nothing is downloaded), uses ``run_all.THREADS`` torch threads, and
serves a level of N streams the way plain ``generate`` serves concurrent requests: static,
left-padded batches of N (in arrival order), greedy, every request in a wave run for the
wave's largest ``max_tokens`` (``min_new_tokens`` too, so EOS cannot end it early, as
``ignore_eos`` does for the servers). Only each request's own ``max_tokens`` count as output;
the extra steps a short request is padded to are the waste static batching costs.

Per request, timed like ``run_all.run_static`` times its waves (from the moment the wave
starts, which includes its chat-template tokenization): TTFT is when the wave's first token
came out (every request in a wave gets it at once) and latency is when the request's own
``max_tokens``-th token came out, from a StoppingCriteria that timestamps every step. One JSON
line per level comes back on stdout, then one with the child's peak RSS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_transformers(model: str = "smollm2-135m-instruct"):
    """(tokenizer, LlamaForCausalLM in float32) from the engine's own GGUF, offline: what
    transformers makes of the file (it dequantizes the weights and undoes the GGUF's
    interleaved RoPE layout of Q and K). Also the reference of tests/serving/engine/test_numerics.py."""
    import torch
    import transformers
    import transformers.modeling_utils as modeling_utils
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from serving.engine.registry import resolve

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    gguf = resolve(model)[1]
    kw = {"gguf_file": gguf.name, "local_files_only": True}
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kw)
    # from_pretrained refuses a gguf_file unless `accelerate` is importable, but only uses it
    # for a device_map (none here). The project does not depend on accelerate, so lift that
    # one check for this call when it is missing rather than add a dependency for a baseline.
    real = modeling_utils.is_accelerate_available
    try:
        modeling_utils.is_accelerate_available = lambda: True
        hf = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kw)
    finally:
        modeling_utils.is_accelerate_available = real
    hf.eval()
    return tokenizer, hf


def _load(threads: int):
    import torch

    torch.set_num_threads(threads)
    tokenizer, model = load_transformers()
    tokenizer.padding_side = "left"
    return torch, tokenizer, model


def _serve_level(torch, tokenizer, model, reqs: list[tuple[str, int]], n: int) -> dict:
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StepClock(StoppingCriteria):
        """Called once per generated token, right after it is appended: records the time."""

        def __init__(self) -> None:
            self.times: list[float] = []

        def __call__(self, input_ids, scores, **kwargs):
            self.times.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    tokens, ttfts, latencies = 0, [], []
    start = time.perf_counter()
    for i in range(0, len(reqs), n):
        wave = reqs[i : i + n]
        wave_start = time.perf_counter()
        enc = tokenizer.apply_chat_template(
            [[{"role": "user", "content": prompt}] for prompt, _ in wave],
            add_generation_prompt=True, padding=True, return_tensors="pt", return_dict=True,
        )  # fmt: skip
        steps = max(m for _, m in wave)
        clock = StepClock()
        with torch.inference_mode():
            out = model.generate(
                **enc, do_sample=False, max_new_tokens=steps, min_new_tokens=steps,
                pad_token_id=tokenizer.pad_token_id, stopping_criteria=StoppingCriteriaList([clock]),
            )  # fmt: skip
        made = out.shape[1] - enc["input_ids"].shape[1]
        if made != steps or len(clock.times) != steps:
            raise RuntimeError(f"wave made {made} tokens ({len(clock.times)} steps), want {steps}")
        for _, m in wave:
            tokens += m
            ttfts.append(clock.times[0] - wave_start)
            latencies.append(clock.times[m - 1] - wave_start)
    seconds = time.perf_counter() - start
    return {"tokens": tokens, "seconds": seconds, "ttfts": ttfts, "latencies": latencies}


def child_main() -> None:
    """Read {"threads": T, "levels": [[N, [[prompt, max_tokens], ...]], ...]} on stdin; write
    one JSON line per level, then {"peak_rss_mb": ...}, on stdout."""
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything else printed (by torch, transformers) goes to stderr
    job = json.load(sys.stdin)
    t = time.perf_counter()
    torch, tokenizer, model = _load(job["threads"])
    print(f"transformers: loaded in {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
    if job.get("warmup"):
        _serve_level(torch, tokenizer, model, job["warmup"], len(job["warmup"]))
    for n, reqs in job["levels"]:
        result = _serve_level(torch, tokenizer, model, reqs, n)
        out.write(json.dumps({"level": n, **result}) + "\n")
        out.flush()
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    out.write(json.dumps({"peak_rss_mb": peak}) + "\n")
    out.flush()


def run_hf(levels: dict[int, list], threads: int, warmup: list | None = None) -> Iterator:
    """Serve each level's requests (``run_all.Req``) with transformers generate in a child
    process; yields (level, Result) as each level finishes, then ("peak_rss_mb", MiB)."""
    from benchmarks.engine.run_all import Result

    job = {
        "threads": threads,
        "warmup": [[r.prompt, r.max_tokens] for r in warmup or []],
        "levels": [[n, [[r.prompt, r.max_tokens] for r in reqs]] for n, reqs in levels.items()],
    }
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1"}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.engine.hf_baseline"], cwd=ROOT, env=env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        proc.stdin.write(json.dumps(job))
        proc.stdin.close()
        for line in proc.stdout:
            msg = json.loads(line)
            if "peak_rss_mb" in msg:
                yield "peak_rss_mb", msg["peak_rss_mb"]
            else:
                yield (
                    msg["level"],
                    Result(msg["tokens"], msg["seconds"], msg["ttfts"], msg["latencies"]),
                )
        if proc.wait() != 0:
            raise RuntimeError(f"transformers baseline exited with {proc.returncode}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    child_main()
