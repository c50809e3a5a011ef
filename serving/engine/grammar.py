"""Constrained decoding: every token a sequence generates keeps its output inside a grammar.

A request that asks for JSON (``response_format`` ``json_object`` or ``json_schema``) or that
offers tools gets a grammar; each of its sequences holds a :class:`Constraint` (an llguidance
matcher) that says, before each token is sampled, which tokens of the vocabulary may come
next. The sampler masks the others out (greedy and sampled rows alike), the engine advances
the matcher with the token it appends, and the sequence ends once the grammar is complete. So
the answer parses (and validates against the schema) by construction, streamed or not; only a
``max_tokens`` cut ends it early (``finish_reason: length``).

    json_grammar(schema)             any JSON object (schema None) or one schema
    tool_grammar(tools, choice, …)   a tool call (serving/engine/tools.py's format) or an answer
    compile_grammar(tokenizer, g)    a matcher template, cached; GrammarError for a bad grammar
    Constraint                       one sequence's matcher: advance, done
    apply_masks(logits, rows, cs)    the batch's constrained rows masked in place

The tokenizer the grammar library needs is built from our own (serving/engine/tokenizer.py:
the byte-level BPE read from the GGUF file), once per tokenizer. Sequences without a grammar
pay nothing: only constrained rows are masked.

llguidance (Microsoft's Rust library behind Guidance, also used by vLLM and llama.cpp) is the
engine: Earley parsing over lexemes, with a token mask computed in well under a millisecond
per step for JSON schemas. Its resource limits bound what a hostile schema can cost; a schema
it cannot compile is a 400 naming the problem.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections import OrderedDict
from typing import Any

import llguidance
import numpy as np
import torch

from serving.engine.tools import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

# Compact JSON: no whitespace between tokens. A small model that may emit whitespace tends to
# emit nothing else (newlines until max_tokens); OpenAI's own structured output is compact too.
JSON_OPTIONS: dict[str, Any] = {"whitespace_flexible": False}
# Compiled grammars kept (by grammar text): repeated schemas skip compilation.
CACHED_GRAMMARS = 128
MAX_GRAMMAR_CHARS = 1 << 20  # the worker's body limit is 8 MiB; a schema is far smaller
# From this many constrained rows in one step on, masks are computed by the library's thread
# pool (see allowed_tokens); below, on the engine thread. Only with cores to spare: on 2
# cores the pool's threads take them from the model's, and 32 rows decoded 35% slower a step
# with it than without (benchmarks/RESULTS.md, "Structured output"); a mask is ~85 us a row.
PARALLEL_MASKS = 32 if (os.cpu_count() or 1) >= 8 else 1 << 30


class GrammarError(ValueError):
    """A schema or grammar that cannot be compiled (the server answers 400 with it)."""


# ---- grammars ------------------------------------------------------------------------------

# An integer a schema leaves unbounded is held to what every JSON parser reads exactly
# (I-JSON, RFC 7493): at most 16 digits. Unbounded, a small model can write "1111…" until
# max_tokens cuts the answer (invalid JSON); bounded, the digits must end.
SAFE_INTEGER = 2**53 - 1
_NOT_SCHEMAS = frozenset({"enum", "const", "default", "examples"})  # values, not schemas


def bounded(schema: Any) -> Any:
    """``schema`` with every integer that has no minimum or maximum given one (±2^53-1);
    a copy, the caller's schema is left as it is."""
    if isinstance(schema, list):
        return [bounded(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: v if k in _NOT_SCHEMAS else bounded(v) for k, v in schema.items()}
    kind = out.get("type")
    if kind == "integer" or (isinstance(kind, list) and "integer" in kind):
        if "minimum" not in out and "exclusiveMinimum" not in out:
            out["minimum"] = -SAFE_INTEGER
        if "maximum" not in out and "exclusiveMaximum" not in out:
            out["maximum"] = SAFE_INTEGER
    return out


def json_grammar(schema: dict[str, Any] | None) -> str:
    """The grammar of a JSON answer: any JSON object when ``schema`` is None (``json_object``),
    else a value that validates against ``schema`` (``json_schema``)."""
    target = {"type": "object"} if schema is None else bounded(schema)
    try:
        return llguidance.LLMatcher.grammar_from_json_schema(target, overrides=JSON_OPTIONS)
    except (ValueError, TypeError) as exc:
        raise GrammarError(f"The JSON schema cannot be used: {exc}") from None


def _call_schema(tool: dict[str, Any]) -> dict[str, Any]:
    fn = tool["function"]
    params = bounded(fn.get("parameters"))
    return {
        "type": "object",
        "properties": {
            "name": {"const": fn["name"]},
            "arguments": params if isinstance(params, dict) and params else {"type": "object"},
        },
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def calls_schema(
    tools: list[dict[str, Any]], *, only: str | None = None, parallel: bool = True
) -> dict[str, Any]:
    """The JSON schema of the call list in a tool-call answer: one or more (one when not
    ``parallel``) ``{"name": …, "arguments": {…}}`` objects, each naming one of ``tools``
    (or ``only`` that one) with arguments valid against its ``parameters``."""
    chosen = [t for t in tools if only is None or t["function"]["name"] == only]
    items = [_call_schema(t) for t in chosen]
    schema: dict[str, Any] = {
        "type": "array",
        "items": items[0] if len(items) == 1 else {"anyOf": items},
        "minItems": 1,
    }
    if not parallel:
        schema["maxItems"] = 1
    return schema


def tool_grammar(
    tools: list[dict[str, Any]],
    *,
    required: bool,
    only: str | None = None,
    parallel: bool = True,
    answer_schema: dict[str, Any] | None = None,
    json_answer: bool = False,
) -> str:
    """The grammar of an answer to a request with tools: ``<tool_call>[…]</tool_call>`` (see
    :func:`calls_schema`), or, unless ``required``, a plain answer instead: text that does not
    start with ``<``, or JSON when the request also asks for it (``json_answer``, with
    ``answer_schema`` for ``json_schema``)."""
    calls = {**calls_schema(tools, only=only, parallel=parallel), "x-guidance": JSON_OPTIONS}
    rules = [
        f"call: {json.dumps(TOOL_CALL_OPEN)} calls {json.dumps(TOOL_CALL_CLOSE)}",
        f"calls: %json {json.dumps(calls)}",
    ]
    if required:
        start = "start: call"
    elif json_answer:
        answer = {**bounded(answer_schema or {"type": "object"}), "x-guidance": JSON_OPTIONS}
        start = "start: answer | call"
        rules.append(f"answer: %json {json.dumps(answer)}")
    else:
        start = "start: ANSWER | call"
        rules.append(r"ANSWER: /[^<][\s\S]*/")
    return llguidance.LLMatcher.grammar_from_lark("\n".join([start, *rules]))


# ---- compiling -----------------------------------------------------------------------------


@functools.cache
def ll_tokenizer(tokenizer: Any) -> llguidance.LLTokenizer:
    """The grammar library's view of ``tokenizer`` (a ChatTokenizer): its vocabulary as bytes
    and its end-of-sequence tokens. About half a second, once per tokenizer."""
    return llguidance.LLTokenizer(
        tokenizer.to_json(),
        n_vocab=tokenizer.vocab_size,
        eos_token=sorted(tokenizer.eos_token_ids),
    )


_compiled: OrderedDict[tuple[int, str], llguidance.LLMatcher] = OrderedDict()
_lock = threading.Lock()


class CompiledGrammar(str):
    """A grammar's text that carries its compiled matcher (at its start): what the worker puts
    in ``SamplingParams.grammar``. Compiled off the event loop (protocol.parse), it is never
    compiled again on the engine thread, however many other grammars passed through the
    cache meanwhile."""

    template: llguidance.LLMatcher

    def __new__(cls, text: str, template: llguidance.LLMatcher) -> CompiledGrammar:
        obj = super().__new__(cls, text)
        obj.template = template
        return obj


def precompile(tokenizer: Any, grammar: str) -> CompiledGrammar:
    """``grammar`` compiled for ``tokenizer`` (GrammarError if it cannot be)."""
    return CompiledGrammar(grammar, compile_grammar(tokenizer, grammar))


def compile_grammar(tokenizer: Any, grammar: str) -> llguidance.LLMatcher:
    """A fresh matcher for ``grammar`` at its start (copied from its :class:`CompiledGrammar`
    or a cached template), or a :class:`GrammarError`. Compiling a large schema takes up to a
    second or two and releases the GIL: the worker does it off its event loop, once
    (:func:`precompile`)."""
    if isinstance(grammar, CompiledGrammar):
        return grammar.template.deep_copy()
    if len(grammar) > MAX_GRAMMAR_CHARS:
        raise GrammarError(f"The grammar is longer than {MAX_GRAMMAR_CHARS} characters.")
    key = (id(tokenizer), grammar)
    with _lock:
        template = _compiled.get(key)
        if template is not None:
            _compiled.move_to_end(key)
            return template.deep_copy()
    template = llguidance.LLMatcher(ll_tokenizer(tokenizer), grammar, log_level=0)
    if template.is_error():
        raise GrammarError(f"The schema cannot be enforced: {_short(template.get_error())}")
    with _lock:
        _compiled[key] = template
        while len(_compiled) > CACHED_GRAMMARS:
            _compiled.popitem(last=False)
        return template.deep_copy()


def _short(message: str, limit: int = 300) -> str:
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 1] + "…"


# ---- decoding ------------------------------------------------------------------------------


class Constraint:
    """One sequence's grammar state."""

    __slots__ = ("matcher", "vocab_size")

    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int) -> None:
        self.matcher = matcher
        self.vocab_size = vocab_size  # the tokenizer's, which the masks cover

    @classmethod
    def compile(cls, tokenizer: Any, grammar: str) -> Constraint:
        return cls(compile_grammar(tokenizer, grammar), ll_tokenizer(tokenizer).vocab_size)

    def advance(self, token: int) -> None:
        """Take the token the sequence appended; a token the grammar refuses (never one the
        mask allowed) raises GrammarError."""
        if not self.matcher.consume_token(token):
            raise GrammarError(f"the grammar refused a token: {_short(self.error)}")

    @property
    def done(self) -> bool:
        """Complete: nothing but the end of the sequence may follow."""
        return self.matcher.is_stopped()

    @property
    def error(self) -> str:
        return self.matcher.get_error()


