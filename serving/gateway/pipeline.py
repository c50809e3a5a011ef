"""The gateway pipeline: ingress → routing → provider call → egress, as small stages.

Stages run cheap-first, so that a hostile request costs little before it counts against the
tenant's limits (body size is enforced earlier still, at the ASGI edge):

    authenticate  key → tenant, tier                       (tenants.auth)
    validate      OpenAI schema, bounded numbers            (validation; linear in the body)
    route         public model → deployment                 (routing: the seam)
    admit         rate limits + budget reservation          (ratelimit, budget)
    context       prompt estimate against the window        (arithmetic; after admission,
                                                             so oversized prompts count)
    screen        blocklist, PII redaction                  (filters; linear, off the loop
                                                             when the prompt is large)
    call          upstream, JSON or stream                  (upstream, failover)
    egress        output redaction, JSON check              (filters)
    finish        settle limits and budget, meter usage, log (always, exactly once, also
                                                             when the client goes away)

Views (HTTP, SSE) and the WebSocket consumer drive the same :class:`Gateway` through
:meth:`Gateway.begin` and then :meth:`Gateway.complete` or :meth:`Gateway.stream`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from django.conf import settings

from billing.ledger import BudgetExhausted, BudgetLedger, BudgetReservation
from billing.pricing import Price
from billing.usage import USAGE_STREAM, usage_event
from serving.cache.stage import CacheStage, hit_charge
from serving.gateway import filters, metrics, tokens
from serving.gateway.errors import (
    GatewayError,
    insufficient_quota,
    invalid,
    rate_limited,
    upstream_error,
)
from serving.gateway.ratelimit import Limits, RateLimited, RateLimiter, Reservation
from serving.gateway.upstream import abort_upstream
from serving.gateway.validation import (
    capabilities_needed,
    max_output_tokens,
    output_cap,
    sequences,
    unknown_params,
    validate,
)
from serving.request_log import REQUEST_LOG_STREAM
from serving.routing.classifier import task_classifier
from serving.routing.failover import Failover
from serving.routing.health import DeploymentHealth, LiveState
from serving.routing.router import Route, Router
from serving.routing.table import (
    RouteContext,
    RoutingTable,
    adeployment_price,
    arouting_table,
)
from switchyard.streams import stream_add
from tenants.auth import AuthContext, AuthFailure, aauthenticate_key

log = logging.getLogger(__name__)

PATHS = {
    "chat.completions": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
}
# What cost-aware routing assumes a request without max_tokens will produce (an estimate for
# choosing among deployments; reservations use the tier's cap or the context window, and no
# max_tokens is ever injected upstream).
EXPECTED_OUTPUT_TOKENS = 256
# The task classifier reads at most this much of the prompt (its encoder truncates anyway).
CLASSIFIER_CHARS = 4096
# Prompts longer than this (characters) are screened on a worker thread, off the event loop.
SCREEN_INLINE_CHARS = 32_768
# Characters of a client's own request id kept as its label.
CLIENT_REQUEST_ID_CHARS = 128


def clean_label(value: str, limit: int) -> str:
    """A client-supplied label fit to log and echo: printable characters only, bounded."""
    value = value[: limit * 4]
    return "".join(ch for ch in value if ch.isprintable())[:limit]


def estimate_tokens(text: str) -> int:
    """A deliberately generous prompt-token estimate (about 3 bytes a token) for reservations
    and the context check; the upstream's exact count replaces it at settlement."""
    return (len(text.encode("utf-8")) + 2) // 3


# What an image part is assumed to cost before the upstream counts it (OpenAI's high-detail
# 1024x1024 image: 85 + 6 x 170 tokens).
IMAGE_TOKENS = 1105


def _message_text(msg: dict[str, Any]) -> str:
    """A message's text: its content, and the names and arguments of its tool calls."""
    content = msg.get("content")
    text = ""
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        text = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    calls = tool_call_text(msg)
    return f"{text}\n{calls}" if text and calls else text or calls


def tool_call_text(part: Any) -> str:
    """The function names and arguments of a message's (or a stream delta's) tool calls."""
    calls = part.get("tool_calls") if isinstance(part, dict) else None
    if not isinstance(calls, list):
        return ""
    out = []
    for c in calls:
        fn = c.get("function") if isinstance(c, dict) else None
        if isinstance(fn, dict):
            out += [v for v in (fn.get("name"), fn.get("arguments")) if isinstance(v, str) and v]
    return "".join(out)


