"""Per-process caches whose entries go stale a fixed number of seconds after they were stored.

Gateways keep what they read from PostgreSQL on every request (deployments, the routing table,
prices, budgets, API keys) in memory for a second or two, so that a request costs no query and a
change made in the console still reaches every replica within that time, without any
cross-process messaging. :class:`TtlCache` is that memory; :class:`LruTtlCache` adds a bound for
caches keyed by what a client sends (API keys).

A hit is one dict lookup and one ``time.monotonic()`` comparison. Both classes are safe to use
from the event loop and from worker threads at once: :class:`TtlCache` relies on single dict
operations being atomic, :class:`LruTtlCache` takes a lock. Two threads that miss at once may
both load; the later one's value is kept (as any reader may have seen either, that is harmless
for these tables).

Why not ``cachetools.TTLCache``: it purges expired entries on every access (slower hits), is not
thread-safe without a lock around every call, and drops stale entries, while the API-key cache
must still tell a key it has seen usable, stale or not, from one it never saw (see
``tenants.auth``).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """A mapping whose entries are fresh for ``ttl`` seconds after they were stored; a stale
    entry reads as a miss until it is stored again. Values are never None (None means a miss).

    ``ttl`` is read on every lookup, so it may be changed on a live cache.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._data: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        """The value stored for ``key`` if it is fresh, else None."""
        hit = self._data.get(key)
        if hit is not None and time.monotonic() - hit[0] <= self.ttl:
            return hit[1]
        return None

    def get_or_load(self, key: K, load: Callable[[], V]) -> V:
        """The fresh value for ``key``, else ``load()``'s, stored as fresh from before the load
        began (so a slow load never makes its answer look newer than it is)."""
        hit = self._data.get(key)  # inline, not self.get(): this is the gateway's hot path
        if hit is not None and time.monotonic() - hit[0] <= self.ttl:
            return hit[1]
        return self._load(key, load)

    def _load(self, key: K, load: Callable[[], V]) -> V:
        stamp = time.monotonic()
        value = load()
        self.put(key, value, stamp=stamp)
        return value

    def put(self, key: K, value: V, *, stamp: float | None = None) -> None:
        """Store ``value``, fresh from ``stamp`` (a ``time.monotonic()`` reading; now by
        default)."""
        self._data[key] = (time.monotonic() if stamp is None else stamp, value)

    def seen(self, key: K) -> bool:
        """Whether an entry is held for ``key``, fresh or stale."""
        return key in self._data

    def pop(self, key: K) -> None:
        """Forget ``key`` (an invalidation hook: the next lookup loads it again)."""
        self._data.pop(key, None)

    def clear(self) -> None:
        """Forget every entry (tests, and writers that must be seen at once in this
        process)."""
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class LruTtlCache(TtlCache[K, V]):
    """A :class:`TtlCache` of at most ``maxsize`` entries: storing one more forgets the least
    recently used (stored or looked up), so keys chosen by clients cannot grow it."""

    def __init__(self, ttl: float, maxsize: int) -> None:
        super().__init__(ttl)
        self.maxsize = max(1, maxsize)
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            hit = self._data.get(key)
            if hit is not None:
                self._data.move_to_end(key)
        if hit is not None and time.monotonic() - hit[0] <= self.ttl:
            return hit[1]
        return None

    def get_or_load(self, key: K, load: Callable[[], V]) -> V:
        value = self.get(key)
        return self._load(key, load) if value is None else value

    def put(self, key: K, value: V, *, stamp: float | None = None) -> None:
        entry = (time.monotonic() if stamp is None else stamp, value)
        with self._lock:
            self._data[key] = entry
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def pop(self, key: K) -> None:
        with self._lock:
            self._data.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
