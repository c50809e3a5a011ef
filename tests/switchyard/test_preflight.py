"""Start-up checks against real servers: the embedded ones and the system ones on 127.0.0.1."""

import os
import socket

import pytest

from switchyard.preflight import (
    PGVECTOR_MISSING,
    PreflightError,
    check_database,
    check_redis,
)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5):
            return True
    except OSError:
        return False


def test_embedded_database_has_pgvector():
    check_database(os.environ["DATABASE_URL"])


def test_embedded_redis_is_reachable():
    check_redis(os.environ["REDIS_URL"])


@pytest.mark.external_services
def test_database_without_pgvector_fails_with_one_clear_sentence():
    if not _listening(5432):
        pytest.skip("no system PostgreSQL on 127.0.0.1:5432")
    with pytest.raises(PreflightError) as err:
        check_database("postgresql://postgres@127.0.0.1:5432/postgres")
    assert str(err.value) == PGVECTOR_MISSING
    assert "pgvector" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.external_services
def test_external_redis_url_is_accepted():
    if not _listening(6379):
        pytest.skip("no system Redis on 127.0.0.1:6379")
    check_redis("redis://127.0.0.1:6379/15")


def test_unreachable_services_are_named():
    with pytest.raises(PreflightError, match="Cannot connect to the PostgreSQL server"):
        check_database("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(PreflightError, match="Cannot reach Redis"):
        check_redis("redis://127.0.0.1:1/0")
