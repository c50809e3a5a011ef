"""Pytest plugin: embedded PostgreSQL and Redis for the test session.

Loaded with ``-p switchyard.testing.services`` (see pyproject) so it runs before pytest-django
reads the settings. Unset ``DATABASE_URL``/``REDIS_URL`` get embedded servers, started once for
the session and stopped at its end; set ones are used as they are.
"""

from __future__ import annotations

import os

import pytest

from switchyard.embedded import EmbeddedServices, ensure_services

_services: EmbeddedServices | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args) -> None:  # noqa: ARG001
    global _services
    if early_config.getoption("help", False) or early_config.getoption("version", 0):
        return
    os.environ.setdefault("SWITCHYARD_TESTING", "1")
    _services = ensure_services(scope="test", persistent=False)


def pytest_report_header(config) -> list[str]:  # noqa: ARG001
    started = _services.describe() if _services else []
    return [f"switchyard services: embedded {', '.join(started) or 'none'}; others external"]


def pytest_unconfigure(config) -> None:  # noqa: ARG001
    global _services
    if _services is not None:
        _services.stop()
        _services = None
