"""Operator roles on Django auth: admins change things, viewers only look.

A superuser is an admin. Roles are Django groups, so the admin site can manage them too.
"""

from __future__ import annotations

from enum import StrEnum

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group


class Role(StrEnum):
    ADMIN = "admin"
    VIEWER = "viewer"


GROUP_NAMES = {Role.ADMIN: "operator-admin", Role.VIEWER: "operator-viewer"}


def role_of(user: AbstractBaseUser | AnonymousUser | None) -> Role | None:
    """The operator role of ``user``, or None when it is no operator at all."""
    if user is None or not user.is_authenticated or not user.is_active:
        return None
    if user.is_superuser:
        return Role.ADMIN
    names = set(user.groups.values_list("name", flat=True))
    if GROUP_NAMES[Role.ADMIN] in names:
        return Role.ADMIN
    if GROUP_NAMES[Role.VIEWER] in names:
        return Role.VIEWER
    return None


def is_operator(user) -> bool:
    return role_of(user) is not None


def can_edit(user) -> bool:
    return role_of(user) == Role.ADMIN


def group_for(role: Role) -> Group:
    group, _ = Group.objects.get_or_create(name=GROUP_NAMES[role])
    return group
