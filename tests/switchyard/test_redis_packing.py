"""The gateway's asyncio Redis connections pack commands with hiredis: the bytes on the wire
are redis-py's own, and what redis-py refuses is refused."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio as aioredis

from switchyard.redis_client import hiredis_packing

COMMANDS = [
    ("SET", "key", "value"),
    ("CONFIG GET", "maxmemory"),  # a command name with a space is split
    (b"CLIENT LIST",),
    ("EVAL", "return 1", 2, "k1", "k2", 1.5, 0.1 + 0.2, -3, 10**18),
    ("XADD", "s", "*", "field", "zażółć 請求", "blob", b"\x00\xff" * 40, memoryview(b"mv")),
    ("SET", "ba", bytearray(b"bytes")),
    ("SET", "big", "x" * 100_000),
]


def _fast_connection() -> aioredis.Connection:
    pool = hiredis_packing(aioredis.ConnectionPool())
    return pool.connection_class()


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: str(c[0]))
def test_the_bytes_are_redis_pys_own(command):
    python_packed = b"".join(aioredis.Connection().pack_command(*command))
    assert b"".join(_fast_connection().pack_command(*command)) == python_packed


def test_pipelines_pack_the_same():
    python_packed = b"".join(aioredis.Connection().pack_commands(COMMANDS))
    assert b"".join(_fast_connection().pack_commands(COMMANDS)) == python_packed


@pytest.mark.parametrize("bad", [None, True, object()])
def test_what_redis_py_refuses_is_refused(bad):
    with pytest.raises(redis.DataError):
        aioredis.Connection().pack_command("SET", "k", bad)
    with pytest.raises(redis.DataError):
        _fast_connection().pack_command("SET", "k", bad)


def test_a_unix_socket_or_tls_pool_keeps_its_connection_class():
    pool = hiredis_packing(aioredis.ConnectionPool.from_url("unix:///tmp/redis.sock"))
    assert issubclass(pool.connection_class, aioredis.UnixDomainSocketConnection)
    assert hiredis_packing(pool).connection_class is pool.connection_class  # applied once
