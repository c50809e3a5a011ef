"""Plain data shared by the engine core and the worker server.

Nothing here imports torch or Django: the server, the gateway and the tests can build
requests and read results without loading a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Temperatures below this are greedy: dividing logits by a smaller one overflows float32
# (a positive 1e-300 even rounds to 0.0), which would turn the row into NaN.
GREEDY_TEMPERATURE = 1e-5


@dataclass
class SamplingParams:
    """How one request samples. Validated by the server before it reaches the engine.

    ``top_k <= 0`` and ``top_p >= 1`` switch those filters off; a ``temperature`` below
    :data:`GREEDY_TEMPERATURE` (0 included) or ``top_p == 0`` is greedy. ``seed`` makes a
    sampled request reproducible regardless of batch company.
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
    # An llguidance grammar (serving/engine/grammar.py) every choice keeps to, or None.
    grammar: str | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_TEMPERATURE or self.top_p <= 0


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
class RequestUsage:
    """The work done for one request so far: prompt tokens computed (0 while it waits; the
    whole prompt, cached tokens included, once its prefill is done) and tokens generated
    over all its choices."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    def __add__(self, other: RequestUsage) -> RequestUsage:
        return RequestUsage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
        )


@dataclass
class CompletionDelta:
    """What one engine step produced for one choice of one request.

    ``text`` is the newly decoded text (stop strings already cut, never split inside a
    UTF-8 character). ``finish_reason`` is set on the last delta of a choice:
    ``"stop"``, ``"length"``, ``"abort"`` or ``"error"``. Token counts are running totals.
    An ``"error"`` delta names what went wrong (``error``, ``error_code``, ``error_status``:
    400 when the request alone failed while the step served others, 500 when nothing in the
    step could be served); ``"error"`` and ``"abort"`` deltas carry the request's ``usage``.
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
    error: str | None = None
    error_code: str | None = None
    error_status: int = 500
    usage: RequestUsage | None = None


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
    failed_total: int = 0  # requests that ended with an error

    @property
    def kv_usage(self) -> float:
        return self.kv_blocks_used / self.kv_blocks_total if self.kv_blocks_total else 0.0

    @property
    def prefix_hit_rate(self) -> float:
        return self.prefix_hits / self.prefix_queries if self.prefix_queries else 0.0
