"""The engine: requests in, token deltas out.

:class:`LLMEngine` is synchronous and single-threaded (``add_request``, ``step``, ``abort``):
tests and benchmarks drive it directly. :class:`AsyncEngine` runs it on a dedicated thread
and gives asyncio code an async generator per request; the event loop never blocks on the
model.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import queue
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import torch

from serving.engine.block_manager import BlockManager
from serving.engine.errors import EngineOverloaded
from serving.engine.gguf_loader import load_gguf
from serving.engine.model import KVCache, LlamaModel
from serving.engine.model_runner import ModelRunner
from serving.engine.registry import resolve
from serving.engine.sampler import sample
from serving.engine.scheduler import Scheduler
from serving.engine.sequence import Sequence
from serving.engine.tokenizer import ChatTokenizer
from serving.engine.types import (
    CompletionDelta,
    EngineStats,
    GenerationRequest,
    TokenLogprob,
)

log = logging.getLogger(__name__)

DEFAULT_KV_BYTES_CPU = 1 << 30  # 1 GiB
MAX_TOP_LOGPROBS = 20


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
        kv_cache_bytes: int | None = None,
        block_size: int = 16,
        max_num_seqs: int = 64,
        max_num_batched_tokens: int = 512,
        max_prefill_tokens_while_decoding: int | None = None,
        isolation_tokens: int | None = None,
        isolation_prefill_tokens: int = 64,
        max_model_len: int | None = None,
        max_waiting: int = 1024,
        kv_dtype: torch.dtype | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        cfg = model.cfg
        self.max_model_len = min(max_model_len or cfg.context_length, cfg.context_length)
        if kv_cache_bytes is None:
            kv_cache_bytes = DEFAULT_KV_BYTES_CPU
            if model.device.type == "cuda":
                free, _total = torch.cuda.mem_get_info(model.device)
                kv_cache_bytes = int(free * 0.6)
        kv_dtype = kv_dtype or model.dtype
        per_block = KVCache.bytes_per_token(cfg, kv_dtype) * block_size
        num_blocks = max(2, kv_cache_bytes // per_block)
        self.kv = KVCache(cfg, num_blocks, block_size, model.device, kv_dtype)
        self.block_manager = BlockManager(num_blocks, block_size)
        self.scheduler = Scheduler(
            self.block_manager,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            max_prefill_tokens_while_decoding=max_prefill_tokens_while_decoding,
            isolation_tokens=isolation_tokens,
            isolation_prefill_tokens=isolation_prefill_tokens,
        )
        self.runner = ModelRunner(model, self.kv)
        self.max_waiting = max_waiting
        self._arrivals = itertools.count()
        self._requests: dict[str, list[Sequence]] = {}
        self._out: dict[int, _OutputState] = {}
        self.stats_counters = EngineStats()

    @classmethod
    def from_model(cls, model: str, *, device: str | None = None, **kwargs) -> LLMEngine:
        name, path = resolve(model)
        gguf = load_gguf(path, name)
        dev, dtype = pick_device(device)
        if dev.type == "cpu":
            torch.set_num_threads(max(1, os.cpu_count() or 1))
        return cls(
            LlamaModel(gguf.config, gguf.weights, dev, dtype),
            ChatTokenizer(gguf.tokenizer),
            model_name=name,
            **kwargs,
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
        if p.temperature < 0 or p.temperature > 2:
            raise ValueError("temperature must be between 0 and 2.")
        if not 0 < p.top_p <= 1:
            raise ValueError("top_p must be in (0, 1].")
        if p.top_logprobs < 0 or p.top_logprobs > MAX_TOP_LOGPROBS:
            raise ValueError(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}.")
        if request.weight <= 0:
            raise ValueError("weight must be positive.")
        blocks = -(-(n_prompt + p.max_tokens) // self.block_manager.block_size)
        if blocks > len(self.block_manager.blocks):
            raise ValueError("The request needs more KV cache than this worker has.")

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
        self._requests[request.request_id] = seqs
        for seq in seqs:
            self._out[seq.seq_id] = _OutputState()
            self.scheduler.add(seq)

    def abort(self, request_id: str) -> list[CompletionDelta]:
        """Free the request's sequences and blocks now; returns its final ``abort`` deltas."""
        seqs = self._requests.pop(request_id, [])
        deltas = []
        for seq in seqs:
            if not seq.is_finished:
                self.scheduler.finish(seq, "abort")
                deltas.append(self._delta(seq, "", [], "abort"))
            self._out.pop(seq.seq_id, None)
        return deltas

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    # ---- one step ------------------------------------------------------------------------

    def step(self) -> list[CompletionDelta]:
        batch = self.scheduler.schedule()
        if not batch:
            return []
        logits = self.runner.run(batch)
        sampling = [it for it in batch if it.samples]
        for it in batch:
            it.seq.num_computed += it.num_tokens
            self.block_manager.register_full_blocks(it.seq)
            prompt_part = min(
                it.num_tokens,
                max(0, it.seq.num_prompt_tokens - (it.seq.num_computed - it.num_tokens)),
            )
            self.stats_counters.prompt_tokens_total += prompt_part
        if not sampling:
            return []
        seqs = [it.seq for it in sampling]
        tokens, logprobs = sample(logits, seqs)
        deltas = []
        for row, (seq, tok) in enumerate(zip(seqs, tokens, strict=True)):
            deltas.extend(self._append_token(seq, tok, logprobs, row))
        self.stats_counters.preemptions_total = self.scheduler.preemptions
        return deltas

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
            self._requests.pop(request_id, None)
            for s in seqs:
                self._out.pop(s.seq_id, None)

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


