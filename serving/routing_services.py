"""Writes to model groups and routing rules: validated, audited, one function each."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from serving.models import Deployment, ModelGroup, RoutingRule
from tenants.services import audit, snapshot

GROUP_FIELDS = ["name", "strategy", "description"]
RULE_FIELDS = [
    "position",
    "name",
    "enabled",
    "tier",
    "tenant",
    "requested_models",
    "min_prompt_tokens",
    "max_prompt_tokens",
    "task_class",
    "metadata_key",
    "metadata_value",
    "target",
]


def _group_state(group: ModelGroup) -> dict:
    return snapshot(group, GROUP_FIELDS) | {
        "members": sorted(group.members.values_list("name", flat=True))
    }


@transaction.atomic
def model_group_set(
    *, name: str, strategy: str, members: list[str] | None = None, description: str = "",
    actor=None,
) -> ModelGroup:  # fmt: skip
    """Create or update the group ``name``; ``members`` are deployment names (None keeps
    them)."""
    group = ModelGroup.objects.select_for_update().filter(name=name).first()
    before = _group_state(group) if group else None
    group = group or ModelGroup(name=name)
    group.strategy = strategy
    group.description = description
    group.full_clean()
    group.save()
    if members is not None:
        found = list(Deployment.objects.filter(name__in=members))
        missing = sorted(set(members) - {d.name for d in found})
        if missing:
            raise ValidationError({"members": [f"Unknown deployment(s): {', '.join(missing)}."]})
        group.members.set(found)
    after = _group_state(group)
    if before != after:
        audit(
            actor=actor,
            action="model_group.create" if before is None else "model_group.update",
            obj=group,
            before=before,
            after=after,
        )
    return group


def _validate_rule(rule: RoutingRule) -> None:
    from serving.catalog import model_names

    errors: dict[str, list[str]] = {}
    if rule.target not in model_names():
        errors["target"] = [f"Unknown model or group: {rule.target}."]
    if (
        rule.min_prompt_tokens is not None
        and rule.max_prompt_tokens is not None
        and rule.min_prompt_tokens > rule.max_prompt_tokens
    ):
        errors["max_prompt_tokens"] = ["Must be at least the minimum."]
    if rule.metadata_value and not rule.metadata_key:
        errors["metadata_key"] = ["A metadata value needs a key."]
    if errors:
        raise ValidationError(errors)


@transaction.atomic
def routing_rule_set(*, name: str, actor=None, **fields) -> RoutingRule:
    """Create or update the rule ``name`` (conditions left out keep their value)."""
    rule = RoutingRule.objects.select_for_update().filter(name=name).first()
    before = snapshot(rule, RULE_FIELDS) if rule else None
    rule = rule or RoutingRule(name=name)
    for k, v in fields.items():
        setattr(rule, k, v)
    rule.full_clean()
    _validate_rule(rule)
    rule.save()
    after = snapshot(rule, RULE_FIELDS)
    if before != after:
        audit(
            actor=actor,
            action="routing_rule.create" if before is None else "routing_rule.update",
            obj=rule,
            before=before,
            after=after,
        )
    return rule


@transaction.atomic
def routing_rule_delete(*, rule: RoutingRule, actor=None) -> None:
    before = snapshot(rule, RULE_FIELDS)
    audit(actor=actor, action="routing_rule.delete", obj=rule, before=before, after=None)
    rule.delete()
