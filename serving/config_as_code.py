"""Config as code: the platform's tiers, deployments, model groups, routing rules and prices
as one YAML document (``manage.py export_config``), and applying such a document
(``manage.py apply_config FILE [--dry-run] [--prune]``).

Applying compares the file with the database and makes only the differences, through the same
services as the console and the REST API (so every change is validated and audited); a second
run of the same file changes nothing. Field names are the models'. Upstream API keys are never
exported: a deployment may name an environment variable (``api_key_env``) to read its key from
when the file is applied. Entries are matched by name (prices by model and deployment); a field
left out of an entry keeps its value; a section left out of the file is not touched.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import yaml
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from billing import services as billing_services
from billing.models import ModelPrice
from serving.models import Deployment, ModelGroup, RoutingRule
from serving.routing import deployments as deployment_services
from serving.routing import services as routing_services
from tenants import services as tenant_services
from tenants.errors import TenantsError
from tenants.models import Tenant, Tier

VERSION = 1
SECTIONS = ("tiers", "deployments", "model_groups", "routing_rules", "prices")
GROUP_FIELDS = ["name", "strategy", "description", "members"]
PRICE_RATES = [
    "input_micro_usd_per_mtok",
    "output_micro_usd_per_mtok",
    "cached_input_micro_usd_per_mtok",
]
PRICE_FIELDS = ["model", "deployment", *PRICE_RATES, "effective_from"]
HEADER = """\
# Switchyard configuration (manage.py export_config). Apply with:
#   manage.py apply_config FILE --dry-run   # show what would change
#   manage.py apply_config FILE             # change it (audited)
# Upstream API keys are never exported: give a deployment `api_key_env: NAME` to read its key
# from the environment variable NAME when the file is applied.
"""


class ConfigError(Exception):
    """The file cannot be applied; the message says where and why. Nothing was written."""


def printable(text: str, *, newlines: bool = True) -> str:
    """``text`` with control characters escaped, for a terminal: a name in a hostile file must
    not move the cursor, recolour the screen or (``newlines=False``) forge another line."""
    return "".join(
        ch if (ch == "\n" and newlines) or unicodedata.category(ch) not in ("Cc", "Cs")
        else ch.encode("unicode_escape", "backslashreplace").decode("ascii")
        for ch in text
    )  # fmt: skip


# ---- export ------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    return value


def export_config(at: dt.datetime | None = None) -> dict[str, Any]:
    """The current configuration as plain data (what :func:`dump_yaml` writes)."""
    at = at or timezone.now()
    tiers = [
        {f: _plain(getattr(t, f)) for f in tenant_services.TIER_FIELDS}
        for t in Tier.objects.order_by("name")
    ]
    deployments = [
        {f: _plain(getattr(d, f)) for f in deployment_services.FIELDS}
        for d in Deployment.objects.order_by("name")
    ]
    groups = [
        {
            "name": g.name,
            "strategy": g.strategy,
            "description": g.description,
            "members": sorted(m.name for m in g.members.all()),
        }
        for g in ModelGroup.objects.prefetch_related("members").order_by("name")
    ]
    rules = [
        _rule_state(r)
        for r in RoutingRule.objects.select_related("tier", "tenant").order_by("position", "id")
    ]
    prices = []
    for p in billing_services.price_rows_in_force(at):
        row = {f: getattr(p, f) for f in PRICE_FIELDS[:-1]}
        if p.effective_from > at:  # scheduled: keep its start; the one in force starts "now"
            row["effective_from"] = p.effective_from.isoformat()
        prices.append(row)
    return {
        "version": VERSION,
        "tiers": tiers,
        "deployments": deployments,
        "model_groups": groups,
        "routing_rules": rules,
        "prices": prices,
    }


def dump_yaml(config: Mapping[str, Any]) -> str:
    body = yaml.safe_dump(dict(config), sort_keys=False, allow_unicode=True, width=100)
    return HEADER + body


MAX_BYTES = 10 * 1024 * 1024


class _PlainLoader(yaml.SafeLoader):
    """SafeLoader without anchors and aliases: a config needs none, and a few nested aliases
    make a document that expands exponentially once walked (a "billion laughs")."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ConfigError(
                f"YAML aliases (*name) are not allowed, line {event.start_mark.line + 1}."
            )
        return super().compose_node(parent, index)


