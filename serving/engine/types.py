"""Plain data shared by the engine core and the worker server.

Nothing here imports torch or Django: the server, the gateway and the tests can build
requests and read results without loading a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SamplingParams:
    """How one request samples. Validated by the server before it reaches the engine.

    ``top_k <= 0`` and ``top_p >= 1`` switch those filters off; ``temperature == 0`` is
    greedy. ``seed`` makes a sampled request reproducible regardless of batch company.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    max_tokens: int = 16
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: bool = False
    top_logprobs: int = 0
    n: int = 1
    ignore_eos: bool = False


@dataclass
class GenerationRequest:
    """One request to the engine: token ids in, a stream of ``CompletionDelta`` out.

    ``tenant`` and ``weight`` drive the fair scheduler (virtual token counter);
    ``priority`` orders requests within one tenant (higher first). ``cache_salt``, when
    set, keeps this request's prefix blocks apart from requests with another salt.
    """

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    tenant: str = "default"
    weight: float = 1.0
    priority: int = 0
    cache_salt: str | None = None


@dataclass
class TokenLogprob:
    token_id: int
    token: str
    logprob: float
    top: list[tuple[int, str, float]] = field(default_factory=list)


@dataclass
class CompletionDelta:
    """What one engine step produced for one choice of one request.

    ``text`` is the newly decoded text (stop strings already cut, never split inside a
    UTF-8 character). ``finish_reason`` is set on the last delta of a choice:
    ``"stop"``, ``"length"`` or ``"abort"``. Token counts are running totals.
    """

    request_id: str
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


@dataclass
class EngineStats:
    running: int = 0
    waiting: int = 0
    kv_blocks_used: int = 0
    kv_blocks_total: int = 0
    prefix_queries: int = 0
    prefix_hits: int = 0
    prompt_tokens_total: int = 0
    generation_tokens_total: int = 0
    preemptions_total: int = 0

    @property
    def kv_usage(self) -> float:
        return self.kv_blocks_used / self.kv_blocks_total if self.kv_blocks_total else 0.0

    @property
    def prefix_hit_rate(self) -> float:
        return self.prefix_hits / self.prefix_queries if self.prefix_queries else 0.0
