"""Balancing strategies as plain functions over targets and a live state."""

from __future__ import annotations

import random
from collections import Counter

from serving.routing import balancer
from serving.routing.deployments import Target
from serving.routing.health import DeploymentState


def t(name: str, weight: int = 1, max_concurrency: int = 64) -> Target:
    return Target(name, "m", "m", "local_worker", "http://x/v1", "", weight, max_concurrency,
                  8192, 10.0)  # fmt: skip


def test_weighted_first_choice_follows_the_weights():
    targets = [t("a", 6), t("b", 3), t("c", 1)]
    rng = random.Random(7)
    firsts = Counter(balancer.weighted(targets, {}, rng)[0].name for _ in range(10_000))
    assert abs(firsts["a"] / 10_000 - 0.6) < 0.02
    assert abs(firsts["b"] / 10_000 - 0.3) < 0.02
    assert abs(firsts["c"] / 10_000 - 0.1) < 0.02


def test_every_strategy_returns_every_candidate_once():
    targets = [t("a"), t("b"), t("c")]
    live = {"a": DeploymentState(inflight=2, ewma_ms=50), "b": DeploymentState(inflight=0)}
    for name, strategy in balancer.STRATEGIES.items():
        order = strategy(targets, live, random.Random(1))
        assert sorted(x.name for x in order) == ["a", "b", "c"], name


def test_least_connections_and_lowest_latency_order():
    targets = [t("a"), t("b"), t("c")]
    live = {
        "a": DeploymentState(inflight=5, ewma_ms=20.0),
        "b": DeploymentState(inflight=1, ewma_ms=90.0),
        "c": DeploymentState(inflight=3, ewma_ms=40.0),
    }
    rng = random.Random(3)
    assert [x.name for x in balancer.least_connections(targets, live, rng)] == ["b", "c", "a"]
    assert [x.name for x in balancer.lowest_latency(targets, live, rng)] == ["a", "c", "b"]


def test_power_of_two_takes_the_less_busy_of_two_random_picks():
    targets = [t("a"), t("b")]
    live = {"a": DeploymentState(inflight=9), "b": DeploymentState(inflight=0)}
    rng = random.Random(5)
    assert {balancer.power_of_two(targets, live, rng)[0].name for _ in range(50)} == {"b"}


def test_cooling_and_saturated_deployments_are_left_out_unless_all_are():
    targets = [t("a"), t("b", max_concurrency=2), t("c")]
    live = {
        "a": DeploymentState(cooldown_until=2_000.0),
        "b": DeploymentState(inflight=2),
    }
    assert [x.name for x in balancer.available(targets, live, now=1_000.0)] == ["c"]
    assert [x.name for x in balancer.available(targets, live, now=3_000.0)] == ["a", "c"]
    everything_down = {"a": live["a"], "b": live["b"], "c": DeploymentState(cooldown_until=2e3)}
    assert len(balancer.available(targets, everything_down, now=1_000.0)) == 3
