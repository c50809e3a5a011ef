"""What ``GET /v1/models`` lists: the names a key can really call now.

A name is listed when the key's tier allows it and at least one enabled deployment serves it
(directly or as a group member); ``auto`` when the routing rules (or the tier's default model)
send every kind of prompt somewhere that is served. Reads the cached routing table only.
"""

from __future__ import annotations

from serving.models import RoutingRule
from serving.routing.router import allowed_models
from serving.routing.table import AUTO, RoutingTable
from tenants.models import Tier

TASK_CLASSES = frozenset(c for c in RoutingRule.TaskClass.values if c)


def servable(table: RoutingTable, name: str) -> bool:
    group = table.groups.get(name)
    return bool(name) and name != AUTO and group is not None and bool(group.targets)


def auto_routes(tier: Tier, table: RoutingTable, tenant_id: int | None = None) -> bool:
    """Whether ``auto`` reaches a served name for every task class of an ordinary prompt
    (rules that need a prompt length or request metadata are not counted on; a rule that
    matches first and leads nowhere counts against)."""
    decided: dict[str, bool] = {}
    for rule in table.rules:
        if rule.tier_id not in (None, tier.pk) or rule.tenant_id not in (None, tenant_id):
            continue
        if rule.requested and AUTO not in rule.requested:
            continue
        if rule.min_prompt_tokens or rule.metadata_key:
            continue
        classes = {rule.task_class} if rule.task_class else TASK_CLASSES
        for c in classes - decided.keys():
            decided[c] = servable(table, rule.target)
        if not rule.task_class:
            break
    fallback = servable(table, tier.default_model)
    return all(decided.get(c, fallback) for c in TASK_CLASSES)


def callable_models(tier: Tier, table: RoutingTable, tenant_id: int | None = None) -> list[str]:
    """The names a key of ``tier`` (and tenant) can call, in the allow-list's order."""
    allowed = allowed_models(tier, table)
    names = [m for m in allowed if servable(table, m)]
    if AUTO in allowed and auto_routes(tier, table, tenant_id):
        names.append(AUTO)
    return names
