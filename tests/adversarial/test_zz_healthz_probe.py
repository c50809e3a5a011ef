"""Collected last in the adversarial suite: the ``/healthz`` probe that ran beside every
attack (tests/adversarial/conftest.py) must have kept its P99 under 100 ms."""

import pytest

P99_LIMIT_S = 0.100


def test_healthz_p99_stayed_under_100_ms_beside_the_attacks(healthz_probe):
    if len(healthz_probe.samples) < 50:
        pytest.skip("too few probe samples: run the whole adversarial suite for this check")
    p99 = healthz_probe.p99()
    assert healthz_probe.failures == 0
    assert p99 < P99_LIMIT_S, f"/healthz P99 {p99 * 1000:.1f} ms beside the attacks"
