"""API key authentication: key -> (key, tenant, tier), for the gateway.

One indexed query by hash (joined to tenant and tier). Results are cached in-process for at
most ``CACHE_SECONDS``, so a revoked key or a suspended tenant stops working on every gateway
replica within that time without any cross-process messaging; open WebSockets re-check their
key through the same cache (``serving/key_watch.py``).

The cache is bounded, so a flood of well-formed random keys cannot grow it: usable keys live
in an LRU of ``SWITCHYARD_AUTH_CACHE_SIZE`` entries, refusals in a separate LRU a tenth that
size, so refusals can never push a working key out. Each cache miss costs one query; failed
attempts are throttled per client address before they reach the database
(:mod:`tenants.auth_throttle`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from switchyard.single_flight import load_once
from switchyard.ttl_cache import LruTtlCache
from tenants import keys
from tenants.auth_throttle import FailureThrottle
from tenants.models import ApiKey, Tenant, Tier

CACHE_SECONDS = 1.0
LAST_USED_RESOLUTION = timedelta(seconds=60)
# Keys refreshed by one query at most (the WebSocket key watch refreshes many at once).
LOOKUP_BATCH = 500


class AuthFailure(Exception):
    """Why a key did not authenticate: ``reason`` is one of missing, invalid, revoked, expired,
    tenant_suspended, throttled (then ``retry_after`` says in how many seconds)."""

    def __init__(self, reason: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True)
class AuthContext:
    key: ApiKey
    tenant: Tenant
    tier: Tier


_SIZE = getattr(settings, "SWITCHYARD_AUTH_CACHE_SIZE", 10_000)
_valid: LruTtlCache[str, AuthContext] = LruTtlCache(CACHE_SECONDS, _SIZE)
_refused: LruTtlCache[str, AuthFailure] = LruTtlCache(CACHE_SECONDS, max(100, _SIZE // 10))

throttle = FailureThrottle(
    limit=getattr(settings, "SWITCHYARD_AUTH_FAILURE_LIMIT", 30),
    window=getattr(settings, "SWITCHYARD_AUTH_FAILURE_WINDOW_SECONDS", 60.0),
)


def invalidate_key(key_hash: str) -> None:
    _valid.pop(key_hash)
    _refused.pop(key_hash)


def clear_cache() -> None:
    _valid.clear()
    _refused.clear()
    throttle.clear()


def cache_size() -> tuple[int, int]:
    """Entries held: (usable keys, refusals)."""
    return len(_valid), len(_refused)


def cached(key_hash: str) -> AuthContext | AuthFailure | None:
    """The fresh cached answer for a key hash, or None when the database must be asked. A
    key that expired while cached is not fresh."""
    hit = _valid.get(key_hash)
    if hit is not None and hit.key.is_usable():
        return hit
    return _refused.get(key_hash)


def _judge(key: ApiKey | None, now) -> AuthContext | AuthFailure:
    if key is None:
        return AuthFailure("invalid", "Incorrect API key provided.")
    if key.revoked is not None:
        return AuthFailure("revoked", "This API key has been revoked.")
    if key.expires is not None and key.expires <= now:
        return AuthFailure("expired", "This API key has expired.")
    if not key.tenant.is_active:
        return AuthFailure("tenant_suspended", "This tenant is suspended; contact the operator.")
    return AuthContext(key=key, tenant=key.tenant, tier=key.tenant.tier)


def _store(key_hash: str, result: AuthContext | AuthFailure) -> None:
    if isinstance(result, AuthContext):
        _valid.put(key_hash, result)
        _refused.pop(key_hash)
    else:
        _refused.put(key_hash, result)
        _valid.pop(key_hash)


def refresh(key_hashes: Iterable[str]) -> dict[str, AuthContext | AuthFailure]:
    """Look keys up in the database (one query per ``LOOKUP_BATCH`` keys) and cache the
    answers."""
    hashes = list(dict.fromkeys(key_hashes))
    results: dict[str, AuthContext | AuthFailure] = {}
    for start in range(0, len(hashes), LOOKUP_BATCH):
        batch = hashes[start : start + LOOKUP_BATCH]
        query = ApiKey.objects.select_related("tenant__tier").filter(key_hash__in=batch)
        found = {key.key_hash: key for key in query}
        now = timezone.now()
        stale_use = []
        for key_hash in batch:
            result = _judge(found.get(key_hash), now)
            if isinstance(result, AuthContext):
                key = result.key
                if key.last_used is None or now - key.last_used > LAST_USED_RESOLUTION:
                    stale_use.append(key.pk)
            _store(key_hash, result)
            results[key_hash] = result
        if stale_use:
            ApiKey.objects.filter(pk__in=stale_use).update(last_used=now)
    return results


def check_hashes(key_hashes: Iterable[str]) -> dict[str, AuthContext | AuthFailure]:
    """The current answer for each key hash: from the cache when fresh, else the database."""
    results: dict[str, AuthContext | AuthFailure] = {}
    stale = []
    for key_hash in key_hashes:
        hit = cached(key_hash)
        if hit is None:
            stale.append(key_hash)
        else:
            results[key_hash] = hit
    if stale:
        results.update(refresh(stale))
    return results


_refresh_in_thread = sync_to_async(refresh, thread_sensitive=False)


async def acheck_hashes(key_hashes: Iterable[str]) -> dict[str, AuthContext | AuthFailure]:
    """:func:`check_hashes` for async code: fresh answers on the event loop, one worker-thread
    hop for all the keys that need the database."""
    results: dict[str, AuthContext | AuthFailure] = {}
    stale = []
    for key_hash in key_hashes:
        hit = cached(key_hash)
        if hit is None:
            stale.append(key_hash)
        else:
            results[key_hash] = hit
    if stale:
        results.update(await _refresh_in_thread(stale))
    return results


def _shape_check(raw: str | None) -> str:
    """The key's hash, or raise for a key that cannot exist (no query for garbage)."""
    if not raw:
        raise AuthFailure(
            "missing", "You didn't provide an API key. Send it as 'Authorization: Bearer sy-…'."
        )
    if not keys.looks_like_key(raw):
        raise AuthFailure("invalid", "Incorrect API key provided.")
    return keys.hash_key(raw)


