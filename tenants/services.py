"""Every write to tenants, tiers, keys and budgets, each one atomic with its audit row.

The console, the management API and the management commands all call these functions, so a
rule (validation, audit, refusal) lives in one place. Functions are keyword-only and named
``<entity>_<action>``; they raise ``django.core.exceptions.ValidationError`` (field errors)
or ``tenants.errors.TenantsError`` (a refusal with a reason).
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import IntegrityError, models, transaction
from django.db.models import ProtectedError
from django.utils import timezone

from tenants import keys
from tenants.errors import TenantHasUsage, TierInUse
from tenants.models import ApiKey, AuditEvent, Budget, Tenant, Tier
from tenants.roles import GROUP_NAMES, Role, group_for

TIER_FIELDS = [
    "name",
    "description",
    "requests_per_minute",
    "tokens_per_minute",
    "tokens_per_day",
    "max_concurrent_requests",
    "allowed_models",
    "default_model",
    "fairness_weight",
    "semantic_cache_threshold",
    "semantic_cache_ttl_seconds",
    "exact_cache_enabled",
    "semantic_cache_enabled",
    "semantic_cache_sampled",
    "cache_hit_price_percent",
    "cache_max_entries",
    "allow_model_override",
    "pii_redaction",
    "blocklist",
    "log_bodies",
    "max_output_tokens",
    "quality_floor",
    "request_budget_micro_usd",
    "pass_unknown_params",
]
TENANT_FIELDS = ["name", "slug", "tier", "status", "contact_email", "cache_shared_pool"]
KEY_FIELDS = ["name", "prefix", "expires", "revoked"]
BUDGET_FIELDS = ["period", "limit_micro_usd", "hard", "alert_thresholds"]


# Lists the public model names a tier may allow: serving knows them (its deployments, groups
# and the ``auto`` alias) and registers its lister in ServingConfig.ready().
_model_names: Callable[[], list[str]] | None = None


def register_model_names(lister: Callable[[], list[str]]) -> None:
    """Use ``lister`` for the model names a tier may allow (called by serving at start)."""
    global _model_names
    _model_names = lister


def known_models() -> list[str]:
    """Public model names a tier may allow."""
    if _model_names is None:
        raise ImproperlyConfigured("No model-name lister registered (serving registers one).")
    return _model_names()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "pk"):
        return str(value)
    return value


def snapshot(obj, fields: list[str]) -> dict[str, Any]:
    """A JSON-safe picture of ``fields`` of ``obj`` for the audit log (never secrets)."""
    return {f: _jsonable(getattr(obj, f)) for f in fields}


def audit(
    *, actor, action: str, obj, before: dict | None, after: dict | None, tenant=None
) -> AuditEvent:
    return AuditEvent.objects.create(
        actor=actor if actor is not None and actor.is_authenticated else None,
        actor_repr=actor.get_username()
        if actor is not None and actor.is_authenticated
        else "system",
        action=action,
        object_type=type(obj)._meta.model_name,
        object_id=str(obj.pk),
        object_repr=str(obj)[:255],
        tenant=tenant,
        before=before,
        after=after,
    )


def _validate_models(tier: Tier) -> None:
    known = set(known_models())
    errors: dict[str, list[str]] = {}
    unknown = [m for m in tier.allowed_models if m not in known]
    if unknown:
        errors["allowed_models"] = [
            f"Unknown model(s): {', '.join(unknown)}. Known: {', '.join(sorted(known))}."
        ]
    if tier.default_model:
        if tier.default_model not in known:
            errors["default_model"] = [f"Unknown model: {tier.default_model}."]
        elif tier.allowed_models and tier.default_model not in tier.allowed_models:
            errors["default_model"] = ["The default model must be one of the allowed models."]
    if errors:
        raise ValidationError(errors)


# Fields that name things: shown in lists, URLs, headers and logs, so no control characters.
NAME_FIELDS = ("name", "slug", "model", "upstream_model", "target", "deployment")


def _bad_text(value: str, *, is_name: bool) -> str | None:
    """Why ``value`` cannot be stored (None when it can). PostgreSQL refuses NUL and UTF-8
    refuses unpaired surrogates anywhere; names refuse every control character too."""
    for ch in value:
        category = unicodedata.category(ch)
        if ch == "\x00" or category == "Cs":
            return "Contains a NUL or an unpaired surrogate character."
        if is_name and category == "Cc":
            return "Control characters (newlines, tabs, NUL, ...) are not allowed in names."
    return None


def check_text(values: dict[str, Any], *, names: Iterable[str] = NAME_FIELDS) -> None:
    """Raise a ValidationError for each text value (or list of texts) in ``values`` that the
    database would refuse, and for each name among them with a control character."""
    names = set(names)
    errors: dict[str, list[str]] = {}
    for field, value in values.items():
        texts = value if isinstance(value, list | tuple) else [value]
        for text in texts:
            why = _bad_text(text, is_name=field in names) if isinstance(text, str) else None
            if why:
                errors[field] = [why]
                break
    if errors:
        raise ValidationError(errors)


def check_model_text(obj, *, names: Iterable[str] = NAME_FIELDS) -> None:
    """:func:`check_text` over every concrete field of a model instance."""
    check_text({f.name: getattr(obj, f.attname) for f in obj._meta.concrete_fields}, names=names)


def _save(obj, *, unique_field_errors: dict[str, str] | None = None) -> None:
    """full_clean + save, turning a race on a unique column into a field error."""
    check_model_text(obj)
    obj.full_clean()
    try:
        with transaction.atomic():
            obj.save()
    except IntegrityError as exc:
        for constraint, (field, message) in (unique_field_errors or {}).items():
            if constraint in str(exc):
                raise ValidationError({field: [message]}) from exc
        raise


# ---- tiers -------------------------------------------------------------------------------


@transaction.atomic
def tier_create(*, actor=None, **fields: Any) -> Tier:
    tier = Tier(**fields)
    tier.allowed_models = list(dict.fromkeys(tier.allowed_models or []))
    _validate_models(tier)
    _save(tier, unique_field_errors={"name": ("name", "A tier with this name already exists.")})
    audit(
        actor=actor, action="tier.create", obj=tier, before=None, after=snapshot(tier, TIER_FIELDS)
    )
    return tier


@transaction.atomic
def tier_update(*, tier: Tier, actor=None, **fields: Any) -> Tier:
    tier = Tier.objects.select_for_update().get(pk=tier.pk)
    before = snapshot(tier, TIER_FIELDS)
    for name, value in fields.items():
        if name not in TIER_FIELDS:
            raise ValidationError({name: ["Not a tier field."]})
        setattr(tier, name, value)
    tier.allowed_models = list(dict.fromkeys(tier.allowed_models or []))
    _validate_models(tier)
    _save(tier, unique_field_errors={"name": ("name", "A tier with this name already exists.")})
    after = snapshot(tier, TIER_FIELDS)
    if after != before:
        audit(actor=actor, action="tier.update", obj=tier, before=before, after=after)
    return tier


@transaction.atomic
def tier_delete(*, tier: Tier, actor=None) -> None:
    count = tier.tenants.count()
    if count:
        raise TierInUse(f"Tier {tier.name} is used by {count} tenant(s); move them first.")
    audit(
        actor=actor, action="tier.delete", obj=tier, before=snapshot(tier, TIER_FIELDS), after=None
    )
    tier.delete()


# ---- tenants -----------------------------------------------------------------------------


@transaction.atomic
def tenant_create(
    *,
    name: str,
    slug: str,
    tier: Tier,
    contact_email: str = "",
    cache_shared_pool: bool = False,
    actor=None,
) -> Tenant:
    tenant = Tenant(
        name=name,
        slug=slug,
        tier=tier,
        contact_email=contact_email,
        cache_shared_pool=cache_shared_pool,
    )
    _save(tenant, unique_field_errors={"slug": ("slug", "A tenant with this slug already exists.")})
    audit(
        actor=actor,
        action="tenant.create",
        obj=tenant,
        before=None,
        after=snapshot(tenant, TENANT_FIELDS),
        tenant=tenant,
    )
    return tenant


@transaction.atomic
def tenant_update(*, tenant: Tenant, actor=None, **fields: Any) -> Tenant:
    tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
    before = snapshot(tenant, TENANT_FIELDS)
    for name, value in fields.items():
        if name not in ("name", "slug", "tier", "contact_email", "cache_shared_pool"):
            raise ValidationError({name: ["This field cannot be changed here."]})
        setattr(tenant, name, value)
    _save(tenant, unique_field_errors={"slug": ("slug", "A tenant with this slug already exists.")})
    after = snapshot(tenant, TENANT_FIELDS)
    if after != before:
        audit(
            actor=actor,
            action="tenant.update",
            obj=tenant,
            before=before,
            after=after,
            tenant=tenant,
        )
    return tenant


def _tenant_set_status(*, tenant: Tenant, status: str, action: str, actor) -> Tenant:
    with transaction.atomic():
        tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
        if tenant.status == status:
            return tenant
        before = {"status": tenant.status}
        tenant.status = status
        tenant.save(update_fields=["status", "updated"])
        audit(
            actor=actor,
            action=action,
            obj=tenant,
            before=before,
            after={"status": status},
            tenant=tenant,
        )
    return tenant


def tenant_suspend(*, tenant: Tenant, actor=None) -> Tenant:
    """Stop the tenant's keys from authenticating; all data is kept."""
    return _tenant_set_status(
        tenant=tenant, status=Tenant.Status.SUSPENDED, action="tenant.suspend", actor=actor
    )


