"""Open WebSockets watch their API key, so that revocation, expiry and a tenant's suspension
reach a socket within the same second as they reach HTTP.

One watch per process: every ``INTERVAL`` seconds it asks :mod:`tenants.auth` about every key
that has a socket open, through the same 1-second cache that HTTP requests use. Fresh answers
cost nothing; the keys whose answer is older than a second are looked up together, in one
query on a worker thread. So the watch costs at most one lookup per key per second per process,
however many sockets share the key, and a change is seen at most ``CACHE_SECONDS +
INTERVAL`` after it is committed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable

from tenants import auth
from tenants.auth import AuthFailure

INTERVAL = 0.25

log = logging.getLogger(__name__)
OnFailure = Callable[[AuthFailure], None]


class KeyWatch:
    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self._watchers: dict[str, dict[int, OnFailure]] = {}
        self._ids = itertools.count()
        self._task: asyncio.Task | None = None

    def watch(self, key_hash: str, on_failure: OnFailure) -> Callable[[], None]:
        """Call ``on_failure`` (once) when the key stops authenticating; returns the function
        that stops watching."""
        token = next(self._ids)
        self._watchers.setdefault(key_hash, {})[token] = on_failure
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

        def unwatch() -> None:
            watchers = self._watchers.get(key_hash)
            if watchers is not None:
                watchers.pop(token, None)
                if not watchers:
                    del self._watchers[key_hash]

        return unwatch

    def __len__(self) -> int:
        return sum(len(w) for w in self._watchers.values())

    async def _run(self) -> None:
        while self._watchers:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception:
                log.exception("key watch: checking the open sockets' keys failed")

    async def check(self) -> None:
        """One pass: tell the watchers of every key that no longer authenticates."""
        if not self._watchers:
            return
        results = await auth.acheck_hashes(list(self._watchers))
        for key_hash, result in results.items():
            if not isinstance(result, AuthFailure):
                continue
            for on_failure in list(self._watchers.pop(key_hash, {}).values()):
                try:
                    on_failure(result)
                except Exception:
                    log.exception("key watch: a socket's failure handler raised")


_watch: KeyWatch | None = None


def key_watch() -> KeyWatch:
    global _watch
    if _watch is None:
        _watch = KeyWatch()
    return _watch
