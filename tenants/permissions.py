"""DRF permission: operators read, operator admins write (same rule as the console)."""

from rest_framework.permissions import SAFE_METHODS, BasePermission

from tenants.roles import can_edit, is_operator


class IsOperator(BasePermission):
    message = "Operator role required; viewers may only read."

    def has_permission(self, request, view) -> bool:
        if request.method in SAFE_METHODS:
            return is_operator(request.user)
        return can_edit(request.user)