def tenant_activate(*, tenant: Tenant, actor=None) -> Tenant:
    return _tenant_set_status(
        tenant=tenant, status=Tenant.Status.ACTIVE, action="tenant.activate", actor=actor
    )


def _has_protected_records(tenant: Tenant) -> bool:
    """Whether rows point at ``tenant`` through a foreign key with ``on_delete=PROTECT`` (its
    usage records). One EXISTS query each: Django's delete would load every protected row
    before refusing."""
    return any(
        rel.related_model._base_manager.filter(**{rel.field.name: tenant}).exists()
        for rel in Tenant._meta.related_objects
        if rel.on_delete is models.PROTECT
    )


@transaction.atomic
def tenant_delete(*, tenant: Tenant, actor=None) -> None:
    """Delete a tenant without usage. One with usage (rows that protect it: billing's usage
    records) is refused: suspend it instead, so its records and invoices stay whole."""
    tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
    refused = TenantHasUsage(
        f"Tenant {tenant.slug} has usage records and cannot be deleted; suspend it instead."
    )
    if _has_protected_records(tenant):
        raise refused
    audit(
        actor=actor,
        action="tenant.delete",
        obj=tenant,
        before=snapshot(tenant, TENANT_FIELDS),
        after=None,
    )
    try:
        tenant.delete()
    except ProtectedError as exc:
        raise refused from exc


