"""Reads for the console and the API."""

from __future__ import annotations

from django.db.models import Count, Q, QuerySet

from tenants.models import ApiKey, AuditEvent, Budget, Tenant, Tier


def tenant_list(*, q: str = "", status: str = "", tier: str = "") -> QuerySet[Tenant]:
    qs = Tenant.objects.select_related("tier").annotate(
        active_keys=Count("api_keys", filter=Q(api_keys__revoked__isnull=True))
    )
    if q:
        qs = qs.filter(Q(name__icontains=q) | Q(slug__icontains=q) | Q(contact_email__icontains=q))
    if status:
        qs = qs.filter(status=status)
    if tier:
        qs = qs.filter(tier__name=tier)
    return qs.order_by("name")


def tier_list() -> QuerySet[Tier]:
    return Tier.objects.annotate(tenant_count=Count("tenants")).order_by("name")


def api_key_list(*, tenant: Tenant | None = None) -> QuerySet[ApiKey]:
    qs = ApiKey.objects.select_related("tenant")
    return qs.filter(tenant=tenant) if tenant is not None else qs


def budget_list(*, tenant: Tenant | None = None) -> QuerySet[Budget]:
    qs = Budget.objects.select_related("tenant")
    return qs.filter(tenant=tenant) if tenant is not None else qs


def audit_list(*, q: str = "", action: str = "", tenant: Tenant | None = None) -> QuerySet:
    qs = AuditEvent.objects.select_related("tenant")
    if q:
        qs = qs.filter(Q(object_repr__icontains=q) | Q(actor_repr__icontains=q))
    if action:
        qs = qs.filter(action__startswith=action)
    if tenant is not None:
        qs = qs.filter(tenant=tenant)
    return qs


def dashboard_figures() -> dict[str, int]:
    """Real counts from the database for the console's dashboard."""
    from django.utils import timezone

    now = timezone.now()
    tenants = Tenant.objects.aggregate(
        total=Count("id"), active=Count("id", filter=Q(status=Tenant.Status.ACTIVE))
    )
    keys = ApiKey.objects.aggregate(
        total=Count("id"),
        active=Count(
            "id", filter=Q(revoked__isnull=True) & (Q(expires__isnull=True) | Q(expires__gt=now))
        ),
    )
    return {
        "tenants_total": tenants["total"],
        "tenants_active": tenants["active"],
        "tenants_suspended": tenants["total"] - tenants["active"],
        "tiers": Tier.objects.count(),
        "keys_total": keys["total"],
        "keys_active": keys["active"],
        "budgets": Budget.objects.count(),
        "hard_budgets": Budget.objects.filter(hard=True).count(),
    }
