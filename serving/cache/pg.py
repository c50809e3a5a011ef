"""The semantic cache's own async PostgreSQL connections, one small pool per event loop.

A lookup is one query on the request path. Through Django's ORM it would run on a worker
thread (Django's connections are sync), and each hop to a thread and back costs the event
loop a handoff and the GIL's contention with that thread; under load, that was a large part of
a miss's cost (benchmarks/RESULTS.md, "Gateway: cache misses"). psycopg's async connection
(tried next) spends about as much again in its pure-Python wait loop. So the gateway queries
with asyncpg (its protocol is compiled): statements prepared once per connection, pgvector's
``vector`` sent and read in binary, on the event loop itself, with Django's database settings.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from django.db import connections
from pgvector.asyncpg import register_vector

POOL_SIZE = 8


def connection_params() -> dict[str, Any]:
    """asyncpg's arguments for Django's default database (name, user, password, host or
    socket directory, port, and ``sslmode`` from the OPTIONS)."""
    s = connections["default"].settings_dict
    params: dict[str, Any] = {"database": s["NAME"]}
    for ours, theirs in (("USER", "user"), ("PASSWORD", "password"), ("HOST", "host")):
        if s.get(ours):
            params[theirs] = s[ours]
    if s.get("PORT"):
        params["port"] = int(s["PORT"])
    sslmode = (s.get("OPTIONS") or {}).get("sslmode")
    if sslmode:
        params["ssl"] = sslmode
    return params


async def connect() -> asyncpg.Connection:
    conn = await asyncpg.connect(**connection_params())
    await register_vector(conn)
    return conn


class AsyncPool:
    """At most ``size`` connections, opened on demand and kept while healthy."""

    def __init__(self, size: int = POOL_SIZE) -> None:
        self._idle: list[asyncpg.Connection] = []
        self._slots = asyncio.Semaphore(size)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection (autocommit outside an explicit transaction). One whose use was
        interrupted (an error, a cancelled request) is closed rather than reused: its state
        is unknown."""
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            if conn is None or conn.is_closed():
                conn = await connect()
            try:
                yield conn
            except BaseException:
                conn.terminate()
                raise
            if conn.is_closed() or conn.is_in_transaction():
                conn.terminate()
            else:
                self._idle.append(conn)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()


_pools: dict[int, AsyncPool] = {}


def pool() -> AsyncPool:
    """The running event loop's pool."""
    key = id(asyncio.get_running_loop())
    p = _pools.get(key)
    if p is None:
        p = _pools[key] = AsyncPool()
    return p


async def close_pool() -> None:
    """Close the running loop's connections (server shutdown)."""
    p = _pools.pop(id(asyncio.get_running_loop()), None)
    if p is not None:
        await p.close()
