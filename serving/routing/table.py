"""The routing table a gateway process decides from: model groups, ordered rules, prices.

Loaded from PostgreSQL at most every ``SWITCHYARD_TABLE_CACHE_SECONDS`` (like the deployment
table it builds on), so a routing decision reads only memory. Live state (in-flight counts,
latency, cooldowns) is not here: it is in Redis (:mod:`serving.routing.health`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from billing.pricing import Price, cached_price_at, price_at
from serving.routing.deployments import Target, load_deployment_table
from switchyard.single_flight import load_once
from switchyard.ttl_cache import TtlCache

CACHE_SECONDS = settings.SWITCHYARD_TABLE_CACHE_SECONDS
AUTO = "auto"  # the router's alias: always resolved by the rules or the tier's default


def deployment_price(
    target: Target, at: dt.datetime | None = None, *, tenant_id: int | None = None
) -> Price:
    """What one request on ``target`` costs per token (integer micro-dollars per million): the
    deployment's price list if it has one, else its model's, under the tenant's override."""
    return price_at(target.model, at, deployment=target.name, tenant_id=tenant_id)


async def adeployment_price(
    target: Target, at: dt.datetime | None = None, *, tenant_id: int | None = None
) -> Price:
    """:func:`deployment_price` for async code: on the event loop when the prices are cached
    (every request but a few a minute), in a thread when they must be read."""
    price = cached_price_at(target.model, at, deployment=target.name, tenant_id=tenant_id)
    if price is not None:
        return price
    return await sync_to_async(deployment_price, thread_sensitive=False)(
        target, at, tenant_id=tenant_id
    )  # not shared: the answer depends on ``at``


@dataclass(frozen=True)
class Group:
    """A public name and the deployments that serve it, balanced by ``strategy``."""

    name: str
    strategy: str
    targets: tuple[Target, ...]


@dataclass(frozen=True)
class RouteContext:
    """What the rules may look at for one request."""

    tier_id: int | None
    tenant_id: int | None
    requested: str
    prompt_tokens: int
    task_class: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    name: str
    position: int
    target: str
    tier_id: int | None = None
    tenant_id: int | None = None
    requested: frozenset[str] = frozenset()
    min_prompt_tokens: int | None = None
    max_prompt_tokens: int | None = None
    task_class: str = ""
    metadata_key: str = ""
    metadata_value: str = ""

    def mismatch(self, ctx: RouteContext) -> str | None:
        """Why this rule does not match ``ctx`` (None when it matches)."""
        if self.tier_id is not None and ctx.tier_id != self.tier_id:
            return "another tier"
        if self.tenant_id is not None and ctx.tenant_id != self.tenant_id:
            return "another tenant"
        if self.requested and ctx.requested not in self.requested:
            return f"requested name is not {'/'.join(sorted(self.requested))}"
        if self.min_prompt_tokens is not None and ctx.prompt_tokens < self.min_prompt_tokens:
            return f"prompt ~{ctx.prompt_tokens} tokens < {self.min_prompt_tokens}"
        if self.max_prompt_tokens is not None and ctx.prompt_tokens > self.max_prompt_tokens:
            return f"prompt ~{ctx.prompt_tokens} tokens > {self.max_prompt_tokens}"
        if self.task_class and ctx.task_class != self.task_class:
            return f"task class is {ctx.task_class or 'unknown'}, not {self.task_class}"
        if self.metadata_key:
            value = ctx.metadata.get(self.metadata_key)
            if value is None:
                return f"no metadata {self.metadata_key}"
            if self.metadata_value and value != self.metadata_value:
                return f"metadata {self.metadata_key}={value!r}, not {self.metadata_value!r}"
        return None


@dataclass(frozen=True)
class RoutingTable:
    groups: dict[str, Group]
    rules: tuple[Rule, ...]
    prices: dict[str, Price]  # by deployment name, at load time (cost-aware estimates)

    @property
    def names(self) -> list[str]:
        return sorted(self.groups)

    @property
    def needs_task_class(self) -> bool:
        return any(r.task_class for r in self.rules)

    @property
    def deployment_names(self) -> list[str]:
        return sorted({t.name for g in self.groups.values() for t in g.targets})


def load_routing_table(deployments: dict[str, list[Target]] | None = None) -> RoutingTable:
    """Build the table from the database, now (gateways cache it: :func:`routing_table`)."""
    from serving.models import ModelGroup, RoutingRule

    deployments = load_deployment_table() if deployments is None else deployments
    by_name = {t.name: t for targets in deployments.values() for t in targets}
    groups: dict[str, Group] = {
        model: Group(model, ModelGroup.Strategy.WEIGHTED, tuple(targets))
        for model, targets in deployments.items()
    }
    for g in ModelGroup.objects.prefetch_related("members"):
        own = list(deployments.get(g.name, []))
        extra = [by_name[m.name] for m in g.members.all() if m.name in by_name]
        members = {t.name: t for t in own + extra}
        groups[g.name] = Group(g.name, g.strategy, tuple(members[n] for n in sorted(members)))
    rules = tuple(
        Rule(
            name=r.name,
            position=r.position,
            target=r.target,
            tier_id=r.tier_id,
            tenant_id=r.tenant_id,
            requested=frozenset(r.requested_models),
            min_prompt_tokens=r.min_prompt_tokens,
            max_prompt_tokens=r.max_prompt_tokens,
            task_class=r.task_class,
            metadata_key=r.metadata_key,
            metadata_value=r.metadata_value,
        )
        for r in RoutingRule.objects.filter(enabled=True).order_by("position", "id")
    )
    now = timezone.now()
    prices = {t.name: deployment_price(t, now) for t in by_name.values()}
    return RoutingTable(groups, rules, prices)


_table: TtlCache[str, RoutingTable] = TtlCache(CACHE_SECONDS)


def routing_table() -> RoutingTable:
    """The cached table, reloaded when older than ``CACHE_SECONDS`` (blocking: not on a loop)."""
    return _table.get_or_load("routing", load_routing_table)


async def arouting_table() -> RoutingTable:
    """:func:`routing_table` for async code: reloads off the event loop when stale."""
    table = _table.get("routing")  # read once: fresh now, never loaded on the loop
    if table is not None:
        return table
    return await load_once("routing-table", routing_table)


def clear_cache() -> None:
    _table.clear()