def prompt_texts(endpoint: str, body: dict[str, Any]) -> list[str]:
    if endpoint == "chat.completions":
        texts = [_message_text(m) for m in body["messages"]]
        if body.get("tools"):  # the definitions are prompt tokens too
            texts.append(json.dumps(body["tools"], ensure_ascii=False, separators=(",", ":")))
        return texts
    key = "prompt" if endpoint == "completions" else "input"
    value = body[key]
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and isinstance(value[0], str):
        return list(value)
    return []


def classifier_text(endpoint: str, body: dict[str, Any]) -> str:
    """What the task classifier reads: the last user message, or the prompt (bounded: the
    classifier's CPU per request must not grow with the prompt)."""
    if endpoint == "chat.completions":
        users = [m for m in body["messages"] if m.get("role") == "user"]
        return _message_text(users[-1])[:CLASSIFIER_CHARS] if users else ""
    return "\n".join(prompt_texts(endpoint, body))[:CLASSIFIER_CHARS]


def _token_count(endpoint: str, body: dict[str, Any]) -> int:
    if endpoint == "chat.completions":
        tools = body.get("tools")
        images = sum(
            1
            for m in body["messages"]
            if isinstance(m.get("content"), list)
            for p in m["content"]
            if p.get("type") == "image_url"
        )
        return (
            sum(estimate_tokens(_message_text(m)) + 4 for m in body["messages"])
            + 3
            + (estimate_tokens(json.dumps(tools, ensure_ascii=False)) if tools else 0)
            + images * IMAGE_TOKENS
        )
    key = "prompt" if endpoint == "completions" else "input"
    value = body[key]
    if isinstance(value, str):
        return estimate_tokens(value)
    if value and isinstance(value[0], int):
        return len(value)
    if value and isinstance(value[0], list):
        return sum(len(v) for v in value)
    return sum(estimate_tokens(v) for v in value)


def _redact_body(endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    body = dict(body)
    if endpoint == "chat.completions":
        msgs = []
        for m in body["messages"]:
            m = dict(m)
            if isinstance(m.get("content"), str):
                m["content"] = filters.redact(m["content"])
            elif isinstance(m.get("content"), list):
                m["content"] = [
                    {**p, "text": filters.redact(p["text"])} if p.get("type") == "text" else p
                    for p in m["content"]
                ]  # image parts go as they are
            if m.get("tool_calls"):  # earlier calls' arguments, kept JSON
                m["tool_calls"] = [{**c, "function": dict(c["function"])} for c in m["tool_calls"]]
                filters.redact_tool_calls(m)
            msgs.append(m)
        body["messages"] = msgs
    else:
        key = "prompt" if endpoint == "completions" else "input"
        v = body[key]
        if isinstance(v, str):
            body[key] = filters.redact(v)
        elif isinstance(v, list) and v and isinstance(v[0], str):
            body[key] = [filters.redact(s) for s in v]
    return body


@dataclass
class Call:
    """Everything about one request as it moves through the pipeline."""

    endpoint: str
    body: dict[str, Any]
    auth: AuthContext
    # Always minted here: it keys the usage record and the request log. A client's own
    # X-Request-Id is only a label (client_request_id), never an identity.
    request_id: str = field(default_factory=lambda: f"req_{uuid.uuid4().hex}")
    client_request_id: str = ""
    created: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    started: float = field(default_factory=time.perf_counter)
    route: Route | None = None
    live: LiveState | None = None
    task_class: str | None = None
    max_cost: int | None = None  # the caller's per-request budget, micro-dollars
    upstream_body: dict[str, Any] = field(default_factory=dict)
    prompt_estimate: int = 0
    max_output: int = 0  # output tokens reserved (the client's cap, else the tier's or window)
    requested_output: int | None = None  # the client's max_tokens × n, if it sent one
    price: Price | None = None
    limit_reservation: Reservation | None = None
    budget_reservation: BudgetReservation | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    status: int = 200
    error_code: str = ""
    ttft: float | None = None
    cache: str = "miss"
    cache_control: str = ""
    cache_plan: Any = None
    cache_keep: dict[str, Any] | None = None  # a miss's answer to store (CacheStage.keep)
    response_for_log: dict[str, Any] | None = None
    admitted: bool = False
    context_error: GatewayError | None = None
    finished: bool = False

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def tier(self):
        return self.auth.tier

    def headers(self) -> dict[str, str]:
        h = {"x-request-id": self.request_id, "x-switchyard-cache": self.cache}
        if self.client_request_id:
            h["x-client-request-id"] = self.client_request_id
        if self.route:
            h["x-switchyard-route"] = self.route.header()
        if self.limit_reservation:
            h.update(self.limit_reservation.headers)
        return h


def _count(value: Any) -> int:
    """A token count reported by an upstream: a non-negative integer, whatever it sent."""
    try:
        return max(int(value or 0), 0) if not isinstance(value, bool) else 0
    except (TypeError, ValueError, OverflowError):
        return 0


def prefix_salt(call: Call) -> str:
    """What a model worker salts its prefix cache with: blocks are shared only within one
    tenant, or among the tenants that opted into the shared cache pool."""
    tenant = call.auth.tenant
    return "shared" if tenant.cache_shared_pool else f"t{tenant.pk}"


def gateway_redis() -> aioredis.Redis:
    """The gateway's Redis client: a bounded pool where a request waits for a free connection
    (redis-py's default pool raises "Too many connections" past 100 in use)."""
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.REDIS_URL, max_connections=settings.SWITCHYARD_REDIS_MAX_CONNECTIONS, timeout=5
    )
    return aioredis.Redis(connection_pool=pool)


