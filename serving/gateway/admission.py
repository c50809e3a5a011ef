"""Admission: the tenant's rate limits and budgets, reserved before the upstream call.

The request's tokens (prompt estimate + output reserved) are reserved on the rate limits and
its worst-case cost on the tenant's budgets, an in-flight slot is taken on the chosen
deployment, the exact cache's entry is read (served only after content screening) and the
deployments' live state is read for the next requests' routing: all in one Redis round trip.
When a limit or a budget refuses, the rest is released (again in one round trip), and the
caller gets 429 (``rate_limited`` with Retry-After, or ``insufficient_quota``). The metering
stage settles both to the real figures afterwards.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from billing.ledger import BudgetExhausted, BudgetLedger, BudgetReservation
from serving.cache.stage import CacheStage
from serving.gateway import metrics
from serving.gateway.call import Call
from serving.gateway.errors import insufficient_quota, rate_limited
from serving.gateway.ratelimit import Limits, RateLimited, RateLimiter
from serving.routing.health import DeploymentHealth
from serving.routing.table import adeployment_price
from tenants.models import Tier


def tier_limits(tier: Tier) -> Limits:
    return Limits(
        tier.requests_per_minute,
        tier.tokens_per_minute,
        tier.tokens_per_day,
        tier.max_concurrent_requests,
    )


def limit_message(exc: RateLimited, limits: Limits, tokens: int, capped: bool) -> str:
    """What a rate-limit refusal says: the limit reached (``capped``: the client sent
    max_tokens, so a smaller one is no advice)."""
    what = {
        "requests": f"requests per minute (limit {limits.requests_per_minute})",
        "tokens": f"tokens per minute (limit {limits.tokens_per_minute})",
        "tokens_per_day": f"tokens per day (limit {limits.tokens_per_day})",
        "concurrency": f"concurrent requests (limit {limits.max_concurrent})",
        "request_too_large": (
            f"tokens per minute: this request needs about {tokens}, more than the "
            f"limit of {limits.tokens_per_minute}"
            + ("" if capped else "; send a smaller max_tokens")
        ),
    }[exc.reason]
    return f"Rate limit reached for {what}. Please retry after {exc.retry_after}s."


class Admission:
    """One per gateway, over its Redis client, rate limiter and budget ledger."""

    def __init__(
        self,
        redis: aioredis.Redis,
        limiter: RateLimiter,
        ledger: BudgetLedger,
        health: DeploymentHealth,
        cache: CacheStage,
    ) -> None:
        self.redis = redis
        self.limiter = limiter
        self.ledger = ledger
        self.health = health
        self.cache = cache

    async def admit(self, call: Call) -> None:
        """Reserve rate-limit tokens and the worst-case cost, or refuse with 429. Both
        reservations go to Redis in one round trip; when one refuses, the other is released."""
        limits = tier_limits(call.tier)
        tokens = call.prompt_estimate + call.max_output
        call.price = await adeployment_price(
            call.route.target, call.created, tenant_id=call.auth.tenant.pk
        )
        worst = call.price.cost(call.prompt_estimate, call.max_output)
        limit_error, budget, budget_error = await self._reserve(call, limits, tokens, worst)
        if limit_error is not None:
            await asyncio.shield(self._release(call, budget=budget))
            metrics.REJECTIONS.labels(f"rate_limit_{limit_error.reason}").inc()
            raise rate_limited(
                limit_message(limit_error, limits, tokens, bool(call.requested_output)),
                limit_error.headers,
            )
        call.admitted = True
        if budget_error is not None:
            await asyncio.shield(self._release(call, limits=call.limit_reservation))
            call.limit_reservation = None
            metrics.REJECTIONS.labels("budget").inc()
            b = budget_error.budget
            raise insufficient_quota(
                f"Your {b.period} budget of ${b.limit_micro_usd / 1e6:,.2f} "
                "is exhausted for this period; ask your operator to raise it."
            )
        call.budget_reservation = budget

    async def _release(self, call: Call, *, budget=None, limits=None) -> None:
        """Give back what a refused admission took, in one round trip: the budget or the
        rate-limit reservation, and the deployment's in-flight slot."""
        pipe = self.redis.pipeline(transaction=False)
        if budget is not None:
            await self.ledger.settle(budget, actual_cost=0, pipe=pipe)
        if limits is not None:
            await self.limiter.settle(limits, actual_tokens=0, pipe=pipe)
        slot, call.slot = call.slot, None
        if slot is not None:
            self.health.queue_finish(pipe, slot, call.request_id, ok=None)
        await pipe.execute()
        if slot is not None:
            self.health.freed(slot)

    async def _reserve(
        self, call: Call, limits: Limits, tokens: int, worst: int
    ) -> tuple[RateLimited | None, BudgetReservation | None, BudgetExhausted | None]:
        """Both reservations and the first choice's in-flight slot in one round trip: (the
        rate limit's refusal, the budget reservation, the budget's refusal); the limit
        reservation and the slot are set on ``call``."""
        tenant_id = call.auth.tenant.pk
        plan = await self.ledger.plan(tenant_id=tenant_id, cost=worst)
        pipe = self.redis.pipeline(transaction=False)
        limit_call = self.limiter.queue_reserve(
            pipe, tenant_id=tenant_id, limits=limits, tokens=tokens, request_id=call.request_id
        )
        if plan.budgets:
            self.ledger.queue_reserve(pipe, plan)
        slot = call.route.target.name
        self.health.queue_acquire(pipe, slot, call.request_id)
        take_cached = self.cache.prefetch(call, pipe)
        take_live = self.health.queue_refresh(pipe)
        results = await pipe.execute()
        call.slot = slot
        self.health.took(slot)
        if take_live is not None:
            take_live(results.pop())
        if take_cached is not None:
            take_cached(results[-1])
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
            await asyncio.shield(self._release(call, limits=call.limit_reservation))
            call.limit_reservation = None
            raise
        return limit_error, budget, budget_error
