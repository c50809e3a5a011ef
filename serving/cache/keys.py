"""What a cached answer is keyed by: the tenant's scope, the public model, and a canonical form
of everything in the request that changes the output.

Two requests get the same exact key only if the model would see the same input with the same
sampling parameters. The semantic cache splits the same material in two: the *context* (system
prompt, earlier turns, parameters), hashed, and the last user message, embedded.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

# Parameters that never change what the model produces.
NOT_OUTPUT_CHANGING = frozenset({"model", "stream", "stream_options", "user", "metadata", "store"})
SHARED_SCOPE = "shared"
BYPASS_DIRECTIVES = ("no-cache", "no-store")


def scope_for(tenant: Any) -> str:
    """``"shared"`` for a tenant that opted into the shared pool, else ``"t:<tenant id>"``."""
    return SHARED_SCOPE if getattr(tenant, "cache_shared_pool", False) else f"t:{tenant.pk}"


def canonical(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, so equal requests hash equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _digest(value: Any) -> str:
    return hashlib.sha256(canonical(value).encode()).hexdigest()


@functools.cache
def _exact_secret() -> bytes:
    from django.conf import settings

    return hashlib.sha256(b"switchyard exact cache key\0" + settings.SECRET_KEY.encode()).digest()


def _keyed_digest(value: Any) -> str:
    """HMAC-SHA256 under a key derived from ``SECRET_KEY``: whoever reads Redis cannot test
    guesses of a prompt against the keys (an exact key is of the request as received, which,
    on a tier that redacts PII, still holds it)."""
    return hmac.new(_exact_secret(), canonical(value).encode(), hashlib.sha256).hexdigest()


def output_params(body: dict[str, Any]) -> dict[str, Any]:
    """The parameters of ``body`` that change the output (prompt and messages excluded)."""
    return {
        k: v
        for k, v in body.items()
        if k not in NOT_OUTPUT_CHANGING and k not in ("messages", "prompt")
    }


def exact_key(scope: str, model: str, endpoint: str, body: dict[str, Any]) -> str:
    """The Redis key of an exact-cache entry for ``body`` (the request as received, before
    PII redaction: equal requests are redacted equally, so they still get equal answers)."""
    material = {
        "endpoint": endpoint,
        "input": body.get("messages", body.get("prompt")),
        "params": output_params(body),
    }
    return f"sy:cache:x:{scope}:{model}:{_keyed_digest(material)}"


def is_deterministic(body: dict[str, Any]) -> bool:
    """Temperature 0 or a fixed seed: the only requests whose answer may be replayed exactly."""
    return body.get("temperature") == 0 or body.get("seed") is not None


@dataclass(frozen=True)
class SemanticKey:
    context_hash: str
    text: str  # the last user message (or the prompt), which is embedded


def semantic_key(
    endpoint: str, body: dict[str, Any], *, sampled_ok: bool = False
) -> SemanticKey | None:
    """Split a request into (context hash, last user text), or ``None`` when the request is not
    one the semantic cache answers: several choices, a non-user last turn, a non-text prompt,
    tools (the answer may be a call that depends on them), or a sampled request (temperature
    above 0, OpenAI's default of 1 included) unless the tier opts in with ``sampled_ok``.
    Nothing the cache cannot serve is embedded."""
    if (body.get("n") or 1) != 1 or (body.get("best_of") or 1) != 1:
        return None
    if body.get("tools") or body.get("functions"):
        return None
    if not sampled_ok and not is_deterministic(body):
        return None
    if endpoint == "chat.completions":
        messages = body["messages"]
        last = messages[-1]
        if last.get("role") != "user":
            return None
        text = _text(last.get("content"))
        earlier = messages[:-1]
    elif endpoint == "completions":
        prompt = body["prompt"]
        if isinstance(prompt, list):
            if len(prompt) != 1 or not isinstance(prompt[0], str):
                return None
            prompt = prompt[0]
        text, earlier = prompt, []
    else:
        return None
    text = text.strip()
    if not text:
        return None
    context = {"endpoint": endpoint, "earlier": earlier, "params": output_params(body)}
    return SemanticKey(context_hash=_digest(context), text=text)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def bypass_requested(cache_control: str | None, body_flag: Any) -> tuple[bool, bool]:
    """(skip lookup, skip store) from a ``Cache-Control`` header and the ``cache`` body field.

    ``no-cache`` asks for a fresh answer (which then refreshes the cache); ``no-store`` and
    ``"cache": false`` keep the request out of the cache entirely.
    """
    directives = {d.strip().lower() for d in (cache_control or "").split(",")}
    if body_flag is False or "no-store" in directives:
        return True, True
    if "no-cache" in directives:
        return True, False
    return False, False
