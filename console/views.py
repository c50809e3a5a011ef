"""The operator console: each view parses input with a form and calls one service."""

from __future__ import annotations

import json

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from console.decorators import admin_required, operator_required
from console.forms import ApiKeyForm, BudgetForm, TenantForm, TierForm, apply_errors
from console.params import query_param
from serving.live_usage import limits_and_usage
from serving.routing.catalog import model_names
from serving.selectors import request_log, traffic_figures
from tenants import selectors, services
from tenants.errors import TenantsError
from tenants.models import ApiKey, AuditEvent, Budget, Tenant, Tier


@operator_required
def dashboard(request):
    return render(
        request,
        "console/dashboard.html",
        {"figures": selectors.dashboard_figures(), "traffic": traffic_figures(hours=24)},
    )


# ---- tenants -----------------------------------------------------------------------------


@operator_required
def tenant_list(request):
    q = query_param(request, "q")
    status = query_param(request, "status")
    tier = query_param(request, "tier")
    tenants = selectors.tenant_list(q=q, status=status, tier=tier)
    ctx = {
        "tenants": tenants,
        "q": q,
        "status": status,
        "tier": tier,
        "tiers": Tier.objects.order_by("name"),
        "statuses": Tenant.Status.choices,
    }
    # Live search swaps the rows only; a history restore (back button) wants the whole page.
    if request.htmx and not request.htmx.history_restore_request:
        return render(request, "console/_tenant_rows.html", ctx)
    return render(request, "console/tenant_list.html", ctx)


@admin_required
def tenant_create(request):
    form = TenantForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            tenant = services.tenant_create(actor=request.user, **form.cleaned_data)
        except ValidationError as exc:
            apply_errors(form, exc)
        else:
            messages.success(request, f"Tenant {tenant.slug} created.")
            return redirect("console:tenant-detail", slug=tenant.slug)
    return render(request, "console/tenant_form.html", {"form": form, "creating": True})


def _tenant_page(request, tenant: Tenant, *, key_form=None, budget_form=None, status=200):
    """The tenant page; a refused key or budget form comes back on it with its errors."""
    return render(
        request,
        "console/tenant_detail.html",
        {
            "tenant": tenant,
            "keys": selectors.api_key_list(tenant=tenant),
            "budgets": selectors.budget_list(tenant=tenant),
            "key_form": key_form or ApiKeyForm(),
            "budget_form": budget_form or BudgetForm(),
            "events": selectors.audit_list(tenant=tenant)[:10],
            "usage": limits_and_usage(tenant),
        },
        status=status,
    )


@operator_required
def tenant_detail(request, slug: str):
    tenant = get_object_or_404(Tenant.objects.select_related("tier"), slug=slug)
    return _tenant_page(request, tenant)


@admin_required
def tenant_edit(request, slug: str):
    tenant = get_object_or_404(Tenant, slug=slug)
    initial = {
        "name": tenant.name,
        "slug": tenant.slug,
        "tier": tenant.tier,
        "contact_email": tenant.contact_email,
    }
    form = TenantForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            tenant = services.tenant_update(tenant=tenant, actor=request.user, **form.cleaned_data)
        except ValidationError as exc:
            apply_errors(form, exc)
        else:
            messages.success(request, f"Tenant {tenant.slug} saved.")
            return redirect("console:tenant-detail", slug=tenant.slug)
    return render(request, "console/tenant_form.html", {"form": form, "tenant": tenant})


@require_POST
@admin_required
def tenant_status(request, slug: str, action: str):
    tenant = get_object_or_404(Tenant, slug=slug)
    if action == "suspend":
        services.tenant_suspend(tenant=tenant, actor=request.user)
        messages.success(request, f"Tenant {slug} suspended: its keys stop working; data kept.")
    else:
        services.tenant_activate(tenant=tenant, actor=request.user)
        messages.success(request, f"Tenant {slug} is active again.")
    return redirect("console:tenant-detail", slug=slug)


@require_POST
@admin_required
def tenant_delete(request, slug: str):
    tenant = get_object_or_404(Tenant, slug=slug)
    try:
        services.tenant_delete(tenant=tenant, actor=request.user)
    except TenantsError as exc:
        messages.error(request, exc.message)
        return redirect("console:tenant-detail", slug=slug)
    messages.success(request, f"Tenant {slug} deleted.")
    return redirect("console:tenant-list")


# ---- API keys ----------------------------------------------------------------------------


@require_POST
@admin_required
def key_create(request, slug: str):
    tenant = get_object_or_404(Tenant, slug=slug)
    form = ApiKeyForm(request.POST)
    if form.is_valid():
        try:
            key, raw = services.api_key_create(
                tenant=tenant, actor=request.user, **form.cleaned_data
            )
        except ValidationError as exc:
            apply_errors(form, exc)
        else:
            # Rendered straight away (no redirect, nothing stored): this is the only time the
            # key exists outside its owner's hands.
            resp = render(
                request, "console/key_created.html", {"tenant": tenant, "key": key, "raw_key": raw}
            )
            resp["Cache-Control"] = "no-store"
            return resp
    return _tenant_page(request, tenant, key_form=form, status=400)


