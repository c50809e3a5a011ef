"""OpenAI request parsing and response shaping for the model worker (no Django here).

Chat requests may offer ``tools`` (with ``tool_choice`` and ``parallel_tool_calls``) and ask
for JSON (``response_format``): both become a grammar (serving/engine/grammar.py) the
answer keeps to, compiled here, off the event loop. Tool calls come back in the worker's
format (serving/engine/tools.py) and leave as OpenAI ``tool_calls``."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from serving.engine import grammar
from serving.engine import tools as tool_format
from serving.engine.types import GREEDY_TEMPERATURE, CompletionDelta, SamplingParams, TokenLogprob

MAX_TOOLS = 128
TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


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


def _num(body: dict, name: str, lo: float, hi: float, default: float) -> float:
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ProtocolError(f"'{name}' must be a number.", param=name)
    if not lo <= v <= hi:
        raise ProtocolError(f"'{name}' must be between {lo} and {hi}.", param=name)
    return float(v)


def _int(body: dict, name: str, lo: int, hi: int, default: int | None) -> int | None:
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise ProtocolError(f"'{name}' must be an integer.", param=name)
    if not lo <= v <= hi:
        raise ProtocolError(f"'{name}' must be between {lo} and {hi}.", param=name)
    return v


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
    """A message's content as text; an assistant's ``tool_calls`` in the worker's format."""
    content = m.get("content") or ""
    where = f"messages[{i}].content"
    if isinstance(content, list):
        parts = []
        for j, p in enumerate(content):
            if not isinstance(p, dict):
                raise ProtocolError("Message content parts must be objects.", param=where)
            if p.get("type", "text") != "text":
                raise ProtocolError(
                    f"This model reads text only; content part {j} is of type "
                    f"'{str(p.get('type'))[:32]}'.",
                    param=f"{where}[{j}]",
                    code="unsupported_content",
                )
            parts.append(p.get("text") or "")
        if not all(isinstance(t, str) for t in parts):
            raise ProtocolError("Message content parts must be text.", param=where)
        content = "".join(parts)
    if not isinstance(content, str):
        raise ProtocolError("Message content must be text.", param=where)
    calls = m.get("tool_calls")
    if calls is not None and m.get("role") == "assistant":
        if not (
            isinstance(calls, list)
            and all(
                isinstance(c, dict)
                and isinstance(c.get("function"), dict)
                and isinstance(c["function"].get("name"), str)
                and isinstance(c["function"].get("arguments", ""), str)
                for c in calls
            )
        ):
            raise ProtocolError(
                "'tool_calls' must be an array of function calls (name and arguments).",
                param=f"messages[{i}].tool_calls",
            )
        if calls:
            content += tool_format.render_calls(calls)
    return content


