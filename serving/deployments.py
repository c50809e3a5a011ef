"""Deployment writes (audited, upstream keys encrypted) and the in-process deployment table."""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from serving import secrets
from serving.models import Deployment
from tenants.services import audit, snapshot

FIELDS = [
    "name",
    "model",
    "upstream_model",
    "kind",
    "base_url",
    "weight",
    "max_concurrency",
    "context_window",
    "enabled",
    "timeout_seconds",
    "capabilities",
    "quality",
    "health_check",
]
CACHE_SECONDS = settings.SWITCHYARD_TABLE_CACHE_SECONDS


@transaction.atomic
def deployment_set(*, name: str, api_key: str | None = None, actor=None, **fields) -> Deployment:
    """Create or update a deployment by name. ``api_key`` (the upstream's) is stored encrypted
    and never shown again; None keeps the stored one, "" removes it."""
    dep = Deployment.objects.select_for_update().filter(name=name).first()
    before = snapshot(dep, FIELDS) if dep else None
    dep = dep or Deployment(name=name)
    for k, v in fields.items():
        setattr(dep, k, v)
    if api_key is not None:
        dep.api_key_encrypted = secrets.encrypt(api_key)
    dep.full_clean()
    dep.save()
    after = snapshot(dep, FIELDS) | {"has_api_key": dep.has_api_key}
    if before is None or before != snapshot(dep, FIELDS) or api_key is not None:
        audit(
            actor=actor,
            action="deployment.create" if before is None else "deployment.update",
            obj=dep,
            before=before,
            after=after,
        )
    return dep


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


_table: tuple[float, dict[str, list[Target]]] | None = None


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
            )
        )
    return table


def deployment_table() -> dict[str, list[Target]]:
    """Enabled deployments by public model name, refreshed every ``CACHE_SECONDS``."""
    global _table
    now = time.monotonic()
    if _table is None or now - _table[0] > CACHE_SECONDS:
        _table = (now, load_deployment_table())
    return _table[1]


def deployment_table_is_fresh() -> bool:
    return _table is not None and time.monotonic() - _table[0] <= CACHE_SECONDS


def clear_cache() -> None:
    global _table
    _table = None
