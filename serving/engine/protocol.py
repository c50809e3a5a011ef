"""OpenAI request parsing and response shaping for the model worker (no Django here).

A body is validated against the request models the gateway uses too
(serving/engine/request_models.py), so a request the gateway accepts is one the worker takes,
with the same limits and the same 400 naming the parameter; parameters the worker does not
know are ignored. What is the worker's own: one prompt per completions request, text content
only (an image is 400 ``unsupported_content``), the context length, and ``ignore_eos``.

Chat requests may offer ``tools`` (with ``tool_choice`` and ``parallel_tool_calls``) and ask
for JSON (``response_format``): both become a grammar (serving/engine/grammar.py) the
answer keeps to, compiled here, off the event loop. Tool calls come back in the worker's
format (serving/engine/tools.py) and leave as OpenAI ``tool_calls``."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, NotRequired

from pydantic import with_config

from serving.engine import grammar
from serving.engine import tools as tool_format
from serving.engine.request_errors import RequestError
from serving.engine.request_models import CLOSED, ChatCompletionRequest, CompletionRequest
from serving.engine.request_validation import EMBEDDING, RequestModel
from serving.engine.types import GREEDY_TEMPERATURE, CompletionDelta, SamplingParams, TokenLogprob


class ProtocolError(Exception):
    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None, status: int = 400
    ) -> None:
        super().__init__(message)
        self.message, self.param, self.code, self.status = message, param, code, status

    def body(self) -> dict[str, Any]:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {
            "error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        }


@with_config(CLOSED)
class WorkerChatRequest(ChatCompletionRequest):
    """A chat request to the worker: the public one and the worker's own parameters."""

    ignore_eos: NotRequired[bool | None]  # generate to max_tokens (benchmarks, tests)


@with_config(CLOSED)
class WorkerCompletionRequest(CompletionRequest):
    """A completions request to the worker: the public one and the worker's own parameters."""

    ignore_eos: NotRequired[bool | None]


MODELS = {"chat": RequestModel(WorkerChatRequest), "text": RequestModel(WorkerCompletionRequest)}


@dataclass
class ParsedRequest:
    kind: str  # "chat" or "text"
    prompt_ids: list[int]
    params: SamplingParams
    stream: bool
    include_usage: bool
    model: str
    tools: bool = False  # the answer may be a tool call (tools offered, tool_choice not none)


def _message_text(m: dict, i: int) -> str:
    """A (validated) message's content as text; an assistant's ``tool_calls`` in the
    worker's format."""
    content = m.get("content") or ""
    if isinstance(content, list):
        for j, p in enumerate(content):
            if p["type"] != "text":
                raise ProtocolError(
                    f"This model reads text only; content part {j} is of type '{p['type']}'.",
                    param=f"messages[{i}].content[{j}]",
                    code="unsupported_content",
                )
        content = "".join(p["text"] for p in content)
    calls = m.get("tool_calls")
    if calls and m["role"] == "assistant":
        content += tool_format.render_calls(calls)
    return content


