"""Writes to the caches outside the request path: purge, expiry, per-tenant caps.

The console, the management API and Celery call these; each is safe to run twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection, transaction
from django.utils import timezone

from serving.cache import exact
from serving.cache.models import SemanticCacheEntry
from switchyard.redis_client import get_redis
from tenants.models import Tenant
from tenants.services import audit

EXPIRE_BATCH = 5000


@dataclass(frozen=True)
class PurgeResult:
    exact_entries: int
    semantic_entries: int

    @property
    def total(self) -> int:
        return self.exact_entries + self.semantic_entries


def cache_purge(*, tenant: Tenant, actor=None) -> PurgeResult:
    """Delete every cache entry the tenant wrote (private ones, and its contributions to the
    shared pool), in both caches; audited."""
    with transaction.atomic():
        semantic_deleted, _ = SemanticCacheEntry.objects.filter(tenant=tenant).delete()
        exact_deleted = exact.purge_tenant(get_redis(), tenant.pk)
        result = PurgeResult(exact_deleted, semantic_deleted)
        audit(
            actor=actor,
            action="cache.purge",
            obj=tenant,
            before=None,
            after={"exact_entries": exact_deleted, "semantic_entries": semantic_deleted},
            tenant=tenant,
        )
    return result


def cache_expire(*, batch: int = EXPIRE_BATCH) -> int:
    """Delete expired semantic entries (lookups already ignore them), in batches so one run
    never holds a long lock; returns how many were deleted. Exact entries expire in Redis."""
    total = 0
    table = SemanticCacheEntry._meta.db_table
    while True:
        with connection.cursor() as cur:
            cur.execute(
                f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE expires <= %s "
                "LIMIT %s)",
                [timezone.now(), batch],
            )
            deleted = cur.rowcount
        total += deleted
        if deleted < batch:
            return total


def cache_enforce_caps() -> dict[int, int]:
    """Hold each tenant to its tier's ``cache_max_entries`` in both caches, dropping the oldest
    entries first; returns {tenant id: entries dropped} for tenants that were over."""
    dropped: dict[int, int] = {}
    table = SemanticCacheEntry._meta.db_table
    over = (
        Tenant.objects.filter(semantic_cache_entries__isnull=False)
        .distinct()
        .select_related("tier")
    )
    for tenant in over:
        cap = tenant.tier.cache_max_entries
        with connection.cursor() as cur:
            cur.execute(
                f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE tenant_id = %s "
                "ORDER BY created DESC, id DESC OFFSET %s)",
                [tenant.pk, cap],
            )
            if cur.rowcount:
                dropped[tenant.pk] = cur.rowcount
    client = get_redis()
    tiers = dict(Tenant.objects.values_list("pk", "tier__cache_max_entries"))
    ttls = dict(Tenant.objects.values_list("pk", "tier__semantic_cache_ttl_seconds"))
    for tenant_id in exact.tenant_ids_with_entries(client):
        if tenant_id not in tiers:
            client.delete(exact.index_key(tenant_id))
            continue
        n = exact.trim_tenant(
            client, tenant_id, max_age_seconds=ttls[tenant_id], cap=tiers[tenant_id]
        )
        if n:
            dropped[tenant_id] = dropped.get(tenant_id, 0) + n
    return dropped


def cache_entry_delete(*, tenant: Tenant, entry_id: int, actor=None) -> bool:
    """Delete one of the tenant's semantic entries; False when it has no such entry (another
    tenant's id included)."""
    with transaction.atomic():
        deleted, _ = SemanticCacheEntry.objects.filter(tenant=tenant, pk=entry_id).delete()
        if deleted:
            audit(
                actor=actor,
                action="cache.entry_delete",
                obj=tenant,
                before={"entry": entry_id},
                after=None,
                tenant=tenant,
            )
    return bool(deleted)