class Gateway:
    """One per process. Holds the Redis-backed limiter and ledger and the router."""

    def __init__(self, redis_client: aioredis.Redis | None = None) -> None:
        self.redis = redis_client or gateway_redis()
        self.limiter = RateLimiter(self.redis)
        self.ledger = BudgetLedger(self.redis)
        self.router = Router()
        self.cache = CacheStage(self.redis)
        self.health = DeploymentHealth(self.redis)
        self.failover = Failover(self.health)
        # Metering's fallback tokenizer takes seconds to load: load it before it is needed.
        threading.Thread(target=tokens.counting_tokenizer, daemon=True).start()

    # ---- ingress -----------------------------------------------------------------------

    async def authenticate(
        self, authorization: str | None, client: str | None = None
    ) -> AuthContext:
        """The caller's key, tenant and tier, or an OpenAI-format refusal: 401 for a missing,
        unknown, revoked or expired key, 403 for a suspended tenant, 429 with Retry-After
        once ``client`` (the peer address) has failed too often (tenants.auth_throttle)."""
        scheme, _, raw = (authorization or "").partition(" ")
        if authorization and (scheme.lower() != "bearer" or not raw.strip()):
            metrics.REJECTIONS.labels("auth").inc()
            raise GatewayError(401, "Use 'Authorization: Bearer <key>'.", code="invalid_api_key")
        try:
            return await aauthenticate_key(raw.strip(), client)
        except AuthFailure as exc:
            metrics.REJECTIONS.labels("auth").inc()
            if exc.reason == "throttled":
                raise GatewayError(
                    429,
                    exc.message,
                    type="requests",
                    code="too_many_auth_failures",
                    headers={"Retry-After": str(exc.retry_after)},
                ) from None
            if exc.reason == "tenant_suspended":
                raise GatewayError(403, exc.message, code="tenant_suspended") from None
            code = "missing_api_key" if exc.reason == "missing" else "invalid_api_key"
            raise GatewayError(401, exc.message, code=code) from None

    async def begin(self, call: Call) -> None:
        """Everything before the upstream call, cheap stages first: validate, route, admit
        (rate limits, budget), check the context, then screen the content. A refusal is
        logged (and any reservation released) before the ``GatewayError`` propagates."""
        try:
            await self.aprepare(call)
            await self.admit(call)
        except GatewayError as exc:
            await self.log_refusal(call, exc)
            raise
        try:
            if call.context_error is not None:
                raise call.context_error
            await self.screen(call)
        except BaseException as exc:
            if isinstance(exc, GatewayError):
                call.status, call.error_code = exc.status, exc.code or exc.type
            else:  # cancelled (client gone) or a bug: release what was reserved
                call.status, call.error_code = 499, "client_closed"
            await asyncio.shield(self.finish(call))
            raise

    async def aprepare(self, call: Call) -> None:
        """:meth:`prepare`, after loading what routing needs without blocking the loop: the
        cached routing table, the deployments' live state (one Redis call) and, when a rule
        asks for it, the prompt's task class (classifier on a worker thread)."""
        validate(call.endpoint, call.body, pass_unknown=call.tier.pass_unknown_params)
        table = await arouting_table()
        call.live = await self.health.snapshot(table.deployment_names)
        if table.needs_task_class and call.endpoint != "embeddings" and call.task_class is None:
            text = classifier_text(call.endpoint, call.body)
            call.task_class, _ = await asyncio.to_thread(task_classifier().classify, text)
        self.prepare(call, table)

    def prepare(self, call: Call, table: RoutingTable) -> None:
        """Validate, route and check the context (no I/O apart from cached tables). Content
        screening (blocklist, PII) comes after admission: see :meth:`screen`. The body was
        validated (and normalised) by :meth:`aprepare`."""
        tier = call.tier
        call.prompt_estimate = _token_count(call.endpoint, call.body)
        if call.endpoint != "embeddings":
            call.requested_output = max_output_tokens(call.body)
        ctx = RouteContext(
            tier_id=tier.pk,
            tenant_id=call.auth.tenant.pk,
            requested=call.body["model"],
            prompt_tokens=call.prompt_estimate,
            task_class=call.task_class,
            metadata=call.body.get("metadata") or {},
        )
        expected = call.requested_output or (
            0 if call.endpoint == "embeddings" else EXPECTED_OUTPUT_TOKENS
        )
        call.route = self.router.route(
            tier,
            call.body["model"],
            table,
            ctx=ctx,
            live=call.live,
            max_output=expected,
            max_cost=call.max_cost,
            needs=capabilities_needed(call.endpoint, call.body),
            unknown=unknown_params(call.endpoint, call.body),
        )
        # A null optional field is an absent one (OpenAI's semantics): never forwarded.
        body = {k: v for k, v in call.body.items() if v is not None}
        body["model"] = call.route.target.upstream_model
        if call.endpoint == "embeddings":
            call.max_output = 0
        else:
            window = call.route.target.context_window
            # The estimate is generous (for reservations); refuse here only what surely does
            # not fit (at ~5 bytes a token), and leave the exact check to the upstream.
            floor = call.prompt_estimate * 3 // 5
            room = max(window - floor, 0)
            if call.requested_output is not None:
                call.max_output = call.requested_output
                needed = floor + (output_cap(call.body) or 0)
            else:
                # No max_tokens: the model stops naturally. Reserve what it may produce: the
                # tier's cap, bounded by the room the context window leaves.
                cap = tier.max_output_tokens or room
                call.max_output = min(cap, room) * sequences(call.body)
                needed = floor + 1
            if needed > window:
                # Raised after admission (begin): an oversized prompt counts against the
                # tenant's request limit like any other, so floods of them are throttled.
                call.context_error = invalid(
                    f"This model's maximum context length is {window} tokens; you asked for "
                    f"about {floor} prompt tokens plus "
                    f"{max(needed - floor, 1)} completion tokens.",
                    "messages" if call.endpoint == "chat.completions" else "prompt",
                    code="context_length_exceeded",
                )
        if call.stream:
            body["stream_options"] = {"include_usage": True}
        call.upstream_body = body

    async def screen(self, call: Call) -> None:
        """The tier's content policy over the prompt: blocklist, then PII redaction of what
        goes upstream. Linear-time filters; a large prompt is screened on a worker thread so
        the event loop keeps serving other tenants."""
        texts = prompt_texts(call.endpoint, call.body)
        size = sum(len(t) for t in texts)
        if size > SCREEN_INLINE_CHARS:
            await asyncio.to_thread(self._screen, call, texts)
        else:
            self._screen(call, texts)

    def _screen(self, call: Call, texts: list[str]) -> None:
        tier = call.tier
        term = filters.blocked_term(texts, tier.blocklist)
        if term:
            metrics.REJECTIONS.labels("blocklist").inc()
            raise invalid(
                f"The request contains a blocked term ('{term}') under your plan's content policy.",
                code="content_blocked",
            )
        if tier.pii_redaction:
            redacted = _redact_body(call.endpoint, call.body)
            for key in ("messages", "prompt", "input"):
                if key in redacted:
                    call.upstream_body[key] = redacted[key]

    async def admit(self, call: Call) -> None:
        """Reserve rate-limit tokens and the worst-case cost, or refuse with 429. Both
        reservations go to Redis in one round trip; when one refuses, the other is released."""
        tier = call.tier
        tenant_id = call.auth.tenant.pk
        limits = Limits(
            tier.requests_per_minute,
            tier.tokens_per_minute,
            tier.tokens_per_day,
            tier.max_concurrent_requests,
        )
        tokens = call.prompt_estimate + call.max_output
        call.price = await adeployment_price(call.route.target, call.created, tenant_id=tenant_id)
        worst = call.price.cost(call.prompt_estimate, call.max_output)
        plan = await self.ledger.plan(tenant_id=tenant_id, cost=worst)
        pipe = self.redis.pipeline(transaction=False)
        limit_call = self.limiter.queue_reserve(
            pipe, tenant_id=tenant_id, limits=limits, tokens=tokens, request_id=call.request_id
        )
        if plan.budgets:
            self.ledger.queue_reserve(pipe, plan)
        results = await pipe.execute()
        limit_error: RateLimited | None = None
        try:
            call.limit_reservation = self.limiter.outcome(results[0], **limit_call)
        except RateLimited as exc:
            limit_error = exc
        budget_error: BudgetExhausted | None = None
        budget: BudgetReservation | None = None
        try:
            if plan.budgets:
                budget = await self.ledger.outcome(plan, results[1])
            else:
                budget = BudgetReservation([], worst)
        except BudgetExhausted as exc:
            budget_error = exc
        except BaseException:
            if call.limit_reservation is not None:
                await asyncio.shield(self.limiter.settle(call.limit_reservation, actual_tokens=0))
                call.limit_reservation = None
            raise
        if limit_error is not None:
            if budget is not None:
                await asyncio.shield(self.ledger.settle(budget, actual_cost=0))
            exc = limit_error
            metrics.REJECTIONS.labels(f"rate_limit_{exc.reason}").inc()
            what = {
                "requests": f"requests per minute (limit {limits.requests_per_minute})",
                "tokens": f"tokens per minute (limit {limits.tokens_per_minute})",
                "tokens_per_day": f"tokens per day (limit {limits.tokens_per_day})",
                "concurrency": f"concurrent requests (limit {limits.max_concurrent})",
                "request_too_large": (
                    f"tokens per minute: this request needs about {tokens}, more than the "
                    f"limit of {limits.tokens_per_minute}"
                    + ("" if call.requested_output else "; send a smaller max_tokens")
                ),
            }[exc.reason]
            raise rate_limited(
                f"Rate limit reached for {what}. Please retry after {exc.retry_after}s.",
                exc.headers,
            )
        call.admitted = True
        if budget_error is not None:
            await asyncio.shield(self.limiter.settle(call.limit_reservation, actual_tokens=0))
            call.limit_reservation = None
            metrics.REJECTIONS.labels("budget").inc()
            b = budget_error.budget
            raise insufficient_quota(
                f"Your {b.period} budget of ${b.limit_micro_usd / 1e6:,.2f} "
                "is exhausted for this period; ask your operator to raise it."
            )
        call.budget_reservation = budget

    # ---- the call ----------------------------------------------------------------------

    async def complete(self, call: Call) -> dict[str, Any]:
        """A non-streaming call; returns the OpenAI response body (filtered)."""
        hit = await self.cache.lookup(call)
        if hit is not None:
            call.response_for_log = resp = self.cache.serve(call, hit)
            await self.finish(call)
            return resp
        try:
            resp = await self.failover.post_json(
                call,
                PATHS[call.endpoint],
                call.upstream_body,
                request_id=call.request_id,
                tenant=call.auth.tenant.slug,
                weight=call.tier.fairness_weight,
                salt=prefix_salt(call),
            )
        except GatewayError as exc:
            call.status, call.error_code = exc.status, exc.code or "upstream_error"
            self._usage_from(call, getattr(exc, "usage", None))
            if exc.status == 504:
                await asyncio.shield(self._abandon(call))
            await self.finish(call)
            raise
        except BaseException:
            # The client went away (the view is cancelled) or the call broke: stop the
            # generation, meter the work done, release the slot and the reservations.
            call.status, call.error_code = 499, "client_closed"
            await asyncio.shield(self._abandon_and_finish(call))
            raise
        self._usage_from(call, resp.get("usage"))
        if call.endpoint != "embeddings":
            texts = {
                i: [self._choice_text(call, c, final=True), tool_call_text(c.get("message"))]
                for i, c in enumerate(resp.get("choices") or [])
                if isinstance(c, dict)
            }
            await self._count_if_unreported(call, texts)
        elif not call.input_tokens:
            call.input_tokens = await asyncio.to_thread(
                tokens.count_text, prompt_texts(call.endpoint, call.body)
            )
        resp["model"] = call.route.model
        if call.endpoint != "embeddings":
            self._filter_choices(call, resp)
        error = None
        if call.endpoint == "chat.completions" and self._wants_json(call):
            bad = [
                c for c in resp.get("choices", [])
                if not (c.get("message") or {}).get("tool_calls")  # a call, not an answer
                and c.get("finish_reason") != "length"  # cut by the client's max_tokens
                and not filters.is_valid_json((c.get("message") or {}).get("content") or "")
            ]  # fmt: skip
            if bad:
                call.status, call.error_code = 502, "invalid_json_output"
                error = GatewayError(
                    502,
                    "The model's output was not valid JSON although response_format asked for "
                    "JSON; the tokens were metered. Retry, or lower the temperature.",
                    type="api_error",
                    code="invalid_json_output",
                )
        call.response_for_log = resp
        if error is None:
            self.cache.keep(call, resp)  # queued with the settlement by finish()
        await self.finish(call)
        if error:
            raise error
        return resp

    async def _abandon(self, call: Call) -> None:
        """Stop an unfinished non-streaming generation upstream and learn what it consumed.
        A Switchyard worker aborts the request (queued or running) and reports its usage;
        for other upstreams the prompt estimate is metered (the prompt was sent)."""
        target = call.route.target if call.route else None
        usage = await abort_upstream(target, call.request_id) if target else None
        if usage is not None:
            call.input_tokens = int(usage.get("prompt_tokens") or 0)
            call.output_tokens = int(usage.get("completion_tokens") or 0)
        elif not call.input_tokens:
            call.input_tokens = call.prompt_estimate

    async def _abandon_and_finish(self, call: Call) -> None:
        try:
            await self._abandon(call)
        finally:
            await self.finish(call)

    def _wants_json(self, call: Call) -> bool:
        fmt = call.body.get("response_format") or {}
        return fmt.get("type") in ("json_object", "json_schema")

    def _filter_choices(self, call: Call, resp: dict[str, Any]) -> None:
        if not call.tier.pii_redaction:
            return
        for choice in resp.get("choices", []):
            msg = choice.get("message")
            if msg and isinstance(msg.get("content"), str):
                msg["content"] = filters.redact(msg["content"])
            filters.redact_tool_calls(msg)
            if isinstance(choice.get("text"), str):
                choice["text"] = filters.redact(choice["text"])

    async def stream(self, call: Call) -> AsyncIterator[dict[str, Any]]:
        """Yield OpenAI stream chunks (filtered). The caller frames them (SSE or WebSocket).

        A failure after tokens were sent ends with an ``{"error": ...}`` chunk, never a silent
        truncation; whatever was produced is metered. Closing this iterator early (client
        gone, cancel) closes the upstream stream and meters what was produced.
        """
        hit = await self.cache.lookup(call)
        if hit is not None:
            replay = self.cache.serve_stream(call, hit)
            await asyncio.shield(self.finish(call))
            for chunk in replay:
                yield chunk
            return
        include_usage = bool((call.body.get("stream_options") or {}).get("include_usage"))
        redactors: dict[int, filters.StreamRedactor] = {}
        texts: dict[int, list[str]] = {}
        calling: set[int] = set()  # choices that answered with tool calls
        call_redactors: dict[int, filters.ToolCallRedactor] = {}
        cut: set[int] = set()  # choices that max_tokens ended (JSON may be unfinished)
        last: dict[str, Any] | None = None
        produced_chunks = 0
        ended: set[int] = set()
        try:
            async for chunk in self.failover.stream(
                call,
                PATHS[call.endpoint],
                call.upstream_body,
                request_id=call.request_id,
                tenant=call.auth.tenant.slug,
                weight=call.tier.fairness_weight,
                salt=prefix_salt(call),
            ):
                chunk["model"] = call.route.model
                self.cache.observe(call, chunk)
                usage = chunk.get("usage")
                self._usage_from(call, usage)
                if not chunk.get("choices"):
                    if usage and include_usage:
                        last = chunk  # sent after the held-back text, just before [DONE]
                    continue
                for choice in chunk["choices"]:
                    idx = choice.get("index", 0)
                    if choice.get("finish_reason"):
                        ended.add(idx)
                        if choice["finish_reason"] == "length":
                            cut.add(idx)
                    called = tool_call_text(choice.get("delta"))
                    if called:  # relayed as it came; metered like text
                        calling.add(idx)
                        produced_chunks += 1
                        if call.ttft is None:
                            call.ttft = time.perf_counter() - call.started
                        texts.setdefault(idx, []).append(called)
                        if call.tier.pii_redaction:
                            red_calls = call_redactors.setdefault(idx, filters.ToolCallRedactor())
                            red_calls.feed(choice["delta"])
                    if choice.get("finish_reason") and idx in call_redactors:
                        held_args = call_redactors.pop(idx).flush()
                        if held_args:
                            delta = choice.setdefault("delta", {})
                            delta["tool_calls"] = [*(delta.get("tool_calls") or []), *held_args]
                    piece = self._choice_text(call, choice)
                    if piece:
                        produced_chunks += 1
                        if call.ttft is None:
                            call.ttft = time.perf_counter() - call.started
                        texts.setdefault(idx, []).append(piece)
                        if call.tier.pii_redaction:
                            red = redactors.setdefault(idx, filters.StreamRedactor())
                            held = red.feed(piece)
                            self._set_choice_text(call, choice, held)
                            if choice.get("finish_reason"):
                                self._set_choice_text(call, choice, held + red.flush())
                    elif choice.get("finish_reason") and idx in redactors:
                        # What the redactor held back goes with the finishing chunk, not
                        # after it (OpenAI's last chunk often carries no text).
                        rest = redactors[idx].flush()
                        if rest:
                            self._set_choice_text(call, choice, rest)
                yield chunk
            if call.tier.pii_redaction:
                for idx, red in redactors.items():
                    rest = red.flush()
                    if rest:
                        yield self._tail_chunk(call, idx, rest)
            if call.endpoint == "chat.completions" and self._wants_json(call):
                for idx, parts in texts.items():
                    if idx in calling or idx in cut:
                        continue
                    if not filters.is_valid_json("".join(parts)):
                        call.status, call.error_code = 502, "invalid_json_output"
                        yield {
                            "error": {
                                "message": "The model's output was not valid JSON although "
                                "response_format asked for JSON.",
                                "type": "api_error",
                                "param": None,
                                "code": "invalid_json_output",
                                "index": idx,
                            }
                        }
            choices = max(int(call.body.get("n") or 1), 1)
            if call.error_code != "invalid_json_output" and len(ended) < choices:
                # The upstream closed the stream before every choice finished: the client
                # must know its answer is cut short, never see a bare [DONE].
                call.status, call.error_code = 502, "upstream_truncated"
                yield upstream_error(
                    "The deployment ended the stream before the answer was complete; "
                    "the tokens received were metered."
                ).body()
            await asyncio.shield(self._count_if_unreported(call, texts))
            if call.status == 200:
                self.cache.keep(call)  # queued with the settlement by finish()
            await asyncio.shield(self.finish(call))
            if last is not None:
                yield last
        except GatewayError as exc:
            call.status, call.error_code = exc.status, exc.code or "upstream_error"
            self._usage_from(call, getattr(exc, "usage", None))
            await asyncio.shield(self._count_if_unreported(call, texts))
            await asyncio.shield(self.finish(call))
            if produced_chunks == 0 and call.ttft is None:
                raise
            for idx, red in redactors.items():  # the held-back text, redacted, then the error
                rest = red.flush()
                if rest:
                    yield self._tail_chunk(call, idx, rest)
            yield exc.body()
        finally:
            if not call.finished:
                # Client went away or cancelled: meter what it got.
                call.status, call.error_code = 499, "client_closed"
                await asyncio.shield(self._count_if_unreported(call, texts))
                await asyncio.shield(self.finish(call))

    @staticmethod
    def _usage_from(call: Call, usage: Any) -> None:
        """Token counts an upstream reported (on a success, or beside an error: the work a
        worker did before a request failed is billed too)."""
        if not isinstance(usage, dict) or not usage:
            return
        call.input_tokens = _count(usage.get("prompt_tokens"))
        call.output_tokens = _count(usage.get("completion_tokens"))
        details = usage.get("prompt_tokens_details")
        if isinstance(details, dict):
            call.cached_tokens = _count(details.get("cached_tokens"))

    async def _count_if_unreported(self, call: Call, texts: dict[int, list[str]]) -> None:
        """Tokens of a stream whose upstream reported no usage (or was cut before its usage
        chunk): counted with a real tokenizer, prompt and output, never left at zero."""
        if call.output_tokens and call.input_tokens:
            return
        outputs = ["".join(parts) for parts in texts.values()]
        prompts = prompt_texts(call.endpoint, call.body)
        if not call.output_tokens and any(outputs):
            call.output_tokens = await asyncio.to_thread(tokens.count_text, outputs)
        if not call.input_tokens and (call.output_tokens or call.status == 200):
            call.input_tokens = await asyncio.to_thread(tokens.count_prompt, call.endpoint, prompts)

    @staticmethod
    def _choice_text(call: Call, choice: dict[str, Any], final: bool = False) -> str:
        if call.endpoint == "chat.completions":
            part = choice.get("message" if final else "delta")
            text = part.get("content") if isinstance(part, dict) else None
        else:
            text = choice.get("text")
        return text if isinstance(text, str) else ""

    @staticmethod
    def _set_choice_text(call: Call, choice: dict[str, Any], text: str) -> None:
        if call.endpoint == "chat.completions":
            choice.setdefault("delta", {})["content"] = text
        else:
            choice["text"] = text

    def _tail_chunk(self, call: Call, idx: int, text: str) -> dict[str, Any]:
        kind = "chat.completion.chunk" if call.endpoint == "chat.completions" else "text_completion"
        choice: dict[str, Any] = {"index": idx, "finish_reason": None}
        self._set_choice_text(call, choice, text)
        return {
            "id": call.request_id,
            "object": kind,
            "created": int(call.created.timestamp()),
            "model": call.route.model,
            "choices": [choice],
        }

    # ---- egress ------------------------------------------------------------------------

    async def finish(self, call: Call) -> None:
        """Settle reservations, meter usage (one record per request with tokens) and queue the
        request-log entry. Runs exactly once per admitted call."""
        if call.finished:
            return
        call.finished = True
        produced = call.input_tokens + call.output_tokens
        cost = (
            call.price.cost(call.input_tokens, call.output_tokens, call.cached_tokens)
            if (call.price and produced)
            else 0
        )
        saved = 0
        if call.cache != "miss":  # a hit costs the tier's cache price and no model tokens
            cost, saved = hit_charge(cost, call.tier.cache_hit_price_percent)
        # Settlements, the usage record and the log entry go to Redis in one round trip, as
        # one transaction: budget reconciliation (billing) snapshots the counters and the
        # usage stream atomically, so it must never see the settlement without the event.
        pipe = self.redis.pipeline(transaction=True)
        if call.limit_reservation:
            await self.limiter.settle(
                call.limit_reservation,
                actual_tokens=produced if call.cache == "miss" else 0,
                pipe=pipe,
            )
        if call.budget_reservation:
            await self.ledger.settle(call.budget_reservation, actual_cost=cost, pipe=pipe)
        tenant = call.auth.tenant
        if produced:
            stream_add(
                pipe,
                USAGE_STREAM,
                usage_event(
                    request_id=call.request_id,
                    client_request_id=call.client_request_id,
                    tenant_id=tenant.pk,
                    api_key_id=call.auth.key.pk,
                    model=call.route.model if call.route else call.body.get("model", ""),
                    deployment=call.route.target.name if call.route else "",
                    input_tokens=call.input_tokens,
                    output_tokens=call.output_tokens,
                    cached_tokens=call.cached_tokens,
                    cost_micro_usd=cost,
                    created=call.created,
                    price=call.price,
                    cache=call.cache,
                    saved_micro_usd=saved,
                ),
            )
        stream_add(pipe, REQUEST_LOG_STREAM, self._log_entry(call, cost))
        self.cache.queue_writes(call, pipe)
        await pipe.execute()
        await metrics.record_finished(
            self.redis,
            tenant=tenant.slug,
            model=call.route.model if call.route else "",
            endpoint=call.endpoint,
            status=call.status,
            latency=time.perf_counter() - call.started,
            ttft=call.ttft,
            tokens=(call.input_tokens, call.output_tokens) if produced else None,
        )

    def _log_entry(self, call: Call, cost: int) -> dict[str, str]:
        entry = {
            "request_id": call.request_id,
            "client_request_id": call.client_request_id,
            "tenant_id": str(call.auth.tenant.pk),
            "api_key_id": str(call.auth.key.pk),
            "endpoint": call.endpoint,
            "model": call.route.model
            if call.route
            else clean_label(str(call.body.get("model", "")), 128),
            "deployment": call.route.target.name if call.route else "",
            "status_code": str(call.status),
            "error_code": call.error_code,
            "stream": "1" if call.stream else "0",
            "input_tokens": str(call.input_tokens),
            "output_tokens": str(call.output_tokens),
            "cost_micro_usd": str(cost),
            "latency_ms": f"{(time.perf_counter() - call.started) * 1000:.2f}",
            "ttft_ms": f"{call.ttft * 1000:.2f}" if call.ttft is not None else "",
            "cache": call.cache,
            "route": call.route.header() if call.route else "",
            "created": call.created.isoformat(),
        }
        if call.tier.log_bodies:
            # Bodies are always stored redacted, whatever the tier's filter setting.
            entry["request_body"] = json.dumps(_redact_body(call.endpoint, call.body))
            if call.response_for_log is not None:
                resp = json.loads(json.dumps(call.response_for_log))
                for c in resp.get("choices", []):
                    if isinstance((c.get("message") or {}).get("content"), str):
                        c["message"]["content"] = filters.redact(c["message"]["content"])
                    if isinstance(c.get("text"), str):
                        c["text"] = filters.redact(c["text"])
                resp.pop("data", None)  # embeddings vectors are not worth keeping
                entry["response_body"] = json.dumps(resp)
        return entry

    async def log_refusal(self, call: Call, error: GatewayError) -> None:
        """Log a request refused before any reservation (validation, routing, limits)."""
        if call.finished:
            return
        call.status, call.error_code = error.status, error.code or error.type
        call.finished = True
        await metrics.record_refused(
            self.redis,
            tenant=call.auth.tenant.slug,
            model=call.route.model if call.route else "",
            endpoint=call.endpoint,
            status=error.status,
        )
        await stream_add(self.redis, REQUEST_LOG_STREAM, self._log_entry(call, 0))


_gateways: dict[int, Gateway] = {}


def get_gateway() -> Gateway:
    """The process's gateway for the running event loop (Redis clients are loop-bound)."""
    loop = asyncio.get_running_loop()
    gw = _gateways.get(id(loop))
    if gw is None:
        gw = Gateway()
        _gateways[id(loop)] = gw
    return gw
