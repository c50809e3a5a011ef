"""Content screening, after admission: the tier's blocklist over the prompt, then PII
redaction of what goes upstream. Linear-time filters (serving.gateway.filters); a large
prompt is screened on a worker thread so the event loop keeps serving other tenants."""

from __future__ import annotations

import asyncio

from serving.gateway import filters, metrics
from serving.gateway.call import Call
from serving.gateway.errors import invalid

# Prompts longer than this (characters) are screened on a worker thread, off the event loop.
SCREEN_INLINE_CHARS = 32_768


async def screen(call: Call) -> None:
    """Refuse a prompt with a blocked term (400 ``content_blocked``); with the tier's PII
    redaction, redact the prompt in ``call.upstream_body``."""
    texts = call.api.prompt_texts(call.body)
    size = sum(len(t) for t in texts)
    if size > SCREEN_INLINE_CHARS:
        await asyncio.to_thread(_screen, call, texts)
    else:
        _screen(call, texts)


def _screen(call: Call, texts: list[str]) -> None:
    tier = call.tier
    term = filters.blocked_term(texts, tier.blocklist)
    if term:
        metrics.REJECTIONS.labels("blocklist").inc()
        raise invalid(
            f"The request contains a blocked term ('{term}') under your plan's content policy.",
            code="content_blocked",
        )
    if tier.pii_redaction:
        key = call.api.prompt_key
        call.upstream_body[key] = call.api.redact(call.body)[key]
