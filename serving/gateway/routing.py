"""The routing seam: which public model a request gets, and which deployment serves it.

Here the tier decides the model (its default when callers may not override) and a weighted
random choice picks among the model's enabled deployments. Routing rules, the classifier,
cost-aware choice, health and failover plug in here (routing issue).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from serving.catalog import model_names
from serving.deployments import Target
from serving.gateway.errors import GatewayError, model_not_found
from tenants.models import Tier


@dataclass(frozen=True)
class Route:
    model: str
    target: Target
    rule: str

    def header(self) -> str:
        return f"model={self.model}; deployment={self.target.name}; rule={self.rule}"


def allowed_models(tier: Tier) -> list[str]:
    """The public models a tier may call (an empty allow-list means every known model)."""
    known = model_names()
    return [m for m in tier.allowed_models if m in known] if tier.allowed_models else known


class Router:
    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()

    def resolve_model(self, tier: Tier, requested: str) -> tuple[str, str]:
        if not tier.allow_model_override and tier.default_model:
            return tier.default_model, "tier-default"
        if requested in allowed_models(tier):
            return requested, "requested"
        raise model_not_found(requested)

    def route(self, tier: Tier, requested: str, table: dict[str, list[Target]]) -> Route:
        """Pick the model and deployment; ``table`` is the enabled deployments by model."""
        model, rule = self.resolve_model(tier, requested)
        targets = table.get(model, [])
        if not targets:
            raise GatewayError(
                503,
                f"No deployment is serving `{model}` right now; try again later.",
                type="api_error",
                code="model_unavailable",
                headers={"retry-after": "5"},
            )
        target = self.rng.choices(targets, weights=[t.weight for t in targets])[0]
        return Route(model, target, rule)