@require_POST
@admin_required
def key_revoke(request, slug: str, key_id: int):
    key = get_object_or_404(ApiKey, pk=key_id, tenant__slug=slug)
    services.api_key_revoke(key=key, actor=request.user)
    messages.success(request, f"Key {key.display} revoked.")
    return redirect("console:tenant-detail", slug=slug)


# ---- budgets -----------------------------------------------------------------------------


@require_POST
@admin_required
def budget_set(request, slug: str):
    tenant = get_object_or_404(Tenant, slug=slug)
    form = BudgetForm(request.POST)
    if form.is_valid():
        d = form.cleaned_data
        try:
            services.budget_set(
                tenant=tenant,
                period=d["period"],
                limit_micro_usd=services.usd_to_micro(d["limit_usd"]),
                hard=d["hard"],
                alert_thresholds=d["alert_thresholds"],
                actor=request.user,
            )
        except ValidationError as exc:
            apply_errors(form, exc, {"limit_micro_usd": "limit_usd", "limit": "limit_usd"})
        else:
            messages.success(request, f"{d['period'].title()} budget saved.")
            return redirect("console:tenant-detail", slug=slug)
    return _tenant_page(request, tenant, budget_form=form, status=400)


@require_POST
@admin_required
def budget_delete(request, slug: str, budget_id: int):
    budget = get_object_or_404(Budget, pk=budget_id, tenant__slug=slug)
    services.budget_delete(budget=budget, actor=request.user)
    messages.success(request, f"{budget.period.title()} budget removed.")
    return redirect("console:tenant-detail", slug=slug)


# ---- tiers -------------------------------------------------------------------------------


@operator_required
def tier_list(request):
    return render(request, "console/tier_list.html", {"tiers": selectors.tier_list()})


def _tier_form_view(request, tier: Tier | None):
    form = TierForm(request.POST or None, initial=TierForm.initial_for(tier))
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            if tier is None:
                tier = services.tier_create(actor=request.user, **data)
                messages.success(request, f"Tier {tier.name} created.")
            else:
                tier = services.tier_update(tier=tier, actor=request.user, **data)
                messages.success(request, f"Tier {tier.name} saved.")
        except ValidationError as exc:
            apply_errors(form, exc)
        else:
            return redirect("console:tier-list")
    return render(request, "console/tier_form.html", {"form": form, "tier": tier})


@admin_required
def tier_create(request):
    return _tier_form_view(request, None)


@admin_required
def tier_edit(request, pk: int):
    return _tier_form_view(request, get_object_or_404(Tier, pk=pk))


@require_POST
@admin_required
def tier_delete(request, pk: int):
    tier = get_object_or_404(Tier, pk=pk)
    try:
        services.tier_delete(tier=tier, actor=request.user)
    except TenantsError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Tier {tier.name} deleted.")
    return redirect("console:tier-list")


# ---- audit log ---------------------------------------------------------------------------


def _diff(event: AuditEvent) -> list[dict]:
    before, after = event.before or {}, event.after or {}
    rows = []
    for key in sorted(set(before) | set(after)):
        b, a = before.get(key), after.get(key)
        if b != a or not (before and after):
            rows.append(
                {
                    "field": key,
                    "before": json.dumps(b) if key in before else "",
                    "after": json.dumps(a) if key in after else "",
                }
            )
    return rows


@operator_required
def audit_list(request):
    q = query_param(request, "q")
    action = query_param(request, "action")
    page = Paginator(selectors.audit_list(q=q, action=action), 50).get_page(request.GET.get("page"))
    events = [{"event": e, "diff": _diff(e)} for e in page]
    actions = AuditEvent.objects.order_by().values_list("action", flat=True).distinct()
    return render(
        request,
        "console/audit_list.html",
        {"page": page, "events": events, "q": q, "action": action, "actions": sorted(actions)},
    )


# ---- traffic -----------------------------------------------------------------------------


def _log_filters(request) -> dict:
    return {
        "status": query_param(request, "status"),
        "model": query_param(request, "model"),
        "q": query_param(request, "q"),
    }


@operator_required
def traffic(request):
    """Live feed of gateway requests across tenants (the rows refresh every 2 s with htmx)."""
    filters = _log_filters(request)
    rows = request_log(**filters, limit=50)
    if request.htmx:
        return render(request, "console/_request_rows.html", {"rows": rows, "show_tenant": True})
    return render(
        request,
        "console/traffic.html",
        {"rows": rows, "show_tenant": True, "models": model_names(), **filters},
    )


@operator_required
def tenant_requests(request, slug: str):
    tenant = get_object_or_404(Tenant, slug=slug)
    filters = _log_filters(request)
    rows = request_log(tenant=tenant, **filters, limit=200)
    if request.htmx:
        return render(request, "console/_request_rows.html", {"rows": rows})
    return render(
        request,
        "console/tenant_requests.html",
        {"tenant": tenant, "rows": rows, "models": model_names(), **filters},
    )


@operator_required
def playground(request):
    """Stream a chat through the gateway from the browser with a tenant key the operator
    pastes; the key stays in the page and is never sent to the console."""
    return render(request, "console/playground.html", {"models": model_names()})
