from tenants.roles import can_edit, role_of


def operator(request) -> dict:
    user = getattr(request, "user", None)
    role = role_of(user)
    return {"operator_role": role, "can_edit": can_edit(user)}