# ---- API keys ----------------------------------------------------------------------------


@transaction.atomic
def api_key_create(
    *, tenant: Tenant, name: str, expires: dt.datetime | None = None, actor=None
) -> tuple[ApiKey, str]:
    """A new key for ``tenant``: returns the row and the key itself, which is never stored."""
    if expires is not None and expires <= timezone.now():
        raise ValidationError({"expires": ["The expiry must be in the future."]})
    raw, prefix = keys.generate_key()
    key = ApiKey(
        tenant=tenant,
        name=name,
        prefix=prefix,
        key_hash=keys.hash_key(raw),
        expires=expires,
        created_by=actor if actor is not None and actor.is_authenticated else None,
    )
    check_model_text(key)
    key.full_clean()
    key.save()
    audit(
        actor=actor,
        action="api_key.create",
        obj=key,
        before=None,
        after=snapshot(key, KEY_FIELDS),
        tenant=tenant,
    )
    return key, raw


@transaction.atomic
def api_key_revoke(*, key: ApiKey, actor=None) -> ApiKey:
    key = ApiKey.objects.select_for_update().get(pk=key.pk)
    if key.revoked is not None:
        return key
    before = snapshot(key, KEY_FIELDS)
    key.revoked = timezone.now()
    key.save(update_fields=["revoked"])
    audit(
        actor=actor,
        action="api_key.revoke",
        obj=key,
        before=before,
        after=snapshot(key, KEY_FIELDS),
        tenant=key.tenant,
    )
    from tenants.auth import invalidate_key

    transaction.on_commit(lambda: invalidate_key(key.key_hash))
    return key