def _throttled(key_hash: str, client: str | None) -> AuthFailure | None:
    """The refusal for an address that has failed too often, unless the key is one this process
    has recently seen usable (so one client behind a shared address cannot lock the others'
    working keys out; a flood of random keys never gets one of those)."""
    if _valid.seen(key_hash):
        return None
    retry_after = throttle.retry_after(client)
    if retry_after is None:
        return None
    return AuthFailure(
        "throttled",
        f"Too many failed authentication attempts from your address; retry in {retry_after} s.",
        retry_after=retry_after,
    )


def _answer(result: AuthContext | AuthFailure, client: str | None) -> AuthContext:
    if isinstance(result, AuthFailure):
        throttle.failed(client)
        raise result
    return result


def authenticate_key(raw: str | None, client: str | None = None) -> AuthContext:
    """The context of a usable key, or raise :class:`AuthFailure`.

    ``client`` is the caller's address: once it has failed too often
    (:mod:`tenants.auth_throttle`), any key but one recently seen usable is refused as
    ``throttled`` without a query."""
    key_hash = _shape_check(raw)
    hit = cached(key_hash)
    if isinstance(hit, AuthContext):
        return hit
    refusal = _throttled(key_hash, client)
    if refusal is not None:
        raise refusal
    if hit is None:
        hit = refresh([key_hash])[key_hash]
    return _answer(hit, client)


async def aauthenticate_key(raw: str | None, client: str | None = None) -> AuthContext:
    """:func:`authenticate_key` for async code: a fresh cache hit, a malformed key or a
    throttled address answers on the event loop; only a lookup runs in a thread, once for all
    the requests with that key that arrive while it runs."""
    key_hash = _shape_check(raw)
    hit = cached(key_hash)
    if isinstance(hit, AuthContext):
        return hit
    refusal = _throttled(key_hash, client)
    if refusal is not None:
        raise refusal
    if hit is None:
        # One query per key however many of its requests arrive while it runs.
        hit = (await load_once(("auth", key_hash), refresh, [key_hash]))[key_hash]
    return _answer(hit, client)