def load_yaml(text: str) -> dict[str, Any]:
    """Parse and check the outline of a config document (entries are checked when planned)."""
    if len(text) > MAX_BYTES:
        raise ConfigError(f"The file is over {MAX_BYTES // 1024 // 1024} MB.")
    try:
        data = yaml.load(text, Loader=_PlainLoader)  # noqa: S506 - a SafeLoader
    except RecursionError:
        raise ConfigError("The file nests too deeply to be a configuration.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"Not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("The file must be a mapping with sections: " + ", ".join(SECTIONS))
    unknown = sorted(str(k) for k in data if k not in (*SECTIONS, "version"))
    if unknown:
        raise ConfigError(
            f"Unknown section(s): {', '.join(unknown)}. Known: {', '.join(SECTIONS)}."
        )
    if data.get("version", VERSION) != VERSION:
        raise ConfigError(f"Unsupported version {data['version']!r}; this is version {VERSION}.")
    for section in SECTIONS:
        entries = data.get(section)
        if entries is None:
            continue
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ConfigError(f"`{section}` must be a list of mappings.")
    return data


# ---- plan --------------------------------------------------------------------------------


@dataclass
class Change:
    """One difference between the file and the database, and how to make it."""

    op: str  # "+" create, "~" update, "-" delete
    label: str  # "tier", "deployment", "model group", "routing rule", "price"
    name: str  # e.g. "pro"
    details: list[str] = field(default_factory=list)
    run: Callable[[], object] = field(default=lambda: None, repr=False)

    @property
    def what(self) -> str:
        return f"{self.label} {printable(self.name, newlines=False)}"

    def text(self) -> str:
        return "\n".join([f"{self.op} {self.what}", *(f"    {d}" for d in self.details)])


@dataclass(frozen=True)
class Secret:
    """An upstream key read from the environment: compared by value, shown by its variable."""

    var: str
    value: str = field(repr=False)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)


def _show(value: Any) -> str:
    if isinstance(value, Secret):
        return f"(from ${value.var})" if value.var else "(stored)"
    return json.dumps(_plain(value), ensure_ascii=False)


def _normalise(model, name: str, value: Any) -> Any:
    """The value as the model field holds it, so "120" and 120 compare equal; unparsable
    values are kept as given (the service then names the error)."""
    try:
        return model._meta.get_field(name).to_python(value)
    except (ValidationError, TypeError, ValueError, LookupError):
        return value


@dataclass(frozen=True)
class Section:
    """How one named section of the file maps onto its rows and services."""

    label: str  # "tier", "deployment", ...
    fields: list[str]  # keys an entry may have
    rows: Callable[[], dict[str, Any]]  # name -> row, now
    state: Callable[[Any, dict], dict]  # (row, wanted) -> the row's values of wanted's keys
    create: Callable[..., object]  # create(name, data)
    update: Callable[..., object]  # update(row, name, changed)
    delete: Callable[[Any], object]
    prepare: Callable[[str, dict], dict]  # (name, entry's fields) -> comparable values