# ---- budgets -----------------------------------------------------------------------------


def usd_to_micro(usd: Decimal | str | int) -> int:
    """Dollars (exact decimal) to integer micro-dollars; refuses fractions of a micro-dollar."""
    value = Decimal(str(usd)) * 1_000_000
    if value != value.to_integral_value():
        raise ValidationError({"limit": ["At most six decimal places."]})
    return int(value)


@transaction.atomic
def budget_set(
    *,
    tenant: Tenant,
    period: str,
    limit_micro_usd: int,
    hard: bool = False,
    alert_thresholds: list[int] | None = None,
    actor=None,
) -> Budget:
    """Create or update the tenant's budget for ``period`` (one per period)."""
    if limit_micro_usd is None or int(limit_micro_usd) < 0:
        raise ValidationError({"limit_micro_usd": ["The limit cannot be negative."]})
    thresholds = sorted(set(alert_thresholds if alert_thresholds is not None else [50, 80, 100]))
    budget = Budget.objects.select_for_update().filter(tenant=tenant, period=period).first()
    before = snapshot(budget, BUDGET_FIELDS) if budget else None
    if budget is None:
        budget = Budget(tenant=tenant, period=period)
    budget.limit_micro_usd = int(limit_micro_usd)
    budget.hard = hard
    budget.alert_thresholds = thresholds
    _save(
        budget,
        unique_field_errors={
            "budget_one_per_period": ("period", "This period already has a budget.")
        },
    )
    after = snapshot(budget, BUDGET_FIELDS)
    if after != before:
        audit(
            actor=actor,
            action="budget.create" if before is None else "budget.update",
            obj=budget,
            before=before,
            after=after,
            tenant=tenant,
        )
    return budget


@transaction.atomic
def budget_delete(*, budget: Budget, actor=None) -> None:
    audit(
        actor=actor,
        action="budget.delete",
        obj=budget,
        before=snapshot(budget, BUDGET_FIELDS),
        after=None,
        tenant=budget.tenant,
    )
    budget.delete()


# ---- operators ---------------------------------------------------------------------------


@transaction.atomic
def operator_set(
    *, username: str, role: Role, password: str | None = None, email: str = "", actor=None
):
    """Create or update an operator account with exactly one role."""
    User = get_user_model()
    user, created = User.objects.get_or_create(username=username, defaults={"email": email})
    before = None if created else {"role": _role_name(user)}
    if password:
        user.set_password(password)
    user.is_staff = role == Role.ADMIN  # admins may use the Django admin site
    user.save()
    user.groups.remove(*[group_for(r) for r in Role])
    user.groups.add(group_for(role))
    after = {"role": str(role)}
    if before != after:
        audit(actor=actor, action="operator.set", obj=user, before=before, after=after)
    return user


def _role_name(user) -> str | None:
    names = set(user.groups.values_list("name", flat=True))
    for role, group in GROUP_NAMES.items():
        if group in names:
            return str(role)
    return None
