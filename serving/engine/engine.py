"""The engine: requests in, token deltas out.

:class:`LLMEngine` is synchronous and single-threaded (``add_request``, ``step``, ``abort``):
tests and benchmarks drive it directly. :class:`AsyncEngine` runs it on a dedicated thread
and gives asyncio code an async generator per request; the event loop never blocks on the
model.

One request's failure is that request's alone. A sampling row that is not finite, a draw or a
detokenization that raises, ends that request with an ``"error"`` delta while the rest of the
batch goes on. If the forward pass itself raises, the step is split in halves and rerun until
the items that fail on their own are found (rewriting the same K/V slots is harmless); only
they fail. A failure is put on the request (status 400) when something else in the same step
was served, on the engine (500) when nothing was. The engine thread's loop never dies: an
unexpected error fails the requests in flight and the loop goes on serving new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import queue
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import torch

from serving.engine.block_manager import BlockManager
from serving.engine.config import EngineConfig
from serving.engine.errors import EngineOverloaded, RequestFailed
from serving.engine.gguf_loader import load_gguf
from serving.engine.grammar import Constraint, compile_grammar
from serving.engine.kernels import physical_cores
from serving.engine.model import KVCache, LlamaModel
from serving.engine.model_runner import ModelRunner
from serving.engine.registry import resolve
from serving.engine.sampler import sample
from serving.engine.scheduler import ScheduledSeq, Scheduler
from serving.engine.sequence import Sequence
from serving.engine.tokenizer import ChatTokenizer
from serving.engine.types import (
    CompletionDelta,
    EngineStats,
    GenerationRequest,
    RequestUsage,
    SamplingParams,
    TokenLogprob,
)

log = logging.getLogger(__name__)

DEFAULT_KV_BYTES_CPU = 1 << 30  # 1 GiB
MAX_TOP_LOGPROBS = 20
RECENT_REQUESTS = 4096  # finished requests whose usage a late abort can still read


def pick_device(device: str | None = None) -> tuple[torch.device, torch.dtype]:
    """CUDA with bfloat16 when a GPU is there, else CPU with float32."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    return dev, (torch.bfloat16 if dev.type == "cuda" else torch.float32)


@dataclass
class _OutputState:
    """Incremental detokenization and stop-string handling for one sequence."""

    emitted: int = 0  # characters of the output text already sent
    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)


