"""Domain errors of the tenants app; views map them to field errors or API problems."""

from __future__ import annotations

from django.core.exceptions import ValidationError


class TenantsError(Exception):
    """Base for refusals that are not field validation (e.g. a rule about other rows)."""

    code = "refused"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class TenantHasUsage(TenantsError):
    code = "tenant_has_usage"


class TierInUse(TenantsError):
    code = "tier_in_use"


__all__ = ["TenantsError", "TenantHasUsage", "TierInUse", "ValidationError"]
