"""Deployment writes (audited, upstream keys encrypted) and the in-process deployment table."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from serving import secrets
from serving.models import Deployment
from switchyard.ttl_cache import TtlCache
from tenants.services import audit, check_model_text, check_text, snapshot

# Every editable column (the encrypted key is not editable): audit, API and config as code
# follow new deployment fields without a list to keep in step.
FIELDS = [
    f.name
    for f in Deployment._meta.concrete_fields
    if f.editable and f.name not in ("id", "created", "updated")
]
CACHE_SECONDS = settings.SWITCHYARD_TABLE_CACHE_SECONDS


EXISTS = "A deployment with this name already exists."


@transaction.atomic
def deployment_set(
    *, name: str, api_key: str | None = None, create: bool = False, actor=None, **fields
) -> Deployment:
    """Create or update a deployment by name. ``api_key`` (the upstream's) is stored encrypted
    and never shown again; None keeps the stored one, "" removes it. ``create`` refuses a name
    that exists (the API's POST) instead of updating it."""
    check_text({"name": name, "api_key": api_key})
    for k in fields:
        if k not in FIELDS or k == "name":
            raise ValidationError({k: ["Not a deployment field."]})
    dep = Deployment.objects.select_for_update().filter(name=name).first()
    if dep is not None and create:
        raise ValidationError({"name": [EXISTS]})
    before = snapshot(dep, FIELDS) if dep else None
    had_key = dep.api_key_encrypted if dep else ""
    dep = dep or Deployment(name=name)
    for k, v in fields.items():
        setattr(dep, k, v)
    key_changed = False
    if api_key is not None and api_key != _stored_key(had_key):
        dep.api_key_encrypted = secrets.encrypt(api_key) if api_key else ""
        key_changed = True
    check_model_text(dep)
    dep.full_clean(validate_unique=False)
    try:
        with transaction.atomic():
            dep.save()
    except IntegrityError as exc:  # a concurrent create of the same name
        raise ValidationError({"name": [EXISTS]}) from exc
    after = snapshot(dep, FIELDS) | {"has_api_key": dep.has_api_key}
    if before is None or before != snapshot(dep, FIELDS) or key_changed:
        audit(
            actor=actor,
            action="deployment.create" if before is None else "deployment.update",
            obj=dep,
            before=None if before is None else before | {"has_api_key": bool(had_key)},
            after=after,
        )
    return dep


def _stored_key(encrypted: str) -> str | None:
    """The stored upstream key in clear ("" for none, None when it cannot be read)."""
    try:
        return secrets.decrypt(encrypted)
    except ValueError:
        return None


def deployment_key_matches(dep: Deployment, api_key: str) -> bool:
    """Whether ``api_key`` is the key stored for ``dep`` (config as code compares, never
    shows)."""
    return _stored_key(dep.api_key_encrypted) == api_key


@transaction.atomic
def deployment_delete(*, deployment: Deployment, actor=None) -> None:
    """Remove a deployment (its group memberships go with it; usage keeps its name)."""
    dep = Deployment.objects.select_for_update().get(pk=deployment.pk)
    before = snapshot(dep, FIELDS) | {"has_api_key": dep.has_api_key}
    audit(actor=actor, action="deployment.delete", obj=dep, before=before, after=None)
    dep.delete()


@dataclass(frozen=True)
class Target:
    """What the gateway needs of a deployment to call it (no ORM object on the hot path)."""

    name: str
    model: str
    upstream_model: str
    kind: str
    base_url: str
    api_key: str
    weight: int
    max_concurrency: int
    context_window: int
    timeout_seconds: float
    capabilities: tuple[str, ...] = ()
    quality: float = 0.8
    health_check: str = "health"
    api_version: str = ""


_table: TtlCache[str, dict[str, list[Target]]] = TtlCache(CACHE_SECONDS)


def load_deployment_table() -> dict[str, list[Target]]:
    """Enabled deployments by public model name, read from the database now."""
    table: dict[str, list[Target]] = {}
    for d in Deployment.objects.filter(enabled=True).order_by("name"):
        try:
            key = secrets.decrypt(d.api_key_encrypted)
        except ValueError:
            continue  # unreadable secret: the deployment cannot be called
        table.setdefault(d.model, []).append(
            Target(
                name=d.name,
                model=d.model,
                upstream_model=d.target_model,
                kind=d.kind,
                base_url=d.base_url.rstrip("/"),
                api_key=key,
                weight=d.weight,
                max_concurrency=d.max_concurrency,
                context_window=d.context_window,
                timeout_seconds=d.timeout_seconds,
                capabilities=tuple(d.capabilities),
                quality=d.quality,
                health_check=d.health_check,
                api_version=d.api_version,
            )
        )
    return table


def deployment_table() -> dict[str, list[Target]]:
    """Enabled deployments by public model name, refreshed every ``CACHE_SECONDS``."""
    return _table.get_or_load("deployments", load_deployment_table)


def deployment_table_is_fresh() -> bool:
    return _table.get("deployments") is not None


def clear_cache() -> None:
    _table.clear()
