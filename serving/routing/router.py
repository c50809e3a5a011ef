"""Routing: which public model a request gets, and in which order its deployments are tried.

1. **Model selection.** A caller whose tier allows overrides and who names a model (or group)
   that has deployments gets it. Otherwise the ordered routing rules decide (tier, tenant,
   requested name, estimated prompt tokens, task class, request metadata; first match wins),
   and the tier's default model is the fallback.
2. **Deployments able to serve it.** A request with tools or images goes only to the
   group's deployments with the ``tools`` or ``vision`` capability, one with parameters
   Switchyard does not know (a tier that passes them through) only to OpenAI-compatible
   ones; none able is a 400 naming what is missing, before any upstream call.
3. **Deployment order.** The group's strategy (weighted, least connections, lowest latency,
   power of two, or cost-aware cheapest) orders its deployments that are not cooling down;
   failover (:mod:`serving.routing.failover`) walks down that order.

Everything here reads memory only: the routing table (cached from PostgreSQL) and the live
state (fetched from Redis once per request). The decision and why is in ``Route``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from serving.gateway.errors import GatewayError, model_not_found
from serving.routing import balancer
from serving.routing.catalog import model_names
from serving.routing.deployments import Target
from serving.routing.health import LiveState
from serving.routing.table import AUTO, RouteContext, RoutingTable
from tenants.models import Tier


@dataclass(frozen=True)
class Route:
    model: str
    target: Target
    rule: str
    task_class: str | None = None
    strategy: str = "weighted"
    candidates: tuple[Target, ...] = ()
    attempts: int = 1
    explanation: tuple[str, ...] = field(default=(), compare=False)

    def header(self) -> str:
        parts = [f"model={self.model}", f"deployment={self.target.name}", f"rule={self.rule}"]
        if self.task_class:
            parts.append(f"class={self.task_class}")
        parts.append(f"strategy={self.strategy}")
        if self.attempts > 1:
            parts.append(f"attempts={self.attempts}")
        return "; ".join(parts)


# Deployment kinds that take an OpenAI request body as it is: parameters Switchyard does not
# know may pass through to them (Tier.pass_unknown_params).
PASSTHROUGH_KINDS = frozenset({"openai_compatible", "azure_openai"})


def able_targets(
    model: str,
    targets: Sequence[Target],
    needs: Mapping[str, str],
    unknown: Sequence[str] = (),
) -> list[Target]:
    """The ``targets`` that can serve a request needing the capabilities ``needs`` (each with
    the parameter that needs it) and carrying the ``unknown`` parameters; a 400 naming the
    first thing none of them has."""
    able = list(targets)
    for capability, param in needs.items():
        able = [t for t in able if capability in t.capabilities]
        if not able:
            raise GatewayError(
                400,
                f"No deployment of `{model}` has the `{capability}` capability, which "
                f"'{param}' needs; call a model that has it, or ask your operator.",
                param=param,
                code="unsupported_capability",
            )
    if unknown:
        able = [t for t in able if t.kind in PASSTHROUGH_KINDS]
        if not able:
            raise GatewayError(
                400,
                f"Unrecognized request argument supplied: {unknown[0][:64]} (your plan passes "
                f"such parameters through to OpenAI-compatible deployments only, and `{model}` "
                "has none).",
                param=unknown[0][:64],
                code="unknown_parameter",
            )
    return able


def allowed_models(tier: Tier, table: RoutingTable | None = None) -> list[str]:
    """The public names a tier may call (an empty allow-list means every known name).
    Known: the configured models, every name with deployments or a group, and ``auto``."""
    known = model_names() if table is None else _known(table)
    return [m for m in tier.allowed_models if m in known] if tier.allowed_models else known


def _known(table: RoutingTable) -> list[str]:
    from django.conf import settings

    return list(dict.fromkeys([*settings.SWITCHYARD_MODELS, *table.names, AUTO]))


def unavailable(model: str) -> GatewayError:
    return GatewayError(
        503,
        f"No deployment is serving `{model}` right now; try again later.",
        type="api_error",
        code="model_unavailable",
        headers={"retry-after": "5"},
    )


class Router:
    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()

    def select_model(
        self, tier: Tier, ctx: RouteContext, table: RoutingTable, notes: list[str]
    ) -> tuple[str, str]:
        """(public model, rule name) for the request; ``notes`` collects the reasons."""
        requested = ctx.requested
        allowed = allowed_models(tier, table)
        servable = requested != AUTO and bool(table.groups.get(requested, None))
        if tier.allow_model_override:
            if requested not in allowed:
                raise model_not_found(requested)
            if servable:
                notes.append(f"caller named `{requested}` and the tier allows overrides")
                return requested, "requested"
        else:
            notes.append("the tier does not let callers choose: the rules decide")
        for rule in table.rules:
            why_not = rule.mismatch(ctx)
            if why_not is None:
                notes.append(f"rule `{rule.name}` (position {rule.position}) matched")
                return rule.target, rule.name
            notes.append(f"rule `{rule.name}` skipped: {why_not}")
        if tier.default_model:
            notes.append(f"no rule matched: the tier's default `{tier.default_model}`")
            return tier.default_model, "tier-default"
        if servable and requested in allowed:
            notes.append(f"no rule matched and no default: the requested `{requested}`")
            return requested, "requested"
        raise model_not_found(requested)

    def route(
        self,
        tier: Tier,
        requested: str,
        table: RoutingTable,
        *,
        ctx: RouteContext | None = None,
        live: LiveState | None = None,
        max_output: int = 0,
        max_cost: int | None = None,
        needs: Mapping[str, str] | None = None,
        unknown: Sequence[str] = (),
    ) -> Route:
        """Pick the model and the order of its deployments, or raise a ``GatewayError``.

        ``max_output`` (tokens) and ``max_cost`` (micro-dollars, the caller's budget for this
        request) matter to cost-aware groups only. ``needs`` and ``unknown``: see
        :func:`able_targets`."""
        ctx = ctx or RouteContext(tier_id=tier.pk, tenant_id=None, requested=requested,
                                  prompt_tokens=0)  # fmt: skip
        notes: list[str] = []
        try:
            return self._route(tier, ctx, table, live or {}, max_output, max_cost, notes,
                               needs or {}, unknown)  # fmt: skip
        except GatewayError as exc:
            exc.explanation = tuple(notes)  # for the console's dry run
            raise

    def _route(
        self,
        tier: Tier,
        ctx: RouteContext,
        table: RoutingTable,
        live: LiveState,
        max_output: int,
        max_cost: int | None,
        notes: list[str],
        needs: Mapping[str, str],
        unknown: Sequence[str],
    ) -> Route:
        model, rule = self.select_model(tier, ctx, table, notes)
        group = table.groups.get(model)
        if group is None or not group.targets:
            raise unavailable(model)
        targets = group.targets
        if needs or unknown:
            targets = tuple(able_targets(model, targets, needs, unknown))
            if len(targets) < len(group.targets):
                wanted = ", ".join([*needs, *(["OpenAI-compatible"] if unknown else [])])
                notes.append(f"able to serve it ({wanted}): "
                             + ", ".join(t.name for t in targets))  # fmt: skip
        strategy = balancer.STRATEGIES.get(group.strategy, balancer.STRATEGIES["weighted"])
        demand = balancer.Demand(
            group=group.name,
            prompt_tokens=ctx.prompt_tokens,
            max_output=max_output,
            budget=max_cost if max_cost is not None else (tier.request_budget_micro_usd or None),
            quality_floor=tier.quality_floor,
            prices=table.prices,
        )
        eligible = strategy.eligible(targets, demand, notes)
        now = time.time()
        pool = balancer.available(eligible, live, now)
        skipped = sorted({t.name for t in eligible} - {t.name for t in pool})
        if skipped:
            notes.append(f"skipped (cooling down or saturated): {', '.join(skipped)}")
        elif any(live[t.name].cooling(now) for t in eligible if t.name in live):
            notes.append("every deployment is cooling down or saturated: trying them anyway")
        order = strategy(pool, live, self.rng, demand)
        notes.append(f"{group.strategy} over {len(targets)} deployment(s): "
                     + ", ".join(t.name for t in order))  # fmt: skip
        return Route(
            model=model,
            target=order[0],
            rule=rule,
            task_class=ctx.task_class,
            strategy=group.strategy,
            candidates=tuple(order),
            explanation=tuple(notes),
        )