def _tools(body: dict) -> tuple[list[dict] | None, str, str | None, bool]:
    """(tools, tool choice mode, forced function name, parallel) of a chat body; mode is
    "none", "auto" or "required" (a named function is "required" with its name)."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise ProtocolError("'parallel_tool_calls' must be a boolean.", param="parallel_tool_calls")
    if tools is None:
        if choice not in (None, "none"):
            raise ProtocolError(
                "'tool_choice' is only allowed when 'tools' are specified.", param="tool_choice"
            )
        return None, "none", None, True
    if not isinstance(tools, list) or not tools or len(tools) > MAX_TOOLS:
        raise ProtocolError(f"'tools' must be an array of 1 to {MAX_TOOLS} tools.", param="tools")
    names = []
    for i, t in enumerate(tools):
        fn = t.get("function") if isinstance(t, dict) else None
        if not (isinstance(t, dict) and t.get("type") == "function" and isinstance(fn, dict)):
            raise ProtocolError("Each tool must be a function tool.", param=f"tools[{i}]")
        name = fn.get("name")
        if not (isinstance(name, str) and TOOL_NAME.fullmatch(name)):
            raise ProtocolError(
                "A function name is 1 to 64 letters, digits, underscores or dashes.",
                param=f"tools[{i}].function.name",
            )
        params = fn.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise ProtocolError(
                "'parameters' must be a JSON schema object.", param=f"tools[{i}].function"
            )
        names.append(name)
    if choice is None:
        choice = "auto"
    if choice in ("none", "auto", "required"):
        return tools, choice, None, parallel is not False
    name = None
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
    if not isinstance(name, str) or name not in names:
        raise ProtocolError(
            "'tool_choice' must be 'none', 'auto', 'required' or a function of 'tools'.",
            param="tool_choice",
        )
    return tools, "required", name, parallel is not False


def _answer_format(body: dict) -> tuple[bool, dict | None]:
    """(whether the answer must be JSON, its schema or None) from ``response_format``."""
    fmt = body.get("response_format")
    if fmt is None:
        return False, None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return False, None
    if kind == "json_object":
        return True, None
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(spec, dict) or (schema is not None and not isinstance(schema, dict)):
            raise ProtocolError(
                "'response_format.json_schema' must be an object with a 'schema' object.",
                param="response_format.json_schema",
            )
        return True, schema
    raise ProtocolError(
        "'response_format.type' must be 'text', 'json_object' or 'json_schema'.",
        param="response_format.type",
    )


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


def parse(body: Any, kind: str, tokenizer, model_name: str, max_model_len: int) -> ParsedRequest:
    """Validate an OpenAI chat or completions body and tokenize its prompt."""
    if not isinstance(body, dict):
        raise ProtocolError("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str):
        raise ProtocolError("'model' is required.", param="model")
    if kind == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ProtocolError("'messages' must be a non-empty array.", param="messages")
        norm = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise ProtocolError("Each message needs a 'role'.", param=f"messages[{i}]")
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
    else:
        offered, grammar_text = None, None
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if isinstance(prompt, str):
            prompt_ids = tokenizer.encode(prompt, add_special_tokens=True)
        elif (
            isinstance(prompt, list)
            and prompt
            and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
        ):
            prompt_ids = list(prompt)
        else:
            raise ProtocolError(
                "'prompt' must be a string or an array of token ids (one prompt per request).",
                param="prompt",
            )
    if not prompt_ids:
        raise ProtocolError("The prompt is empty.", param="prompt")
    room = max(1, max_model_len - len(prompt_ids))
    max_tokens = _int(body, "max_completion_tokens", 1, 10**6, None)
    if max_tokens is None:
        max_tokens = _int(body, "max_tokens", 1, 10**6, None)
    if max_tokens is None:
        max_tokens = min(room, 1024) if kind == "chat" else 16
    if len(prompt_ids) + max_tokens > max_model_len:
        raise ProtocolError(
            f"This model's maximum context length is {max_model_len} tokens. However, you "
            f"requested {len(prompt_ids) + max_tokens} tokens ({len(prompt_ids)} in the "
            f"prompt, {max_tokens} for the completion).",
            param="messages" if kind == "chat" else "prompt",
            code="context_length_exceeded",
        )
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    elif not (isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop)):
        raise ProtocolError("'stop' must be a string or up to 4 strings.", param="stop")
    if kind == "chat":
        logprobs = body.get("logprobs") or False
        if not isinstance(logprobs, bool):
            raise ProtocolError("'logprobs' must be a boolean.", param="logprobs")
        top_logprobs = _int(body, "top_logprobs", 0, 20, 0)
    else:
        lp = _int(body, "logprobs", 0, 5, None)
        logprobs, top_logprobs = lp is not None, lp or 0
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise ProtocolError("'stream' must be a boolean.", param="stream")
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise ProtocolError("'stream_options' must be an object.", param="stream_options")
    seed = _int(body, "seed", -(2**63), 2**63 - 1, None)
    temperature = _num(body, "temperature", 0, 2, 1.0)
    top_p = _num(body, "top_p", 0, 1, 1.0)
    if temperature < GREEDY_TEMPERATURE or top_p == 0:
        # Greedy: a tinier temperature would overflow the logits (1e-300 is 0.0 in float32),
        # and top_p 0 keeps only the most likely token.
        temperature, top_p = 0.0, 1.0
    params = SamplingParams(
        temperature=temperature,
        top_p=top_p,
        top_k=_int(body, "top_k", -1, 10**6, 0) or 0,
        seed=None if seed is None else seed & 0x7FFF_FFFF_FFFF_FFFF,
        max_tokens=max_tokens,
        stop=stop,
        presence_penalty=_num(body, "presence_penalty", -2, 2, 0.0),
        frequency_penalty=_num(body, "frequency_penalty", -2, 2, 0.0),
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        n=_int(body, "n", 1, 16, 1),
        ignore_eos=bool(body.get("ignore_eos", False)),
    )
    if grammar_text is not None:
        try:  # compiled here, off the event loop, and carried to the engine compiled
            params.grammar = grammar.precompile(tokenizer, grammar_text)
        except grammar.GrammarError as exc:
            param = "tools" if offered else "response_format"
            raise ProtocolError(str(exc), param=param, code="invalid_schema") from None
    return ParsedRequest(
        kind, prompt_ids, params, stream, bool(opts.get("include_usage")), model, bool(offered)
    )


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
