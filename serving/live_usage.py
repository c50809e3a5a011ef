"""A tenant's usage right now against its limits, read from the gateway's Redis counters."""

from __future__ import annotations

import datetime as dt
import time

from billing.spend import budget_spend
from switchyard.redis_client import get_redis
from tenants.models import Budget, Tenant

RL_PREFIX = "sy:rl"
BUDGET_PREFIX = "sy:budget"


def limits_and_usage(tenant: Tenant) -> dict:
    """Requests and tokens this minute, tokens today, requests in flight, and spend per budget
    period, each beside its limit. Counters are the ones the gateway enforces."""
    r = get_redis()
    now = time.time()
    minute, day = int(now // 60), int(now // 86400)
    p = f"{RL_PREFIX}:{tenant.pk}"
    req, tok, day_tok = r.mget(f"{p}:r:{minute}", f"{p}:t:{minute}", f"{p}:d:{day}")
    inflight = r.zcount(f"{p}:inflight", now - 900, "+inf")
    tier = tenant.tier
    rows = [
        ("Requests this minute", int(req or 0), tier.requests_per_minute),
        ("Tokens this minute", int(tok or 0), tier.tokens_per_minute),
        ("Tokens today (UTC)", int(day_tok or 0), tier.tokens_per_day),
        ("Requests in flight", int(inflight), tier.max_concurrent_requests),
    ]
    budgets = []
    today = dt.datetime.now(dt.UTC)
    for b in Budget.objects.filter(tenant=tenant):
        budgets.append({"budget": b, "spent_micro_usd": budget_spend(b, today, client=r)})
    return {
        "limits": [
            {
                "label": label,
                "used": used,
                "limit": limit,
                "percent": min(100, round(100 * used / limit)) if limit else 100,
            }
            for label, used, limit in rows
        ],
        "budgets": [
            {
                **item,
                "percent": min(100, round(100 * item["spent_micro_usd"] / b.limit_micro_usd))
                if (b := item["budget"]).limit_micro_usd
                else 100,
            }
            for item in budgets
        ],
    }
