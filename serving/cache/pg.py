"""The semantic cache's own async PostgreSQL connections, one small pool per event loop.

A lookup is one query on the request path. Through Django's ORM it would run on a worker
thread (Django's connections are sync), and each hop to a thread and back costs the event
loop a handoff and the GIL's contention with that thread; under load, that was a large part of
a miss's cost (benchmarks/RESULTS.md, "Gateway: cache misses"). So the gateway queries with
psycopg's async connection on the loop itself, with the same settings as Django's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from django.db import connections
from pgvector.psycopg.vector import register_vector_info
from psycopg.pq import TransactionStatus
from psycopg.types import TypeInfo

POOL_SIZE = 8


def connection_params() -> dict:
    """Django's connection parameters for the default database, for an async connection.
    Statements are prepared after psycopg's default five uses (Django turns that off for
    connection poolers; set ``prepare_threshold`` in the database OPTIONS to choose)."""
    params = connections["default"].get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    if params.get("prepare_threshold") is None:
        params.pop("prepare_threshold", None)
    return params


async def connect() -> psycopg.AsyncConnection:
    """A new connection in autocommit mode that sends and reads pgvector's ``vector`` in its
    binary form (no 384 floats printed and parsed as text per query)."""
    conn = await psycopg.AsyncConnection.connect(**connection_params(), autocommit=True)
    register_vector_info(conn, await TypeInfo.fetch(conn, "vector"))
    return conn


class AsyncPool:
    """At most ``size`` connections, opened on demand and kept while healthy."""

    def __init__(self, size: int = POOL_SIZE) -> None:
        self._idle: list[psycopg.AsyncConnection] = []
        self._slots = asyncio.Semaphore(size)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """A connection in autocommit mode. One whose use was interrupted (an error, a
        cancelled request) is closed rather than reused: its state is unknown."""
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            if conn is None or conn.closed:
                conn = await connect()
            try:
                yield conn
            except BaseException:
                await asyncio.shield(conn.close())
                raise
            if conn.closed or conn.info.transaction_status != TransactionStatus.IDLE:
                await conn.close()
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
