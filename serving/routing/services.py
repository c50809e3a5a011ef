"""Writes to model groups and routing rules: validated, audited, one function each; and the
routing policy a fresh install starts with (:func:`routing_policy_seed`)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from serving.models import Deployment, ModelGroup, RoutingRule
from tenants.services import audit, check_model_text, check_text, snapshot

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
GROUP_EXISTS = "A group with this name already exists."
RULE_EXISTS = "A rule with this name already exists."


def _group_state(group: ModelGroup) -> dict:
    return snapshot(group, GROUP_FIELDS) | {
        "members": sorted(group.members.values_list("name", flat=True))
    }


def _save_new_or_existing(obj, message: str) -> None:
    """Save; a concurrent create of the same unique name becomes a field error."""
    try:
        with transaction.atomic():
            obj.save()
    except IntegrityError as exc:
        raise ValidationError({"name": [message]}) from exc


@transaction.atomic
def model_group_set(
    *, name: str, strategy: str, members: list[str] | None = None, description: str = "",
    create: bool = False, actor=None,
) -> ModelGroup:  # fmt: skip
    """Create or update the group ``name``; ``members`` are deployment names (None keeps
    them). ``create`` refuses a name that exists instead of updating it."""
    from serving.routing.table import AUTO

    check_text({"name": name, "members": members or [], "description": description})
    if name == AUTO:
        raise ValidationError({"name": [f"`{AUTO}` is the router's alias, not a group."]})
    group = ModelGroup.objects.select_for_update().filter(name=name).first()
    if group is not None and create:
        raise ValidationError({"name": [GROUP_EXISTS]})
    before = _group_state(group) if group else None
    group = group or ModelGroup(name=name)
    group.strategy = strategy
    group.description = description
    check_model_text(group)
    group.full_clean(validate_unique=False)
    _save_new_or_existing(group, GROUP_EXISTS)
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


@transaction.atomic
def model_group_delete(*, group: ModelGroup, actor=None) -> None:
    """Remove a group row (deployments whose ``model`` is its name still serve that name)."""
    group = ModelGroup.objects.select_for_update().get(pk=group.pk)
    audit(actor=actor, action="model_group.delete", obj=group, before=_group_state(group),
          after=None)  # fmt: skip
    group.delete()


def _validate_rule(rule: RoutingRule) -> None:
    from serving.routing.catalog import model_names

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
def routing_rule_set(*, name: str, create: bool = False, actor=None, **fields) -> RoutingRule:
    """Create or update the rule ``name`` (conditions left out keep their value). ``create``
    refuses a name that exists instead of updating it."""
    check_text({"name": name, **fields})
    for k in fields:
        if k not in (*RULE_FIELDS, "tier_id", "tenant_id") or k == "name":
            raise ValidationError({k: ["Not a routing rule field."]})
    rule = RoutingRule.objects.select_for_update().filter(name=name).first()
    if rule is not None and create:
        raise ValidationError({"name": [RULE_EXISTS]})
    before = snapshot(rule, RULE_FIELDS) if rule else None
    rule = rule or RoutingRule(name=name)
    for k, v in fields.items():
        setattr(rule, k, v)
    check_model_text(rule)
    rule.full_clean(validate_unique=False)
    _validate_rule(rule)
    _save_new_or_existing(rule, RULE_EXISTS)
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


# ---- the seed's routing policy ----------------------------------------------------------

# Prompts longer than this (estimated tokens) go to the long-context group (SEED.md).
LONG_CONTEXT_TOKENS = 30_000
# (group, strategy, what it is for, capability its members should have if any deployment has
# it); then the rules: (name, position, condition, group).
POLICY_GROUPS = (
    ("fast", ModelGroup.Strategy.WEIGHTED, "Simple prompts (seeded policy).", ""),
    ("smart", ModelGroup.Strategy.LOWEST_LATENCY, "Complex prompts (seeded policy).", ""),
    ("code", ModelGroup.Strategy.LOWEST_LATENCY, "Code prompts (seeded policy).", "code"),
    ("long-context", ModelGroup.Strategy.LEAST_CONNECTIONS,
     f"Prompts over {LONG_CONTEXT_TOKENS} tokens (seeded policy).", "long_context"),
)  # fmt: skip
POLICY_RULES = (
    ("long-context", 10, {"min_prompt_tokens": LONG_CONTEXT_TOKENS + 1}, "long-context"),
    ("code-tasks", 20, {"task_class": RoutingRule.TaskClass.CODE}, "code"),
    ("complex-tasks", 30, {"task_class": RoutingRule.TaskClass.COMPLEX}, "smart"),
    ("simple-tasks", 40, {"task_class": RoutingRule.TaskClass.SIMPLE}, "fast"),
)


def chat_deployments() -> list[Deployment]:
    """Enabled deployments that answer chat (every one but the embedding models')."""
    from serving.engine.embeddings import EMBEDDING_MODEL

    return list(Deployment.objects.filter(enabled=True).exclude(model=EMBEDDING_MODEL))


@transaction.atomic
def routing_policy_seed(*, actor=None) -> list[str]:
    """The policy a fresh install starts with, after SEED.md's router: ``auto`` (and any
    request of a tier that does not let callers choose) runs the task classifier; prompts over
    30k tokens go to ``long-context``, code to ``code``, complex to ``smart``, simple to
    ``fast``. Each group gets the chat deployments there are (those with the group's capability
    if any has it), so on a fresh ``make run`` everything goes to the local model.

    Only what is missing is created: groups and rules an operator changed or removed on
    purpose are left alone once they exist. Returns what it created."""
    deployments = chat_deployments()
    created: list[str] = []
    for name, strategy, description, capability in POLICY_GROUPS:
        if ModelGroup.objects.filter(name=name).exists():
            continue
        able = [d for d in deployments if capability and capability in d.capabilities]
        members = sorted(d.name for d in (able or deployments))
        model_group_set(name=name, strategy=strategy, members=members, description=description,
                        actor=actor)  # fmt: skip
        created.append(f"group {name}")
    for name, position, condition, target in POLICY_RULES:
        if RoutingRule.objects.filter(name=name).exists():
            continue
        routing_rule_set(name=name, position=position, target=target, create=True, actor=actor,
                         **condition)  # fmt: skip
        created.append(f"rule {name}")
    return created
