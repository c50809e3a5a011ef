"""The console's dry run: how a request would be routed, explained, without calling a model."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from serving.gateway.endpoints import CHAT
from serving.gateway.errors import GatewayError
from serving.routing.classifier import task_classifier
from serving.routing.health import DeploymentHealthSync, LiveState
from serving.routing.router import Route, Router
from serving.routing.table import RouteContext, load_routing_table
from switchyard.redis_client import get_redis
from tenants.models import Tenant


@dataclass
class RoutePreview:
    prompt_tokens: int
    task_class: str | None
    classified_by: str
    route: Route | None = None
    error: GatewayError | None = None
    live: LiveState = field(default_factory=dict)


def preview_route(
    *,
    tenant: Tenant,
    model: str,
    prompt: str,
    max_tokens: int | None = None,
    max_cost_micro_usd: int | None = None,
    metadata: dict[str, str] | None = None,
) -> RoutePreview:
    """Route a chat request with ``prompt`` for ``tenant`` as the gateway would (same table,
    live state and classifier); the decision and its reasons, or the error a caller would get."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    tokens = CHAT.estimate_prompt_tokens(body)
    table = load_routing_table()  # uncached: a rule saved a second ago counts
    task_class, how = (None, "not needed (no rule uses it)")
    if table.needs_task_class:
        task_class, how = task_classifier().classify(prompt)
    live = DeploymentHealthSync(get_redis()).snapshot(table.deployment_names)
    preview = RoutePreview(tokens, task_class, how, live=live)
    ctx = RouteContext(tenant.tier_id, tenant.pk, model, tokens, task_class, metadata or {})
    try:
        preview.route = Router(random.Random()).route(
            tenant.tier, model, table, ctx=ctx, live=live,
            max_output=max_tokens or CHAT.expected_output, max_cost=max_cost_micro_usd,
        )  # fmt: skip
    except GatewayError as exc:
        preview.error = exc
    return preview
