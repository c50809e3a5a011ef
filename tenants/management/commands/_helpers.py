"""Shared bits of the operator commands: errors from services become CommandError."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from tenants.errors import TenantsError

T = TypeVar("T")


def run_service(fn: Callable[..., T], /, **kwargs) -> T:
    try:
        return fn(**kwargs)
    except ValidationError as exc:
        if hasattr(exc, "message_dict"):
            text = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
        else:
            text = " ".join(exc.messages)
        raise CommandError(text) from exc
    except TenantsError as exc:
        raise CommandError(exc.message) from exc
