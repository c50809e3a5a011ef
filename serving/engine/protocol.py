"""OpenAI request parsing and response shaping for the model worker (no Django here)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

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
            content = m.get("content") or ""
            if isinstance(content, list):
                parts = [p.get("text") or "" for p in content if isinstance(p, dict)]
                if not all(isinstance(t, str) for t in parts):
                    raise ProtocolError(
                        "Message content parts must be text.", param=f"messages[{i}].content"
                    )
                content = "".join(parts)
            if not isinstance(content, str):
                raise ProtocolError("Message content must be text.", param=f"messages[{i}].content")
            role = "system" if m["role"] == "developer" else m["role"]
            norm.append({"role": role, "content": content})
        try:
            prompt_ids = tokenizer.encode(tokenizer.apply_chat_template(norm))
        except Exception as exc:  # noqa: BLE001 - the template refuses these messages
            raise ProtocolError(
                f"These messages do not fit the model's chat template: {exc}", param="messages"
            ) from None
    else:
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
    return ParsedRequest(kind, prompt_ids, params, stream, bool(opts.get("include_usage")), model)


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
