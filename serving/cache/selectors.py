"""Reads for the console and the management API; every query is filtered by tenant."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from billing.models import UsageRecord
from serving.cache import exact
from serving.cache.models import SemanticCacheEntry
from serving.models import RequestLog
from switchyard.redis_client import get_redis
from tenants.models import Tenant

CACHED_ENDPOINTS = ("chat.completions", "completions")


@dataclass(frozen=True)
class CacheStats:
    requests: int
    exact_hits: int
    semantic_hits: int
    tokens_saved: int
    saved_micro_usd: int
    charged_micro_usd: int
    semantic_entries: int
    exact_entries: int

    @property
    def exact_hit_rate(self) -> float:
        return self.exact_hits / self.requests if self.requests else 0.0

    @property
    def semantic_hit_rate(self) -> float:
        return self.semantic_hits / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "requests": self.requests,
            "exact_hits": self.exact_hits,
            "semantic_hits": self.semantic_hits,
            "exact_hit_rate": round(self.exact_hit_rate, 4),
            "semantic_hit_rate": round(self.semantic_hit_rate, 4),
            "tokens_saved": self.tokens_saved,
            "saved_micro_usd": self.saved_micro_usd,
            "charged_micro_usd": self.charged_micro_usd,
            "semantic_entries": self.semantic_entries,
            "exact_entries": self.exact_entries,
        }


def cache_stats(*, tenant: Tenant, days: int = 30) -> CacheStats:
    """Hit rates over the tenant's completion requests, and what hits saved, in the last
    ``days`` days (tokens: input + output served from cache; money in micro-dollars)."""
    since = timezone.now() - dt.timedelta(days=days)
    logs = RequestLog.objects.filter(
        tenant=tenant, created__gte=since, endpoint__in=CACHED_ENDPOINTS
    ).aggregate(
        requests=Count("id"),
        exact=Count("id", filter=Q(cache="hit-exact")),
        semantic=Count("id", filter=Q(cache="hit-semantic")),
    )
    usage = (
        UsageRecord.objects.filter(tenant=tenant, created__gte=since)
        .exclude(cache="miss")
        .aggregate(
            inp=Sum("input_tokens"),
            out=Sum("output_tokens"),
            saved=Sum("saved_micro_usd"),
            charged=Sum("cost_micro_usd"),
        )
    )
    return CacheStats(
        requests=logs["requests"],
        exact_hits=logs["exact"],
        semantic_hits=logs["semantic"],
        tokens_saved=(usage["inp"] or 0) + (usage["out"] or 0),
        saved_micro_usd=usage["saved"] or 0,
        charged_micro_usd=usage["charged"] or 0,
        semantic_entries=SemanticCacheEntry.objects.filter(tenant=tenant).count(),
        exact_entries=exact.count_tenant(get_redis(), tenant.pk),
    )


def cache_entries(*, tenant: Tenant, q: str = "") -> QuerySet[SemanticCacheEntry]:
    """The tenant's semantic entries, newest first (``q`` filters prompts)."""
    qs = SemanticCacheEntry.objects.filter(tenant=tenant).defer("embedding")
    if q:
        qs = qs.filter(prompt__icontains=q)
    return qs.order_by("-created", "-id")
