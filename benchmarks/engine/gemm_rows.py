"""What the model's matrix products cost by rows in the step (tokens in the flat batch), for
each weight format.

    python -m benchmarks.engine.gemm_rows [--rows 1 2 4 8 16 32 64 512] [--repeat 5]
        [--formats float32 bfloat16 quantized] [--threads N | --cpu-time]

Runs every linear layer of the default model's 30 blocks plus the LM head, as one step does,
for each row count and weight format (``serving/engine/quant.py``: ``float32`` and ``bfloat16``
dense, ``quantized`` the GGUF's own blocks: int4 products for Q4_1, the native Q8_0 kernel for
the tied LM head), and prints milliseconds per step and the cost relative to one row. A step's
time on a CPU is mostly these products (docs/engine.md, "Where the time goes"): the table says
how much one more token in a step costs, which is what latency isolation trades on, and where
the quantized products stop being cheaper than dense bfloat16 (``--weights hybrid`` switches
there, ``serving.engine.model.HYBRID_ROWS``).

Timing is the median of ``--repeat`` runs; on a shared machine, compare columns of one run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from serving.engine.gguf_loader import load_gguf
from serving.engine.kernels import physical_cores
from serving.engine.model import LlamaModel
from serving.engine.registry import resolve


def step_products(model: LlamaModel, rows: int, clock=time.perf_counter) -> float:
    """Seconds for one step's linear layers at ``rows`` rows (activations in the dtype the
    model feeds them)."""
    inputs = {}
    for lin in model.linears():
        if lin.in_features not in inputs:
            inputs[lin.in_features] = torch.randn(rows, lin.in_features).to(model.act_dtype)
    start = clock()
    with torch.inference_mode():
        for lin in model.linears()[:-1]:
            lin(inputs[lin.in_features])
        model.lm_head(inputs[model.lm_head.in_features].float())
    return clock() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64, 512])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--formats", nargs="+", default=["float32", "bfloat16", "quantized"])
    ap.add_argument("--threads", type=int, default=None, help="default: physical cores")
    ap.add_argument(
        "--cpu-time",
        action="store_true",
        help="time this thread's CPU time, not the wall clock (implies --threads 1): on a shared "
        "machine, immune to other processes taking the core (not to their memory traffic)",
    )
    a = ap.parse_args()
    torch.set_num_threads(1 if a.cpu_time else a.threads or physical_cores())
    clock = time.thread_time if a.cpu_time else time.perf_counter
    name, path = resolve(a.model)
    gguf = load_gguf(path, name)
    models = {
        f: LlamaModel(gguf.config, gguf.weights, torch.device("cpu"), torch.float32, f)
        for f in a.formats
    }
    first = next(iter(models.values()))
    params = sum(lin.out_features * lin.in_features for lin in first.linears())
    mbytes = ", ".join(f"{f} {m.weight_bytes() / 2**20:.0f} MiB" for f, m in models.items())
    print(
        f"{name}: {params / 1e6:.0f}M weights in the step's products ({mbytes}), "
        f"{torch.get_num_threads()} threads, torch CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}"
        + (", one thread's CPU time" if a.cpu_time else ", wall clock")
    )
    print("| rows | " + " | ".join(f"{f} ms (vs 1 row)" for f in models) + " |")
    print("|---|" + "---|" * len(models))
    base: dict[str, float] = {}
    for rows in a.rows:
        cells = []
        for f, model in models.items():
            step_products(model, rows, clock)  # warm-up
            runs = [step_products(model, rows, clock) for _ in range(a.repeat)]
            ms = 1e3 * statistics.median(runs)
            base.setdefault(f, ms)
            cells.append(f"{ms:.1f} ({ms / base[f]:.2f}x)")
        print(f"| {rows} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
