"""What the model's matrix products cost by rows in the step (tokens in the flat batch).

    python -m benchmarks.engine.gemm_rows [--rows 1 2 4 8 16 32 64 512] [--repeat 5]

Runs every linear layer of the default model's 30 blocks plus the LM head, as one step does,
on its real float32 weights (0.54 GB, so they stream from memory as in a step), for each row
count, and prints milliseconds per step, GFLOP/s and the cost relative to one row. A step's
time on a CPU is mostly these products (docs/engine.md, "Where the time goes"): the table says
how much one more token in a step costs, which is what latency isolation trades on.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from serving.engine.gguf_loader import load_gguf
from serving.engine.model import LlamaModel
from serving.engine.registry import resolve


def step_products(model: LlamaModel, rows: int) -> float:
    """Seconds for one step's linear layers at ``rows`` rows."""
    cfg = model.cfg
    x = torch.randn(rows, cfg.dim)
    inner = torch.randn(rows, model.layers[0]["w_down"].shape[1])
    attn = torch.randn(rows, model.q_size)
    start = time.perf_counter()
    for w in model.layers:
        F.linear(x, w["wqkv"])
        F.linear(attn, w["wo"])
        F.linear(x, w["w_gate_up"])
        F.linear(inner, w["w_down"])
    F.linear(x, model.lm_head)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64, 512])
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    name, path = resolve(a.model)
    gguf = load_gguf(path, name)
    model = LlamaModel(gguf.config, gguf.weights, torch.device("cpu"), torch.float32)
    params = sum(w.numel() for layer in model.layers for w in layer.values() if w.dim() == 2)
    params += model.lm_head.numel()
    print(
        f"{name}: {params / 1e6:.0f}M weights in the step's products, "
        f"{torch.get_num_threads()} threads, torch CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}"
    )
    print("| rows | ms per step | GFLOP/s | vs 1 row |\n|---|---|---|---|")
    base = None
    for rows in a.rows:
        step_products(model, rows)  # warm-up
        ms = 1e3 * statistics.median(step_products(model, rows) for _ in range(a.repeat))
        base = base or ms
        print(f"| {rows} | {ms:.1f} | {2 * params * rows / ms / 1e6:.1f} | {ms / base:.2f}x |")


if __name__ == "__main__":
    main()