def _plan_section(section: Section, entries: list[dict], prune: bool) -> list[Change]:
    changes: list[Change] = []
    existing = section.rows()
    seen: set[str] = set()
    for entry in entries:
        unknown = sorted(str(k) for k in entry if k not in section.fields)
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{section.label}: every entry needs a `name`.")
        what = f"{section.label} {printable(name, newlines=False)}"
        if unknown:
            raise ConfigError(f"{what}: unknown field(s) {', '.join(unknown)}.")
        if name in seen:
            raise ConfigError(f"{what} appears twice in the file.")
        seen.add(name)
        data = section.prepare(name, {k: v for k, v in entry.items() if k != "name"})
        row = existing.get(name)
        if row is None:
            details = [f"{k}: {_show(v)}" for k, v in data.items()]
            changes.append(
                Change("+", section.label, name, details, partial(section.create, name, data))
            )
            continue
        current = section.state(row, data)
        changed = {k: v for k, v in data.items() if current.get(k) != v}
        if changed:
            details = [f"{k}: {_show(current.get(k))} -> {_show(v)}" for k, v in changed.items()]
            changes.append(
                Change(
                    "~", section.label, name, details, partial(section.update, row, name, changed)
                )
            )
    if prune:
        for name, row in sorted(existing.items()):
            if name not in seen:
                run = partial(section.delete, row)
                changes.append(Change("-", section.label, name, [], run))
    return changes


# Tiers


def _tier_section() -> Section:
    return Section(
        label="tier",
        fields=tenant_services.TIER_FIELDS,
        rows=lambda: {t.name: t for t in Tier.objects.all()},
        state=lambda tier, wanted: {k: getattr(tier, k) for k in wanted},
        create=lambda name, data: tenant_services.tier_create(name=name, **data),
        update=lambda tier, name, changed: tenant_services.tier_update(tier=tier, **changed),
        delete=lambda tier: tenant_services.tier_delete(tier=tier),
        prepare=lambda name, data: {k: _normalise(Tier, k, v) for k, v in data.items()},
    )


# Deployments


def _deployment_section(environ: Mapping[str, str]) -> Section:
    def prepare(name: str, data: dict) -> dict:
        var = data.pop("api_key_env", None)
        out = {k: _normalise(Deployment, k, v) for k, v in data.items()}
        if var is not None:
            if not isinstance(var, str) or not var:
                raise ConfigError(f"deployment {name}: `api_key_env` must name a variable.")
            if var not in environ:
                raise ConfigError(
                    f"deployment {name}: the environment variable {var} (api_key_env) is not set."
                )
            out["api_key"] = Secret(var, environ[var])
        return out

    def state(dep: Deployment, wanted: dict) -> dict:
        current = {k: getattr(dep, k) for k in wanted if k != "api_key"}
        if "api_key" in wanted:
            matches = deployment_services.deployment_key_matches(dep, wanted["api_key"].value)
            current["api_key"] = wanted["api_key"] if matches else Secret("", "")
        return current

    def save(name: str, data: dict, *, create: bool) -> Deployment:
        data = dict(data)
        key = data.pop("api_key", None)
        return deployment_services.deployment_set(
            name=name, api_key=None if key is None else key.value, create=create, **data
        )

    return Section(
        label="deployment",
        fields=[*deployment_services.FIELDS, "api_key_env"],
        rows=lambda: {d.name: d for d in Deployment.objects.all()},
        state=state,
        create=lambda name, data: save(name, data, create=True),
        update=lambda dep, name, changed: save(name, changed, create=False),
        delete=lambda dep: deployment_services.deployment_delete(deployment=dep),
        prepare=prepare,
    )


# Model groups


def _group_state(group: ModelGroup) -> dict[str, Any]:
    return {
        "strategy": group.strategy,
        "description": group.description,
        "members": sorted(m.name for m in group.members.all()),
    }


def _group_section() -> Section:
    def prepare(name: str, data: dict) -> dict:
        if "members" in data:
            members = data["members"]
            if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
                raise ConfigError(f"model group {name}: `members` must be a list of names.")
            data["members"] = sorted(set(members))
        return data

    def save(group: ModelGroup | None, name: str, data: dict) -> ModelGroup:
        base = (
            _group_state(group)
            if group
            else {"strategy": ModelGroup.Strategy.WEIGHTED, "description": "", "members": None}
        )
        merged = base | data
        return routing_services.model_group_set(
            name=name,
            strategy=merged["strategy"],
            description=merged["description"],
            members=merged["members"],
            create=group is None,
        )

    return Section(
        label="model group",
        fields=GROUP_FIELDS,
        rows=lambda: {g.name: g for g in ModelGroup.objects.prefetch_related("members")},
        state=lambda group, wanted: _group_state(group),
        create=lambda name, data: save(None, name, data),
        update=save,
        delete=lambda group: routing_services.model_group_delete(group=group),
        prepare=prepare,
    )


