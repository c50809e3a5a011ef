"""The ``slow`` marker (tests/conftest.py): ``pytest -m "not slow"`` leaves out the tests that
load the model, start processes or drive Chromium, and only those."""

import re
from pathlib import Path

import pytest

from tests.conftest import SLOW_FIXTURES

TESTS = Path(__file__).resolve().parents[1]


def test_every_slow_fixture_is_defined():
    """A renamed fixture would silently put its tests back in the fast loop."""
    source = "\n".join(p.read_text() for p in TESTS.rglob("*.py"))
    defined = set(re.findall(r"@pytest\.fixture[^\n]*\n(?:@[^\n]*\n)*def (\w+)\(", source))
    assert SLOW_FIXTURES - defined == set()


@pytest.mark.browser
def test_a_browser_test_is_slow(request):
    assert request.node.get_closest_marker("slow") is not None


def test_a_test_without_slow_fixtures_is_not_slow(request, tenant_a):
    assert request.node.get_closest_marker("slow") is None
