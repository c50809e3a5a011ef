"""Who may see and who may change: operators see the console, admins change things."""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.shortcuts import render

from tenants.roles import can_edit, is_operator


def _refuse(request, reason: str):
    return render(request, "console/403.html", {"reason": reason}, status=403)


def operator_required(view):
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not is_operator(request.user):
            return _refuse(request, "Your account has no operator role.")
        return view(request, *args, **kwargs)

    return wrapped


def admin_required(view):
    """Operators only; and any change (a POST) needs the admin role."""

    @wraps(view)
    @operator_required
    def wrapped(request, *args, **kwargs):
        if not can_edit(request.user):
            return _refuse(request, "Viewers can look at everything but change nothing.")
        return view(request, *args, **kwargs)

    return wrapped