def _tools(body: dict) -> tuple[list[dict] | None, str, str | None, bool]:
    """(tools, tool choice mode, forced function name, parallel) of a validated chat body;
    mode is "none", "auto" or "required" (a named function is "required" with its name)."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    parallel = body.get("parallel_tool_calls") is not False
    if tools is None:
        if choice not in (None, "none"):
            raise ProtocolError(
                "'tool_choice' is only allowed when 'tools' are specified.", param="tool_choice"
            )
        return None, "none", None, True
    if choice is None:
        choice = "auto"
    if isinstance(choice, str):
        return tools, choice, None, parallel
    name = choice["function"]["name"]
    if name not in {t["function"]["name"] for t in tools}:
        raise ProtocolError(
            "'tool_choice' must be 'none', 'auto', 'required' or a function of 'tools'.",
            param="tool_choice",
        )
    return tools, "required", name, parallel


def _answer_format(body: dict) -> tuple[bool, dict | None]:
    """(whether the answer must be JSON, its schema or None) from ``response_format``."""
    fmt = body.get("response_format")
    if fmt is None or fmt["type"] == "text":
        return False, None
    if fmt["type"] == "json_object":
        return True, None
    return True, fmt["json_schema"].get("schema")


def _grammar(body: dict, tools, mode: str, only: str | None, parallel: bool) -> str | None:
    """The grammar the answer keeps to (tools, JSON), or None for a free answer."""
    wants_json, schema = _answer_format(body)
    try:
        if tools and mode != "none":
            return grammar.tool_grammar(tools, required=mode == "required", only=only,
                                        parallel=parallel, answer_schema=schema,
                                        json_answer=wants_json)  # fmt: skip
        if wants_json:
            return grammar.json_grammar(schema)
    except grammar.GrammarError as exc:
        raise ProtocolError(str(exc), param="response_format", code="invalid_schema") from None
    return None


def _validated(body: Any, model: RequestModel) -> dict[str, Any]:
    """``body`` validated against ``model`` (unknown fields ignored)."""
    if not isinstance(body, dict):
        raise ProtocolError("The request body must be a JSON object.")
    try:
        return model.validate(body, ignore_unknown=True)
    except RequestError as exc:
        raise ProtocolError(exc.message, param=exc.param, code=exc.code) from None


def _chat_prompt(body: dict, tokenizer) -> tuple[list[int], list | None, str | None]:
    """(prompt ids, tools offered, grammar) of a validated chat body. Messages, tools and
    formats are read as sent: the template and the grammars get every key, even those the
    request models do not name."""
    norm = []
    for i, m in enumerate(body["messages"]):
        role = "system" if m["role"] == "developer" else m["role"]
        norm.append({"role": role, "content": _message_text(m, i)})
    tools, mode, only, parallel = _tools(body)
    grammar_text = _grammar(body, tools, mode, only, parallel)
    offered = tools if mode != "none" else None
    try:
        prompt_ids = tokenizer.encode(tokenizer.apply_chat_template(norm, tools=offered))
    except Exception as exc:  # noqa: BLE001 - the template refuses these messages
        raise ProtocolError(
            f"These messages do not fit the model's chat template: {exc}", param="messages"
        ) from None
    return prompt_ids, offered, grammar_text


def _text_prompt(req: dict, tokenizer) -> list[int]:
    """The prompt ids of a completions request: one prompt, text or token ids."""
    prompt = req["prompt"]
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return tokenizer.encode(prompt, add_special_tokens=True)
    if isinstance(prompt[0], int):
        return list(prompt)
    raise ProtocolError(
        "'prompt' must be a string or an array of token ids (one prompt per request).",
        param="prompt",
    )


def _max_tokens(req: dict, kind: str, prompt_len: int, max_model_len: int) -> int:
    """The cap on output tokens per choice; a 400 when the prompt and it pass the context."""
    max_tokens = req.get("max_completion_tokens") or req.get("max_tokens")
    if max_tokens is None:
        room = max(1, max_model_len - prompt_len)
        max_tokens = min(room, 1024) if kind == "chat" else 16
    if prompt_len + max_tokens > max_model_len:
        raise ProtocolError(
            f"This model's maximum context length is {max_model_len} tokens. However, you "
            f"requested {prompt_len + max_tokens} tokens ({prompt_len} in the "
            f"prompt, {max_tokens} for the completion).",
            param="messages" if kind == "chat" else "prompt",
            code="context_length_exceeded",
        )
    return max_tokens


def _sampling(req: dict, kind: str, max_tokens: int) -> SamplingParams:
    """The sampling parameters of a validated request."""
    stop = req.get("stop") or []
    if kind == "chat":
        logprobs, top_logprobs = bool(req.get("logprobs")), req.get("top_logprobs") or 0
    else:
        lp = req.get("logprobs")
        logprobs, top_logprobs = lp is not None, lp or 0
    seed = req.get("seed")
    temperature = _or(req.get("temperature"), 1.0)
    top_p = _or(req.get("top_p"), 1.0)
    if temperature < GREEDY_TEMPERATURE or top_p == 0:
        # Greedy: a tinier temperature would overflow the logits (1e-300 is 0.0 in float32),
        # and top_p 0 keeps only the most likely token.
        temperature, top_p = 0.0, 1.0
    return SamplingParams(
        temperature=temperature,
        top_p=top_p,
        top_k=req.get("top_k") or 0,
        seed=None if seed is None else seed & 0x7FFF_FFFF_FFFF_FFFF,
        max_tokens=max_tokens,
        stop=[stop] if isinstance(stop, str) else stop,
        presence_penalty=_or(req.get("presence_penalty"), 0.0),
        frequency_penalty=_or(req.get("frequency_penalty"), 0.0),
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        n=req.get("n") or 1,
        ignore_eos=bool(req.get("ignore_eos")),
    )


def _or(v: float | None, default: float) -> float:
    return default if v is None else float(v)


def parse(body: Any, kind: str, tokenizer, model_name: str, max_model_len: int) -> ParsedRequest:
    """Validate an OpenAI chat ("chat") or completions ("text") body and tokenize its
    prompt."""
    req = _validated(body, MODELS[kind])
    if kind == "chat":
        prompt_ids, offered, grammar_text = _chat_prompt(body, tokenizer)
    else:
        prompt_ids, offered, grammar_text = _text_prompt(req, tokenizer), None, None
    if not prompt_ids:
        raise ProtocolError("The prompt is empty.", param="prompt")
    max_tokens = _max_tokens(req, kind, len(prompt_ids), max_model_len)
    params = _sampling(req, kind, max_tokens)
    if grammar_text is not None:
        try:  # compiled here, off the event loop, and carried to the engine compiled
            params.grammar = grammar.precompile(tokenizer, grammar_text)
        except grammar.GrammarError as exc:
            param = "tools" if offered else "response_format"
            raise ProtocolError(str(exc), param=param, code="invalid_schema") from None
    include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
    return ParsedRequest(
        kind, prompt_ids, params, bool(req.get("stream")), include_usage, req["model"],
        bool(offered),
    )  # fmt: skip


def parse_embeddings(body: Any, model_name: str) -> tuple[list[str], str]:
    """The texts to embed and the encoding format of an embeddings body, validated as the
    gateway validates it; this worker embeds text (not token ids) with ``model_name``."""
    if not isinstance(body, dict) or body.get("model") != model_name:
        raise ProtocolError(
            f"Use model `{model_name}` for embeddings.",
            param="model",
            code="model_not_found",
            status=404,
        )
    req = _validated(body, EMBEDDING)
    inputs = req["input"]
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs[0], str):
        raise ProtocolError(
            "'input' must be a non-empty string or array of strings.", param="input"
        )
    return inputs, req.get("encoding_format") or "float"


def new_id(kind: str) -> str:
    return f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"


def usage(prompt: int, completion: int, cached: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def chat_logprobs(items: list[TokenLogprob]) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": lp.token,
                "logprob": lp.logprob,
                "bytes": list(lp.token.encode()),
                "top_logprobs": [
                    {"token": t, "logprob": v, "bytes": list(t.encode())} for _, t, v in lp.top
                ],
            }
            for lp in items
        ]
    }


def text_logprobs(items: list[TokenLogprob]) -> dict[str, Any]:
    return {
        "tokens": [lp.token for lp in items],
        "token_logprobs": [lp.logprob for lp in items],
        "top_logprobs": [{t: v for _, t, v in lp.top} for lp in items],
        "text_offset": [],
    }


def chat_message(text: str, finish: str | None, tools: bool) -> tuple[dict[str, Any], str | None]:
    """A finished chat choice's message and finish reason: a tool call when the request
    offered tools and the answer is one (``finish_reason: tool_calls``), else text."""
    calls = tool_format.parse_calls(text) if tools else None
    if calls is None:
        return {"role": "assistant", "content": text}, finish
    message = {"role": "assistant", "content": None, "tool_calls": calls}
    return message, "tool_calls" if finish == "stop" else finish


def chat_chunks(
    rid: str,
    created: int,
    model: str,
    delta: CompletionDelta,
    first: bool,
    calls: tool_format.CallStream,
) -> list[dict[str, Any]]:
    """The stream chunks of one delta of a request with tools: content as it comes, or a
    tool call's deltas (id and name, then arguments); the last one carries the finish
    reason (``tool_calls`` for a complete call)."""
    pieces = calls.feed(delta.text)
    finish = delta.finish_reason
    if finish is not None:
        more, complete = calls.finish()
        pieces += more
        if complete and finish == "stop":
            finish = "tool_calls"
    if not pieces and (first or finish is not None or delta.logprobs):
        pieces = [{} if calls.is_call else {"content": ""}]
    out = []
    for n, piece in enumerate(pieces):
        d = {"role": "assistant", **piece} if first and n == 0 else piece
        last = n == len(pieces) - 1
        choice: dict[str, Any] = {
            "index": delta.index,
            "delta": d,
            "finish_reason": finish if last else None,
        }
        if last and delta.logprobs:
            choice["logprobs"] = chat_logprobs(delta.logprobs)
        head = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model}
        out.append({**head, "choices": [choice]})
    return out


def chunk(
    kind: str, rid: str, created: int, model: str, delta: CompletionDelta, first: bool
) -> dict[str, Any]:
    if kind == "chat":
        d: dict[str, Any] = {"content": delta.text}
        if first:
            d["role"] = "assistant"
        choice: dict[str, Any] = {
            "index": delta.index,
            "delta": d,
            "finish_reason": delta.finish_reason,
        }
        if delta.logprobs:
            choice["logprobs"] = chat_logprobs(delta.logprobs)
        obj = "chat.completion.chunk"
    else:
        choice = {
            "index": delta.index,
            "text": delta.text,
            "finish_reason": delta.finish_reason,
            "logprobs": text_logprobs(delta.logprobs) if delta.logprobs else None,
        }
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice]}


def now() -> int:
    return int(time.time())