# Routing rules


def _rule_state(rule: RoutingRule) -> dict[str, Any]:
    fields = ["name", *(f for f in routing_services.RULE_FIELDS if f != "name")]
    state = {f: _plain(getattr(rule, f)) for f in fields}
    state["tier"] = rule.tier.name if rule.tier_id else None
    state["tenant"] = rule.tenant.slug if rule.tenant_id else None
    return state


def _rule_fields(data: dict) -> dict:
    """The rule's fields as the service takes them (tier and tenant looked up when applied: a
    tier the same file creates exists by then)."""
    out = dict(data)
    tenant_services.check_text(
        {k: out.get(k) for k in ("tier", "tenant")}, names=("tier", "tenant")
    )
    if out.get("tier") is not None:
        out["tier"] = Tier.objects.filter(name=data["tier"]).first()
        if out["tier"] is None:
            raise ValidationError({"tier": [f"Unknown tier: {data['tier']}."]})
    if out.get("tenant") is not None:
        out["tenant"] = Tenant.objects.filter(slug=data["tenant"]).first()
        if out["tenant"] is None:
            raise ValidationError({"tenant": [f"Unknown tenant: {data['tenant']}."]})
    return out


def _rule_section() -> Section:
    def prepare(name: str, data: dict) -> dict:
        for k in ("tier", "tenant"):
            if data.get(k) is not None and not isinstance(data[k], str):
                raise ConfigError(f"routing rule {name}: `{k}` must be a name or null.")
        return {
            k: v if k in ("tier", "tenant") else _normalise(RoutingRule, k, v)
            for k, v in data.items()
        }

    return Section(
        label="routing rule",
        fields=routing_services.RULE_FIELDS,
        rows=lambda: {r.name: r for r in RoutingRule.objects.select_related("tier", "tenant")},
        state=lambda rule, wanted: _rule_state(rule),
        create=lambda name, data: routing_services.routing_rule_set(
            name=name, create=True, **_rule_fields(data)
        ),
        update=lambda rule, name, changed: routing_services.routing_rule_set(
            name=name, **_rule_fields(changed)
        ),
        delete=lambda rule: routing_services.routing_rule_delete(rule=rule),
        prepare=prepare,
    )


# Prices (history: a change is a new row from now, or from a given future instant)