@functools.cache
def _executor() -> llguidance.LLExecutor:
    return llguidance.LLExecutor(num_threads=max(1, min(4, os.cpu_count() or 1)))


def allowed_tokens(constraints: list[Constraint], width: int) -> np.ndarray:
    """(len(constraints), width) booleans: the tokens each constraint allows next (none
    beyond the tokenizer's vocabulary). Masks are computed on the calling thread, one after
    the other, unless there are at least :data:`PARALLEL_MASKS` of them: handing work to the
    library's thread pool costs a wake-up, which on a busy machine (the model's own threads
    keep the cores) can take a scheduler slice, tens of milliseconds, where a mask takes tens
    of microseconds. The bits are unpacked with numpy: torch's elementwise ops on a CPU cost
    a millisecond here (thread-pool barriers), numpy's tens of microseconds."""
    words = (constraints[0].vocab_size + 31) // 32
    bitmask = np.zeros((len(constraints), words), dtype=np.int32)
    row_bytes = words * 4
    if len(constraints) >= PARALLEL_MASKS:
        _executor().unsafe_compute_mask_ptr(
            [(c.matcher, i) for i, c in enumerate(constraints)], bitmask.ctypes.data, row_bytes,
            len(constraints),
        )  # fmt: skip
    else:
        base = bitmask.ctypes.data
        for i, c in enumerate(constraints):
            c.matcher.unsafe_compute_mask_ptr(base + i * row_bytes, row_bytes)
    allowed = np.unpackbits(bitmask.view(np.uint8), axis=1, bitorder="little").astype(bool)
    if allowed.shape[1] < width:
        allowed = np.pad(allowed, ((0, 0), (0, width - allowed.shape[1])))
    return allowed[:, :width]


def apply_masks(logits: torch.Tensor, rows: list[int], constraints: list[Constraint]) -> list[int]:
    """Set the logits of tokens each constrained row's grammar forbids to -inf, in place;
    returns the rows whose grammar allows no token at all (or is broken): they cannot be
    sampled."""
    if not rows:
        return []
    allowed = allowed_tokens(constraints, logits.shape[1])
    if logits.device.type == "cpu" and logits.dtype == torch.float32 and logits.is_contiguous():
        values = logits.numpy()  # the same memory (the model's logits are inference tensors)
        for i, row in enumerate(rows):
            np.putmask(values[row], ~allowed[i], -np.inf)
    else:
        mask = torch.from_numpy(allowed).to(logits.device)
        index = torch.tensor(rows, device=logits.device)
        with torch.inference_mode():  # the model's logits are inference tensors
            logits[index] = logits[index].masked_fill(~mask, float("-inf"))
    stuck = (~allowed.any(axis=1)).tolist()
    return [row for row, s, c in zip(rows, stuck, constraints, strict=True) if s or c.error]
