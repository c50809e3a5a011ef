"""Checks run before the platform starts: a clear sentence instead of a stack trace."""

from __future__ import annotations

import psycopg
import redis

PGVECTOR_MISSING = (
    "The PostgreSQL server at DATABASE_URL does not have the pgvector extension: install "
    "pgvector on that server (https://github.com/pgvector/pgvector) or unset DATABASE_URL to "
    "use Switchyard's embedded PostgreSQL, which includes it."
)


class PreflightError(RuntimeError):
    pass


def _conninfo(url: str) -> str:
    # psycopg understands the same URLs Django does, except the +driver suffixes.
    return url.replace("postgresql+psycopg://", "postgresql://").replace(
        "postgres://", "postgresql://"
    )


def check_database(url: str) -> None:
    """Reachable, and has pgvector available (installed or installable)."""
    try:
        with psycopg.connect(_conninfo(url), connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
            ).fetchone()
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PreflightError(
            f"Cannot connect to the PostgreSQL server at DATABASE_URL: {first}"
        ) from exc
    if row is None:
        raise PreflightError(PGVECTOR_MISSING)


def check_redis(url: str) -> None:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3).ping()
    except redis.RedisError as exc:
        raise PreflightError(f"Cannot reach Redis at REDIS_URL: {exc}") from exc