class AsyncEngine:
    """An :class:`LLMEngine` on its own thread, with an asyncio face."""

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
        self._lock = threading.Lock()
        self.step_error: BaseException | None = None

    @classmethod
    def from_model(cls, model: str, **kwargs) -> AsyncEngine:
        return cls(LLMEngine.from_model(model, **kwargs))

    async def start(self) -> None:
        if self._thread is None:
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
            loop.call_soon_threadsafe(q.put_nowait, delta)

    def _loop(self) -> None:
        engine = self.engine
        while not self._stop.is_set():
            while True:
                try:
                    op, arg = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if op == "add":
                    try:
                        engine.add_request(arg)
                    except Exception as exc:  # noqa: BLE001 - reported to the caller
                        self._deliver(exc, arg.request_id)
                else:
                    for d in engine.abort(arg):
                        self._deliver(d, arg)
            if not engine.has_work():
                self._wake.wait(0.05)
                self._wake.clear()
                continue
            try:
                deltas = engine.step()
            except Exception as exc:  # noqa: BLE001 - fail the requests, keep serving
                log.exception("engine step failed")
                self.step_error = exc
                for rid in list(engine._requests):
                    engine.abort(rid)
                    self._deliver(RuntimeError(f"engine step failed: {exc}"), rid)
                continue
            for d in deltas:
                self._deliver(d, d.request_id)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[CompletionDelta]:
        """Deltas of ``request`` as they come. Stop iterating to abort it."""
        self.engine.validate(request)
        if self.engine.scheduler.num_waiting >= self.engine.max_waiting:
            raise EngineOverloaded(self.engine.scheduler.num_waiting, self.engine.max_waiting)
        q: asyncio.Queue = asyncio.Queue()
        with self._lock:
            if request.request_id in self._streams:
                raise ValueError(f"Request id {request.request_id!r} is already running.")
            self._streams[request.request_id] = (asyncio.get_running_loop(), q)
        self._inbox.put(("add", request))
        self._wake.set()
        open_choices = request.params.n
        try:
            while open_choices:
                item = await q.get()
                if isinstance(item, BaseException):
                    raise item
                if item.finish_reason is not None:
                    open_choices -= 1
                yield item
        finally:
            with self._lock:
                self._streams.pop(request.request_id, None)
            if open_choices:
                self._inbox.put(("abort", request.request_id))
                self._wake.set()

    async def abort(self, request_id: str) -> None:
        self._inbox.put(("abort", request_id))
        self._wake.set()