def _when(value: Any, what: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        when = value if isinstance(value, dt.datetime) else parse_datetime(str(value))
    except ValueError:
        when = None
    if when is None:
        raise ConfigError(f"{what}: effective_from {value!r} is not a date and time.")
    if timezone.is_naive(when):
        raise ConfigError(f"{what}: effective_from needs a time zone (e.g. +00:00 or Z).")
    return when


def _rates(row: ModelPrice) -> dict[str, int | None]:
    return {k: getattr(row, k) for k in PRICE_RATES}


def _plan_prices(entries: list[dict], now: dt.datetime) -> list[Change]:
    changes: list[Change] = []
    seen: set[tuple] = set()
    for entry in entries:
        model, deployment = entry.get("model"), entry.get("deployment") or ""
        if not isinstance(model, str) or not model or not isinstance(deployment, str):
            raise ConfigError("price: every entry needs a `model` (and a `deployment` or none).")
        name = printable(model + (f" on {deployment}" if deployment else ""), newlines=False)
        try:
            tenant_services.check_text({"model": model, "deployment": deployment})
        except ValidationError as exc:
            raise ConfigError(f"price {name}: {_error_text(exc)}") from None
        unknown = sorted(str(k) for k in entry if k not in PRICE_FIELDS)
        missing = [k for k in PRICE_RATES[:2] if k not in entry]
        if unknown or missing:
            raise ConfigError(
                f"price {name}: "
                + "; ".join(
                    [f"unknown field(s) {', '.join(unknown)}"] * bool(unknown)
                    + [f"missing {', '.join(missing)}"] * bool(missing)
                )
                + "."
            )
        rates = {k: entry.get(k) for k in PRICE_RATES}
        when = _when(entry.get("effective_from"), f"price {name}")
        if when is not None:
            name += f" from {when.isoformat()}"
        if (model, deployment, when) in seen:
            raise ConfigError(f"price {name} appears twice in the file.")
        seen.add((model, deployment, when))
        rows = ModelPrice.objects.filter(model=model, deployment=deployment)
        current: dict = {}
        if when is not None:
            row = rows.filter(effective_from=when).first()
            if row is not None and _rates(row) == rates:
                continue
            if row is not None:
                raise ConfigError(
                    f"price {name}: a different price already starts then; prices are history "
                    "and never edited: schedule a new one."
                )
            if when <= now:
                raise ConfigError(
                    f"price {name}: effective_from is in the past; a price cannot be backdated "
                    "(usage already metered would disagree). Leave it out to start now."
                )
        else:
            row = rows.filter(effective_from__lte=now).order_by("-effective_from").first()
            if row is not None and _rates(row) == rates:
                continue
            current = _rates(row) if row is not None else {}
        details = [
            f"{k}: {_show(current[k])} -> {_show(v)}" if current else f"{k}: {_show(v)}"
            for k, v in rates.items()
            if not current or current[k] != v
        ]
        run = partial(billing_services.price_set, model=model, deployment=deployment,
                      effective_from=when, **rates)  # fmt: skip
        changes.append(Change("~" if current else "+", "price", name, details, run))
    return changes


def plan(
    config: Mapping[str, Any],
    *,
    prune: bool = False,
    environ: Mapping[str, str] | None = None,
    now: dt.datetime | None = None,
) -> list[Change]:
    """Every change that applying ``config`` would make, in the order they are made:
    tiers, deployments, groups, rules, prices; deletions (``prune``) last, dependants first."""
    environ = os.environ if environ is None else environ
    sections = {
        "tiers": _tier_section(),
        "deployments": _deployment_section(environ),
        "model_groups": _group_section(),
        "routing_rules": _rule_section(),
    }
    changes: list[Change] = []
    for key, section in sections.items():
        if config.get(key) is not None:
            changes += _plan_section(section, config[key], prune)
    if config.get("prices") is not None:
        changes += _plan_prices(config["prices"], now or timezone.now())
    order = [s.label for s in reversed(sections.values())]
    removals = sorted((c for c in changes if c.op == "-"), key=lambda c: order.index(c.label))
    return [c for c in changes if c.op != "-"] + removals


def _error_text(exc: ValidationError | TenantsError) -> str:
    if isinstance(exc, TenantsError):
        return exc.message
    if hasattr(exc, "message_dict"):
        return "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
    return " ".join(exc.messages)


def apply(
    config: Mapping[str, Any],
    *,
    dry_run: bool = False,
    prune: bool = False,
    environ: Mapping[str, str] | None = None,
) -> list[Change]:
    """Make the changes of :func:`plan` in one transaction (all or nothing). A dry run makes
    them too, so the services check every value, then rolls everything back."""
    try:
        return _apply(config, dry_run=dry_run, prune=prune, environ=environ)
    except RecursionError:
        raise ConfigError("The file nests too deeply to be a configuration.") from None


def _apply(
    config: Mapping[str, Any],
    *,
    dry_run: bool,
    prune: bool,
    environ: Mapping[str, str] | None,
) -> list[Change]:
    with transaction.atomic():
        changes = plan(config, prune=prune, environ=environ)
        for change in changes:
            try:
                change.run()
            except (ValidationError, TenantsError) as exc:
                raise ConfigError(f"{change.op} {change.what}: {_error_text(exc)}") from exc
        if dry_run:
            transaction.set_rollback(True)
    if not dry_run and changes:
        deployment_services.clear_cache()
    return changes
