"""The cost per token of JSON-schema constrained decoding against unconstrained decoding.

    python -m benchmarks.engine.structured [--tokens 128] [--batches 1,8,32] [--repeats 3]

The engine (SmolLM2-135M, as the worker runs it) decodes the same chat prompt for the same
number of tokens twice per batch size: free (``ignore_eos``), and held to a JSON schema (an
array of records with a string, an integer, an enum and a nested array, with ``minItems``
so large that the grammar never lets the answer end before ``--tokens``). Both runs are
greedy, so both make exactly ``--tokens`` tokens per sequence. Reported per batch size, for
the decode steps (prefill excluded): wall milliseconds per step of each and their ratio, the
process's CPU milliseconds per step (all its threads) and their ratio, and the engine
thread's CPU time in the grammar masks per sequence and token (``time.thread_time``: what the
masks cost, whatever else runs on the machine). Runs alternate and repeat (the median is
kept): on a shared machine wall times vary by far more than 15-20%.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from serving.engine import grammar
from serving.engine.config import EngineConfig
from serving.engine.engine import LLMEngine
from serving.engine.types import GenerationRequest, SamplingParams

SCHEMA = {
    "type": "object",
    "properties": {
        "records": {
            "type": "array",
            "minItems": 10_000,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "age": {"type": "integer"},
                    "role": {"enum": ["admin", "editor", "viewer"]},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["name", "age", "role", "tags"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["records"],
    "additionalProperties": False,
}
PROMPT = "List the members of our team with their name, age, role and a few tags, as JSON."


class MaskTimer:
    """Wraps grammar.apply_masks to add up the engine thread's CPU time computing and applying
    masks (masks below PARALLEL_MASKS rows are computed on that thread)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._orig = grammar.apply_masks

    def __enter__(self) -> MaskTimer:
        def timed(*args, **kw):
            t = time.thread_time()
            try:
                return self._orig(*args, **kw)
            finally:
                self.seconds += time.thread_time() - t

        grammar.apply_masks = timed
        return self

    def __exit__(self, *exc) -> None:
        grammar.apply_masks = self._orig


def run(
    engine: LLMEngine, batch: int, tokens: int, constrained: bool
) -> tuple[float, float, float]:
    """(wall seconds, process CPU seconds, mask CPU seconds) per decode step, one wave of
    ``batch`` sequences."""
    tok = engine.tokenizer
    ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": PROMPT}]))
    g = grammar.json_grammar(SCHEMA) if constrained else None
    for i in range(batch):
        params = SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True, grammar=g)
        # A distinct first token per sequence keeps the prefix cache from merging them.
        engine.add_request(GenerationRequest(f"r{i}-{time.monotonic_ns()}", [*ids, 198 + i],
                                             params, cache_salt=str(time.monotonic_ns())))  # fmt: skip
    with MaskTimer() as masks:
        # Prefill first (not timed; the last prefill steps decode some tokens), then decode.
        made = 0
        while any(s.num_computed < s.num_prompt_tokens for s in engine.scheduler.running) or (
            engine.scheduler.num_waiting
        ):
            made += sum(len(d.token_ids) for d in engine.step())
        masks.seconds = 0.0
        steps, started, cpu = 0, time.perf_counter(), time.process_time()
        while engine.has_work():
            made += sum(len(d.token_ids) for d in engine.step())
            steps += 1
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert made == batch * tokens, f"{made} tokens made, expected {batch * tokens}"
    return elapsed / steps, cpu / steps, masks.seconds / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default=None)
    ap.add_argument("--parallel-masks", type=int, default=grammar.PARALLEL_MASKS,
                    help="constrained rows from which masks use llguidance's thread pool")  # fmt: skip
    a = ap.parse_args()
    grammar.PARALLEL_MASKS = a.parallel_masks
    config = EngineConfig(device=a.device, max_num_seqs=64, kv_cache_bytes=512 << 20)
    engine = LLMEngine.from_model("smollm2-135m-instruct", config)
    engine.warm_up()
    grammar.ll_tokenizer(engine.tokenizer)  # built once per process, not per request
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device {engine.model.device}, {a.tokens} tokens a sequence, "
          f"masks in the thread pool from {a.parallel_masks} rows")  # fmt: skip
    print("batch | wall ms/step free, json, ratio | CPU ms/step free, json, ratio | "
          "mask CPU us per sequence-token")  # fmt: skip
    for batch in [int(b) for b in a.batches.split(",")]:
        runs: dict[bool, list[tuple[float, float, float]]] = {False: [], True: []}
        for _ in range(a.repeats):
            for constrained in (False, True):
                runs[constrained].append(run(engine, batch, a.tokens, constrained))
        free, json_ = (
            [statistics.median(r[i] for r in runs[c]) for i in range(3)] for c in (False, True)
        )
        print(f"{batch:5d} | {free[0] * 1e3:8.1f} {json_[0] * 1e3:8.1f} {json_[0] / free[0]:5.2f} "
              f"| {free[1] * 1e3:8.1f} {json_[1] * 1e3:8.1f} {json_[1] / free[1]:5.2f} "
              f"| {json_[2] / batch * 1e6:8.1f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
