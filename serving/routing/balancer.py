"""Load-balancing strategies: the order in which a group's deployments are tried.

Each strategy returns every candidate, best first; failover walks down the list. A strategy
may first narrow the group to the deployments eligible for the request (the cost-aware one:
quality floor and budget), before those cooling down or saturated are set aside
(:func:`available`). All read only memory (the live state was fetched from Redis once for
the request, the prices are the routing table's).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from billing.pricing import Price
from serving.gateway.errors import GatewayError
from serving.routing.deployments import Target
from serving.routing.health import DeploymentState, LiveState

_IDLE = DeploymentState()


@dataclass(frozen=True)
class Demand:
    """What one request asks of a group, for the strategies that weigh cost: its predicted
    size, the most it may cost, the tier's quality floor and the deployments' prices."""

    group: str  # the public model name, for refusals
    prompt_tokens: int  # the prompt estimate
    max_output: int  # the output tokens the request may produce (or is assumed to)
    budget: int | None  # micro-dollars; None: no budget
    quality_floor: float
    prices: Mapping[str, Price]  # by deployment name

    def cost(self, target: Target) -> int:
        """The request's predicted cost on ``target``, micro-dollars."""
        return self.prices[target.name].cost(self.prompt_tokens, self.max_output)


def _weighted_keys(targets: Sequence[Target], rng: random.Random) -> dict[str, float]:
    # Efraimidis–Spirakis: sorting by u^(1/w) descending is weighted sampling without
    # replacement, so the first element is chosen with probability w / sum(w).
    return {t.name: rng.random() ** (1.0 / max(t.weight, 1)) for t in targets}


def weighted(
    targets: Sequence[Target], live: LiveState, rng: random.Random, demand: Demand | None = None
) -> list[Target]:
    keys = _weighted_keys(targets, rng)
    return sorted(targets, key=lambda t: -keys[t.name])


def least_connections(
    targets: Sequence[Target], live: LiveState, rng: random.Random, demand: Demand | None = None
) -> list[Target]:
    keys = _weighted_keys(targets, rng)
    return sorted(targets, key=lambda t: (live.get(t.name, _IDLE).inflight, -keys[t.name]))


def lowest_latency(
    targets: Sequence[Target], live: LiveState, rng: random.Random, demand: Demand | None = None
) -> list[Target]:
    # A deployment with no measurement yet sorts first, so every one gets measured.
    keys = _weighted_keys(targets, rng)
    return sorted(targets, key=lambda t: (live.get(t.name, _IDLE).ewma_ms or 0.0, -keys[t.name]))


def power_of_two(
    targets: Sequence[Target], live: LiveState, rng: random.Random, demand: Demand | None = None
) -> list[Target]:
    order = weighted(targets, live, rng)
    if len(order) >= 2:
        a, b = order[0], order[1]
        if live.get(b.name, _IDLE).inflight < live.get(a.name, _IDLE).inflight:
            order[0], order[1] = b, a
    return order


def cheapest(
    targets: Sequence[Target], live: LiveState, rng: random.Random, demand: Demand | None = None
) -> list[Target]:
    """Cost-aware: the lowest predicted cost first, ties by fewest in flight (without a
    demand, least connections alone). Which deployments qualify: :func:`affordable`."""
    order = least_connections(targets, live, rng)
    if demand is None:
        return order
    return sorted(order, key=demand.cost)  # stable: ties by fewest in flight


def every(targets: Sequence[Target], demand: Demand, notes: list[str]) -> list[Target]:
    """Every deployment of the group is eligible (all strategies but the cost-aware one)."""
    return list(targets)


def affordable(targets: Sequence[Target], demand: Demand, notes: list[str]) -> list[Target]:
    """The cost-aware strategy's eligible deployments: quality at least the tier's floor and
    a predicted cost within the request's budget; a 400 when none is (``notes`` get why)."""
    floor = demand.quality_floor
    good = [t for t in targets if t.quality >= floor]
    if not good:
        best = max(t.quality for t in targets)
        raise GatewayError(
            400,
            f"No deployment of `{demand.group}` meets your plan's quality floor of {floor:g} "
            f"(the best has {best:g}); ask for another model or your operator.",
            param="model",
            code="quality_floor_unmet",
        )
    budget = demand.budget
    cost = {t.name: demand.cost(t) for t in good}
    within = [t for t in good if budget is None or cost[t.name] <= budget]
    if not within:
        cheapest_cost = min(cost.values())
        raise GatewayError(
            400,
            f"This request would cost at least ${cheapest_cost / 1e6:.6f} on `{demand.group}` "
            f"(about {demand.prompt_tokens} prompt + {demand.max_output} completion tokens), "
            f"more than its budget of ${budget / 1e6:.6f}; lower max_tokens or raise the "
            "budget (x-switchyard-max-cost-usd).",
            param="max_tokens",
            code="request_budget_exceeded",
        )
    notes.append(
        f"cost-aware: quality >= {floor:g} and predicted cost <= "
        + ("no budget" if budget is None else f"{budget} micro-USD")
        + ": "
        + ", ".join(f"{t.name} {cost[t.name]} micro-USD" for t in within)
    )
    return within


Order = Callable[[Sequence[Target], LiveState, random.Random, Demand | None], list[Target]]
Eligibility = Callable[[Sequence[Target], Demand, list[str]], list[Target]]


@dataclass(frozen=True)
class Strategy:
    """A balancing strategy: which of a group's deployments are eligible for a request
    (``eligible``, noting why in the route's explanation), and the order of those that are
    available, best first (called like ``order``)."""

    order: Order
    eligible: Eligibility = every

    def __call__(
        self,
        targets: Sequence[Target],
        live: LiveState,
        rng: random.Random,
        demand: Demand | None = None,
    ) -> list[Target]:
        return self.order(targets, live, rng, demand)


STRATEGIES: dict[str, Strategy] = {
    "weighted": Strategy(weighted),
    "least_connections": Strategy(least_connections),
    "lowest_latency": Strategy(lowest_latency),
    "power_of_two": Strategy(power_of_two),
    "cheapest": Strategy(cheapest, affordable),
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
