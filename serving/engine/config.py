"""The engine's settings in one object.

:class:`EngineConfig` is built once (by the worker's command line, ``serving.engine.cli``, or
from keyword overrides in tests and benchmarks) and handed down as it is: ``LLMEngine`` reads
the pool and loading settings, the ``Scheduler`` its batching and fairness settings. Bad
values are refused when the object is made, with the same messages wherever it is made.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from serving.engine.quant import WEIGHT_FORMATS

# ``--kv-dtype`` names and the KV pool's element type (None: the model's own).
KV_DTYPES: dict[str, torch.dtype | None] = {
    "auto": None,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


@dataclass(frozen=True)
class EngineConfig:
    """How an engine is built and schedules: its KV pool, step budget, fairness and weights.

    Every field has the worker's default; ``EngineConfig(max_num_seqs=4)`` changes one.
    """

    # KV pool size in bytes (None: 1 GiB on a CPU, 60% of the free memory on CUDA).
    kv_cache_bytes: int | None = None
    # KV pool element type (None: the model's: float32 on a CPU, bfloat16 on CUDA).
    kv_dtype: torch.dtype | None = None
    block_size: int = 16  # tokens per KV block
    max_num_seqs: int = 64  # sequences running at once
    max_num_batched_tokens: int = 512  # tokens per step
    # Prompt tokens a step may carry beside running decodes (None: the whole step budget).
    max_prefill_tokens_while_decoding: int | None = None
    # Latency isolation (None: off): while several tenants are active, all but the
    # least-served one share this many tokens per step (see serving/engine/scheduler.py).
    isolation_tokens: int | None = None
    # Under isolation, prompt tokens per step for a lead already running beside others.
    isolation_prefill_tokens: int = 64
    max_model_len: int | None = None  # None: the model's context length
    max_waiting: int = 1024  # queued sequences before new requests are refused (503)
    device: str | None = None  # None: CUDA when there is a GPU, else the CPU
    weights: str = "auto"  # weight format, one of ``serving.engine.quant.WEIGHT_FORMATS``
    threads: int | None = None  # torch threads on a CPU (None: the physical cores usable)

    def __post_init__(self) -> None:
        if self.isolation_tokens is not None and self.isolation_tokens < 0:
            raise ValueError(f"isolation_tokens must be 0 or more, got {self.isolation_tokens}")
        if self.isolation_prefill_tokens < 1:
            raise ValueError(
                f"isolation_prefill_tokens must be at least 1, got {self.isolation_prefill_tokens}"
            )
        if self.weights not in WEIGHT_FORMATS:
            raise ValueError(
                f"weight format must be one of {', '.join(WEIGHT_FORMATS)}, not {self.weights!r}"
            )


def resolve_isolation(value: int | str | None, *, cuda: bool | None = None) -> int | None:
    """``EngineConfig.isolation_tokens`` for an ``--isolation-tokens`` value: ``auto`` is 0
    (steps of its own for the least-served tenant) on a CPU worker, where a step's time grows
    with every token in it, and off (None) on CUDA, where sharing every step costs little."""
    if value == "auto":
        if cuda is None:
            cuda = torch.cuda.is_available()
        return None if cuda else 0
    if value == "off" or value is None:
        return None
    return int(value)