class LLMEngine:
    def __init__(
        self,
        model: LlamaModel,
        tokenizer: ChatTokenizer,
        *,
        model_name: str,
        config: EngineConfig | None = None,
    ) -> None:
        """``config``: the KV pool, step budget and fairness settings (default: the worker's
        defaults). ``max_waiting`` is copied onto the engine, where tests may change it."""
        config = config or EngineConfig()
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        cfg = model.cfg
        self.max_model_len = min(config.max_model_len or cfg.context_length, cfg.context_length)
        kv_cache_bytes = config.kv_cache_bytes
        if kv_cache_bytes is None:
            kv_cache_bytes = DEFAULT_KV_BYTES_CPU
            if model.device.type == "cuda":
                free, _total = torch.cuda.mem_get_info(model.device)
                kv_cache_bytes = int(free * 0.6)
        kv_dtype = config.kv_dtype or model.dtype
        block_size = config.block_size
        per_block = KVCache.bytes_per_token(cfg, kv_dtype) * block_size
        num_blocks = max(2, kv_cache_bytes // per_block)
        self.kv = KVCache(cfg, num_blocks, block_size, model.device, kv_dtype)
        self.block_manager = BlockManager(num_blocks, block_size)
        self.scheduler = Scheduler(self.block_manager, config)
        self.runner = ModelRunner(model, self.kv)
        self.max_waiting = config.max_waiting
        self._arrivals = itertools.count()
        self._requests: dict[str, list[Sequence]] = {}
        self._out: dict[int, _OutputState] = {}
        self.recent: OrderedDict[str, RequestUsage] = OrderedDict()
        self.stats_counters = EngineStats()

    @classmethod
    def from_model(cls, model: str, config: EngineConfig | None = None) -> LLMEngine:
        """Load ``model`` (a known name or a .gguf path) as ``config`` says: its ``device``,
        ``weights`` (``serving.engine.quant.WEIGHT_FORMATS``) and ``threads`` (torch threads
        on a CPU; default: the physical cores this process may use)."""
        config = config or EngineConfig()
        name, path = resolve(model)
        gguf = load_gguf(path, name)
        dev, dtype = pick_device(config.device)
        if dev.type == "cpu":
            torch.set_num_threads(config.threads or physical_cores())
        return cls(
            LlamaModel(gguf.config, gguf.weights, dev, dtype, config.weights),
            ChatTokenizer(gguf.tokenizer),
            model_name=name,
            config=config,
        )

    # ---- requests ------------------------------------------------------------------------

    def validate(self, request: GenerationRequest) -> None:
        """Raise ValueError naming the problem; the server answers 400 with it."""
        p = request.params
        n_prompt = len(request.prompt_token_ids)
        if n_prompt == 0:
            raise ValueError("The prompt is empty.")
        if any(t < 0 or t >= self.model.cfg.vocab_size for t in request.prompt_token_ids):
            raise ValueError("The prompt holds token ids outside the vocabulary.")
        if p.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1.")
        if n_prompt + p.max_tokens > self.max_model_len:
            raise ValueError(
                f"This model's maximum context length is {self.max_model_len} tokens; the "
                f"prompt has {n_prompt} and max_tokens asks for {p.max_tokens} more."
            )
        if p.n < 1 or p.n > 16:
            raise ValueError("n must be between 1 and 16.")
        if not 0 <= p.temperature <= 2:  # NaN fails every comparison
            raise ValueError("temperature must be between 0 and 2.")
        if not 0 <= p.top_p <= 1:
            raise ValueError("top_p must be between 0 and 1.")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2 <= getattr(p, name) <= 2:
                raise ValueError(f"{name} must be between -2 and 2.")
        if any(t < 0 or t >= self.model.cfg.vocab_size for t in p.stop_token_ids):
            raise ValueError("stop_token_ids holds token ids outside the vocabulary.")
        if p.top_logprobs < 0 or p.top_logprobs > MAX_TOP_LOGPROBS:
            raise ValueError(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}.")
        if not (math.isfinite(request.weight) and request.weight > 0):
            raise ValueError("weight must be positive.")
        blocks = -(-(n_prompt + p.max_tokens) // self.block_manager.block_size)
        if blocks > len(self.block_manager.blocks):
            raise ValueError("The request needs more KV cache than this worker has.")
        if p.grammar is not None:
            compile_grammar(self.tokenizer, p.grammar)  # GrammarError (a ValueError) if bad

    def add_request(self, request: GenerationRequest) -> None:
        self.validate(request)
        if request.request_id in self._requests:
            raise ValueError(f"Request id {request.request_id!r} is already running.")
        if self.scheduler.num_waiting >= self.max_waiting:
            raise EngineOverloaded(self.scheduler.num_waiting, self.max_waiting)
        arrival = next(self._arrivals)
        seqs = [
            Sequence(
                request_id=request.request_id,
                index=i,
                prompt_token_ids=request.prompt_token_ids,
                params=request.params,
                tenant=request.tenant,
                weight=request.weight,
                priority=request.priority,
                cache_salt=request.cache_salt,
                arrival=arrival,
            )
            for i in range(request.params.n)
        ]
        if request.params.grammar is not None:
            for seq in seqs:  # compiled once (validate), a fresh matcher each
                seq.constraint = Constraint.compile(self.tokenizer, request.params.grammar)
        self._requests[request.request_id] = seqs
        for seq in seqs:
            self._out[seq.seq_id] = _OutputState()
            self.scheduler.add(seq)

    def abort(self, request_id: str) -> list[CompletionDelta]:
        """Free the request's sequences and blocks now; returns its final ``abort`` deltas
        (each carries the request's usage so far). An unknown or finished id: none."""
        seqs = self._requests.get(request_id, [])
        usage = self._usage(seqs)
        deltas = []
        for seq in seqs:
            if not seq.is_finished:
                self.scheduler.finish(seq, "abort")
                d = self._delta(seq, "", [], "abort")
                d.usage = usage
                deltas.append(d)
        self._close(request_id)
        return deltas

    def fail(
        self, request_id: str, message: str, *, code: str, status: int
    ) -> list[CompletionDelta]:
        """End the request with an error now (all its choices); its ``error`` deltas."""
        seqs = self._requests.get(request_id, [])
        usage = self._usage(seqs)
        deltas = []
        for seq in seqs:
            if not seq.is_finished:
                self.scheduler.finish(seq, "error")
                d = self._delta(seq, "", [], "error")
                d.error, d.error_code, d.error_status, d.usage = message, code, status, usage
                deltas.append(d)
        if seqs:
            self.stats_counters.failed_total += 1
        self._close(request_id)
        return deltas

    def is_running(self, request_id: str) -> bool:
        return request_id in self._requests

    def usage(self, request_id: str) -> RequestUsage | None:
        """The work done for a request in flight or recently finished; None if unknown."""
        seqs = self._requests.get(request_id)
        if seqs is not None:
            return self._usage(seqs)
        return self.recent.get(request_id)

    @staticmethod
    def _usage(seqs: list[Sequence]) -> RequestUsage:
        if not seqs:
            return RequestUsage()
        prompt = max(
            max(s.prompt_done, min(s.num_computed, s.num_prompt_tokens))
            if not s.num_output_tokens
            else s.num_prompt_tokens
            for s in seqs
        )
        return RequestUsage(
            prompt_tokens=prompt,
            completion_tokens=sum(s.num_output_tokens for s in seqs),
            cached_tokens=seqs[0].num_cached_tokens if prompt else 0,
        )

    def _close(self, request_id: str) -> None:
        """Forget a request whose sequences all finished; keep its usage for a while."""
        seqs = self._requests.pop(request_id, None)
        if seqs is None:
            return
        self.recent[request_id] = self._usage(seqs)
        self.recent.move_to_end(request_id)
        while len(self.recent) > RECENT_REQUESTS:
            self.recent.popitem(last=False)
        for s in seqs:
            self._out.pop(s.seq_id, None)

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    # ---- one step ------------------------------------------------------------------------

    def step(self) -> list[CompletionDelta]:
        batch = self.scheduler.schedule()
        if not batch:
            return []
        logits, failures = self._forward(batch)
        sampling = [it for it in batch if it.samples and id(it) not in failures]
        for it in batch:
            if id(it) in failures:
                continue
            seq = it.seq
            seq.num_computed += it.num_tokens
            self.block_manager.register_full_blocks(seq)
            prompt_part = min(
                it.num_tokens,
                max(0, seq.num_prompt_tokens - (seq.num_computed - it.num_tokens)),
            )
            seq.prompt_done = max(seq.prompt_done, min(seq.num_computed, seq.num_prompt_tokens))
            self.stats_counters.prompt_tokens_total += prompt_part
        failed: list[tuple[Sequence, str]] = [
            (it.seq, f"the forward pass failed: {failures[id(it)]}")
            for it in batch
            if id(it) in failures
        ]
        deltas: list[CompletionDelta] = []
        if sampling:
            seqs = [it.seq for it in sampling]
            out = sample(logits, seqs)
            for row, (seq, tok) in enumerate(zip(seqs, out.tokens, strict=True)):
                if tok is None:
                    failed.append((seq, out.failed.get(row, "sampling failed")))
                    continue
                if seq.is_finished:
                    continue
                try:
                    deltas.extend(self._append_token(seq, tok, out.logprobs, row))
                except Exception as exc:  # noqa: BLE001 - this sequence's failure only
                    log.exception("request %s: output handling failed", seq.request_id)
                    failed.append((seq, f"output handling failed: {exc}"))
        if failed:
            # Something else in this step was served: the failures are these requests' own.
            own = len(batch) > len({id(seq) for seq, _ in failed})
            status, code = (400, "generation_failed") if own else (500, "engine_error")
            for seq, reason in failed:
                if seq.request_id in self._requests:
                    log.warning("request %s failed: %s", seq.request_id, reason)
                    deltas.extend(
                        self.fail(
                            seq.request_id,
                            f"The worker could not complete this request: {reason}.",
                            code=code,
                            status=status,
                        )
                    )
        self.stats_counters.preemptions_total = self.scheduler.preemptions
        return deltas

    def _forward(self, batch: list[ScheduledSeq]) -> tuple[torch.Tensor, dict[int, str]]:
        """Run the model over ``batch``: logits of the sampling items that did not fail (in
        batch order), and the items that failed (by ``id``: reason). When the whole pass
        raises, halves are rerun until the items that fail on their own are found."""
        try:
            return self.runner.run(batch), {}
        except Exception as exc:  # noqa: BLE001 - isolated below
            if len(batch) == 1:
                log.exception("forward pass failed for %s", batch[0].seq.request_id)
                empty = torch.empty(0, self.model.cfg.vocab_size)
                return empty, {id(batch[0]): f"{type(exc).__name__}: {exc}"}
            half = len(batch) // 2
            logits_a, failed_a = self._forward(batch[:half])
            logits_b, failed_b = self._forward(batch[half:])
            return torch.cat([logits_a, logits_b]), failed_a | failed_b

    def _append_token(
        self, seq: Sequence, token: int, logprobs: torch.Tensor | None, row: int
    ) -> list[CompletionDelta]:
        seq.token_ids.append(token)
        self.scheduler.charge(seq, output_tokens=1)
        self.stats_counters.generation_tokens_total += 1
        state = self._out[seq.seq_id]
        p = seq.params
        lp = None
        if p.logprobs and logprobs is not None:
            row_lp = logprobs[row]
            top = []
            if p.top_logprobs:
                vals, idx = row_lp.topk(p.top_logprobs)
                top = [
                    (int(i), self.tokenizer.token_text(int(i)), float(v))
                    for v, i in zip(vals.tolist(), idx.tolist(), strict=True)
                ]
            lp = TokenLogprob(token, self.tokenizer.token_text(token), float(row_lp[token]), top)
        finish = None
        if token in self.tokenizer.eos_token_ids and not p.ignore_eos or token in p.stop_token_ids:
            finish = "stop"
        # Text so far (special tokens such as the end-of-turn marker are not text).
        out_ids = seq.output_token_ids
        if finish is not None:
            out_ids = out_ids[:-1]
        if seq.constraint is not None:
            # The grammar takes the token (one its mask allowed); once it is complete, the
            # answer is: it ends here, without a step for the end-of-turn token.
            seq.constraint.advance(token)
            if finish is None and seq.constraint.done:
                finish = "stop"
        text = self.tokenizer.decode(out_ids)
        hold = 0
        if text.endswith("\ufffd"):
            hold = 1  # an unfinished UTF-8 character: wait for the next token
        if p.stop:
            start = max(0, state.emitted - max(len(s) for s in p.stop))
            hits = [(text.find(s, start), s) for s in p.stop if s]
            hits = [(i, s) for i, s in hits if i >= 0]
            if hits:
                cut = min(i for i, _ in hits)
                text = text[:cut]
                finish = "stop"
                hold = 0
            elif finish is None:
                hold = max(hold, max(len(s) for s in p.stop) - 1)
        if finish is None and seq.num_output_tokens >= p.max_tokens:
            finish = "length"
        if finish is None and seq.num_tokens >= self.max_model_len:
            finish = "length"
        if finish is not None:
            hold = 0
            if text.endswith("\ufffd"):
                text = text.rstrip("\ufffd")
        new_text = text[state.emitted : max(state.emitted, len(text) - hold)]
        state.emitted += len(new_text)
        delta = self._delta(seq, new_text, [token], finish, [lp] if lp else None)
        if finish is not None:
            self.scheduler.finish(seq, finish)
            self._maybe_close(seq.request_id)
        return [delta]

    def _maybe_close(self, request_id: str) -> None:
        seqs = self._requests.get(request_id)
        if seqs and all(s.is_finished for s in seqs):
            self._close(request_id)

    def _delta(
        self,
        seq: Sequence,
        text: str,
        token_ids: list[int],
        finish: str | None,
        logprobs: list[TokenLogprob] | None = None,
    ) -> CompletionDelta:
        return CompletionDelta(
            request_id=seq.request_id,
            index=seq.index,
            text=text,
            token_ids=token_ids,
            finish_reason=finish,
            logprobs=logprobs,
            prompt_tokens=seq.num_prompt_tokens,
            completion_tokens=seq.num_output_tokens,
            cached_tokens=seq.num_cached_tokens,
        )

    def stats(self) -> EngineStats:
        s = self.stats_counters
        s.running = len(self.scheduler.running)
        s.waiting = self.scheduler.num_waiting
        s.kv_blocks_total = len(self.block_manager.blocks)
        # Blocks held by sequences (free-but-cached blocks count as free).
        s.kv_blocks_used = sum(1 for b in self.block_manager.blocks if b.ref_count > 0)
        s.prefix_queries = self.block_manager.prefix_queries
        s.prefix_hits = self.block_manager.prefix_hits
        return s

    def warm_up(self) -> None:
        """One short greedy request through prefill, decode and sampling (the first step of
        a fresh process pays for lazy initialisation), then counters as if it never ran."""
        ids = list(range(min(8, self.model.cfg.vocab_size)))
        self.generate_sync(
            [
                GenerationRequest(
                    "warm-up",
                    ids,
                    SamplingParams(temperature=0.0, max_tokens=2, ignore_eos=True),
                    cache_salt="\x00warm-up",
                )
            ]
        )
        self.recent.pop("warm-up", None)
        self.stats_counters = EngineStats()
        self.block_manager.prefix_queries = self.block_manager.prefix_hits = 0

    def generate_sync(self, requests: list[GenerationRequest]) -> dict[str, list[str]]:
        """Run ``requests`` to completion; texts per request id, one per choice (for tests)."""
        texts: dict[str, list[str]] = {}
        for r in requests:
            self.add_request(r)
            texts[r.request_id] = [""] * r.params.n
        while self.has_work():
            for d in self.step():
                texts[d.request_id][d.index] += d.text
        return texts


@dataclass
class AbortResult:
    aborted: bool  # something was running or waiting, and is not any more
    usage: RequestUsage  # the work done (so far, or in all for a finished request)


class AsyncEngine:
    """An :class:`LLMEngine` on its own thread, with an asyncio face.

    Requests may carry a caller's ``key`` (the worker uses the ``x-request-id`` header), by
    which :meth:`abort_key` finds them while they run and for a while after (their usage).
    """

    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.model_name = engine.model_name
        self.max_model_len = engine.max_model_len
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._keys: dict[str, list[str]] = {}  # caller's key -> engine ids in flight
        self._recent_keys: OrderedDict[str, str] = OrderedDict()  # key -> last engine id
        self._lock = threading.Lock()
        self.step_error: BaseException | None = None

    @classmethod
    def from_model(cls, model: str, config: EngineConfig | None = None) -> AsyncEngine:
        """Load ``model`` as :meth:`LLMEngine.from_model` does, behind the engine thread."""
        return cls(LLMEngine.from_model(model, config))

    async def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="engine", daemon=True)
            self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)
            self._thread = None

    def validate(self, request: GenerationRequest) -> None:
        self.engine.validate(request)

    def stats(self) -> EngineStats:
        return self.engine.stats()

    def _deliver(self, delta: CompletionDelta | BaseException, request_id: str) -> None:
        with self._lock:
            target = self._streams.get(request_id)
        if target is not None:
            loop, q = target
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is listening
                loop.call_soon_threadsafe(q.put_nowait, delta)

    # ---- the engine thread ---------------------------------------------------------------

    def _loop(self) -> None:
        """Never returns until stopped: whatever goes wrong fails requests, not the loop."""
        while not self._stop.is_set():
            try:
                self._iteration()
            except Exception as exc:  # noqa: BLE001 - the loop must survive anything
                log.exception("engine loop error")
                self.step_error = exc
                self._fail_all(exc)

    def _iteration(self) -> None:
        engine = self.engine
        while True:
            try:
                op, arg = self._inbox.get_nowait()
            except queue.Empty:
                break
            try:
                self._handle(op, arg)
            except Exception:  # noqa: BLE001 - one bad operation must not stop the others
                log.exception("engine operation %s failed", op)
        if not engine.has_work():
            self._wake.wait(0.05)
            self._wake.clear()
            return
        try:
            deltas = engine.step()
        except Exception as exc:  # noqa: BLE001 - fail the requests in flight, keep serving
            log.exception("engine step failed")
            self.step_error = exc
            self._fail_all(exc)
            return
        for d in deltas:
            self._deliver(d, d.request_id)

    def _handle(self, op: str, arg) -> None:
        engine = self.engine
        if op == "add":
            try:
                engine.add_request(arg)
            except Exception as exc:  # noqa: BLE001 - reported to the caller
                self._deliver(exc, arg.request_id)
        elif op == "abort":
            for d in engine.abort(arg):
                self._deliver(d, arg)
        elif op == "abort_report":
            ids, loop, fut = arg
            aborted, usage = False, RequestUsage()
            try:
                for rid in ids:
                    aborted |= engine.is_running(rid)
                    for d in engine.abort(rid):
                        self._deliver(d, rid)
                    usage = usage + (engine.usage(rid) or RequestUsage())
            finally:
                result = AbortResult(aborted, usage)
                loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(result))

    def _fail_all(self, exc: BaseException) -> None:
        """An error outside any one request (a bug, a broken device): fail every request in
        flight, free what they hold, go on."""
        engine = self.engine
        message = f"The worker could not complete this request: engine error ({exc})."
        for rid in list(engine._requests):
            try:
                deltas = engine.fail(rid, message, code="engine_error", status=500)
            except Exception:  # noqa: BLE001 - the state is beyond repair for this one
                log.exception("could not fail request %s cleanly", rid)
                engine._requests.pop(rid, None)
                self._deliver(RequestFailed(message, code="engine_error", status=500), rid)
                continue
            for d in deltas:
                self._deliver(d, rid)

    # ---- the asyncio face ----------------------------------------------------------------

    async def generate(
        self, request: GenerationRequest, *, key: str | None = None
    ) -> AsyncIterator[CompletionDelta]:
        """Deltas of ``request`` as they come. Stop iterating to abort it. Raises
        :class:`RequestFailed` when the request fails or is aborted by :meth:`abort_key`."""
        self.engine.validate(request)
        if self.engine.scheduler.num_waiting >= self.engine.max_waiting:
            raise EngineOverloaded(self.engine.scheduler.num_waiting, self.engine.max_waiting)
        q: asyncio.Queue = asyncio.Queue()
        rid = request.request_id
        with self._lock:
            if rid in self._streams:
                raise ValueError(f"Request id {rid!r} is already running.")
            self._streams[rid] = (asyncio.get_running_loop(), q)
            if key is not None:
                self._keys.setdefault(key, []).append(rid)
        self._inbox.put(("add", request))
        self._wake.set()
        open_choices = request.params.n
        try:
            while open_choices:
                item = await q.get()
                if isinstance(item, BaseException):
                    open_choices = 0
                    raise item
                if item.finish_reason == "error":
                    open_choices = 0
                    raise RequestFailed(
                        item.error or "The request failed.",
                        code=item.error_code or "engine_error",
                        status=item.error_status,
                        usage=item.usage,
                    )
                if item.finish_reason == "abort":
                    open_choices = 0
                    raise RequestFailed(
                        "The request was aborted (POST /v1/abort).",
                        code="request_aborted",
                        status=409,
                        usage=item.usage,
                    )
                if item.finish_reason is not None:
                    open_choices -= 1
                yield item
        finally:
            with self._lock:
                self._streams.pop(rid, None)
                if key is not None:
                    ids = self._keys.get(key, [])
                    if rid in ids:
                        ids.remove(rid)
                    if not ids:
                        self._keys.pop(key, None)
                    self._recent_keys[key] = rid
                    self._recent_keys.move_to_end(key)
                    while len(self._recent_keys) > RECENT_REQUESTS:
                        self._recent_keys.popitem(last=False)
            if open_choices:
                self._inbox.put(("abort", rid))
                self._wake.set()

    async def abort(self, request_id: str) -> None:
        self._inbox.put(("abort", request_id))
        self._wake.set()

    async def abort_key(self, key: str, timeout: float = 10.0) -> AbortResult:
        """Abort the requests sent with ``key`` (running or waiting); the work they did. A key
        that is unknown or whose request finished is not aborted (its usage, when recent)."""
        with self._lock:
            ids = list(self._keys.get(key, ()))
            if not ids and key in self._recent_keys:
                ids = [self._recent_keys[key]]
        if not ids:
            return AbortResult(False, RequestUsage())
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        self._inbox.put(("abort_report", (ids, loop, fut)))
        self._wake.set()
        return await asyncio.wait_for(fut, timeout)
