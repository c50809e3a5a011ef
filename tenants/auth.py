"""API key authentication: key -> (key, tenant, tier), for the gateway.

One indexed query by hash (joined to tenant and tier). Results are cached in-process for at
most ``CACHE_SECONDS``, so a revoked key or a suspended tenant stops working on every gateway
replica within that time without any cross-process messaging.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.utils import timezone

from tenants import keys
from tenants.models import ApiKey, Tenant, Tier

CACHE_SECONDS = 1.0
LAST_USED_RESOLUTION = timedelta(seconds=60)


class AuthFailure(Exception):
    """Why a key did not authenticate: ``reason`` is one of invalid, revoked, expired,
    tenant_suspended."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class AuthContext:
    key: ApiKey
    tenant: Tenant
    tier: Tier


_cache: dict[str, tuple[float, AuthContext | AuthFailure]] = {}


def invalidate_key(key_hash: str) -> None:
    _cache.pop(key_hash, None)


def clear_cache() -> None:
    _cache.clear()


def _lookup(key_hash: str) -> AuthContext | AuthFailure:
    key = ApiKey.objects.select_related("tenant__tier").filter(key_hash=key_hash).first()
    if key is None:
        return AuthFailure("invalid", "Incorrect API key provided.")
    if key.revoked is not None:
        return AuthFailure("revoked", "This API key has been revoked.")
    now = timezone.now()
    if key.expires is not None and key.expires <= now:
        return AuthFailure("expired", "This API key has expired.")
    if not key.tenant.is_active:
        return AuthFailure("tenant_suspended", "This tenant is suspended; contact the operator.")
    if key.last_used is None or now - key.last_used > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used=now)
    return AuthContext(key=key, tenant=key.tenant, tier=key.tenant.tier)


def authenticate_key(raw: str | None) -> AuthContext:
    """The context of a usable key, or raise :class:`AuthFailure`."""
    if not raw or not keys.looks_like_key(raw):
        raise AuthFailure("invalid", "Incorrect API key provided.")
    key_hash = keys.hash_key(raw)
    now = time.monotonic()
    hit = _cache.get(key_hash)
    if hit is None or now - hit[0] > CACHE_SECONDS:
        hit = (now, _lookup(key_hash))
        _cache[key_hash] = hit
    result = hit[1]
    # An expiry that passes while cached still takes effect.
    if isinstance(result, AuthContext) and not result.key.is_usable():
        invalidate_key(key_hash)
        return authenticate_key(raw)
    if isinstance(result, AuthFailure):
        raise result
    return result


_authenticate_in_thread = sync_to_async(authenticate_key, thread_sensitive=False)


async def aauthenticate_key(raw: str | None) -> AuthContext:
    """:func:`authenticate_key` for async code: a fresh cache hit answers on the event loop,
    anything that needs the database runs in a thread."""
    if raw and keys.looks_like_key(raw):
        hit = _cache.get(keys.hash_key(raw))
        if hit is not None and time.monotonic() - hit[0] <= CACHE_SECONDS:
            result = hit[1]
            if isinstance(result, AuthFailure):
                raise result
            if result.key.is_usable():
                return result
    return await _authenticate_in_thread(raw)
