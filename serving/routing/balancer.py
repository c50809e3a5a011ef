"""Load-balancing strategies: the order in which a group's deployments are tried.

Each strategy returns every candidate, best first; failover walks down the list. All read
only memory (the live state was fetched from Redis once for the request).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from serving.routing.deployments import Target
from serving.routing.health import DeploymentState, LiveState

_IDLE = DeploymentState()


def _weighted_keys(targets: Sequence[Target], rng: random.Random) -> dict[str, float]:
    # Efraimidis–Spirakis: sorting by u^(1/w) descending is weighted sampling without
    # replacement, so the first element is chosen with probability w / sum(w).
    return {t.name: rng.random() ** (1.0 / max(t.weight, 1)) for t in targets}


def weighted(targets: Sequence[Target], live: LiveState, rng: random.Random) -> list[Target]:
    keys = _weighted_keys(targets, rng)
    return sorted(targets, key=lambda t: -keys[t.name])


def least_connections(
    targets: Sequence[Target], live: LiveState, rng: random.Random
) -> list[Target]:
    keys = _weighted_keys(targets, rng)
    return sorted(targets, key=lambda t: (live.get(t.name, _IDLE).inflight, -keys[t.name]))


def lowest_latency(targets: Sequence[Target], live: LiveState, rng: random.Random) -> list[Target]:
    # A deployment with no measurement yet sorts first, so every one gets measured.
    keys = _weighted_keys(targets, rng)
    return sorted(targets, key=lambda t: (live.get(t.name, _IDLE).ewma_ms or 0.0, -keys[t.name]))


def power_of_two(targets: Sequence[Target], live: LiveState, rng: random.Random) -> list[Target]:
    order = weighted(targets, live, rng)
    if len(order) >= 2:
        a, b = order[0], order[1]
        if live.get(b.name, _IDLE).inflight < live.get(a.name, _IDLE).inflight:
            order[0], order[1] = b, a
    return order


Strategy = Callable[[Sequence[Target], LiveState, random.Random], list[Target]]

STRATEGIES: dict[str, Strategy] = {
    "weighted": weighted,
    "least_connections": least_connections,
    "lowest_latency": lowest_latency,
    "power_of_two": power_of_two,
}


def available(targets: Sequence[Target], live: LiveState, now: float) -> list[Target]:
    """Deployments neither in cooldown nor at their max concurrency. When none is, all of
    them: trying a cooling deployment beats refusing every request outright."""
    ok = [
        t
        for t in targets
        if not live.get(t.name, _IDLE).cooling(now)
        and live.get(t.name, _IDLE).inflight < t.max_concurrency
    ]
    return ok or list(targets)
