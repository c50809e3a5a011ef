"""Console pages for routing: deployments with live health, model groups, ordered rules, and
a dry-run "test route" form. Views parse with a form and call one service."""

from __future__ import annotations

import time

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from console.decorators import admin_required, operator_required
from console.forms import apply_errors
from console.routing_forms import (
    DeploymentForm,
    ModelGroupForm,
    RoutingRuleForm,
    TestRouteForm,
    TierRoutingForm,
)
from serving.models import Deployment, ModelGroup, RoutingRule
from serving.routing.deployments import deployment_set
from serving.routing.health import DeploymentHealthSync, DeploymentState
from serving.routing.preview import preview_route
from serving.routing.services import model_group_set, routing_rule_delete, routing_rule_set
from switchyard.redis_client import get_redis
from tenants import services
from tenants.models import Tier

# ---- deployments -------------------------------------------------------------------------


def _deployment_rows() -> list[dict]:
    deps = list(Deployment.objects.order_by("model", "name"))
    live = DeploymentHealthSync(get_redis()).snapshot([d.name for d in deps])
    now = time.time()
    rows = []
    for d in deps:
        state = live.get(d.name, DeploymentState())
        rows.append({
            "d": d,
            "state": state,
            "status": state.status(now) if d.enabled else "disabled",
            "cooldown_left": max(0, round(state.cooldown_until - now)),
        })  # fmt: skip
    return rows


@operator_required
def deployment_list(request):
    ctx = {"rows": _deployment_rows()}
    if request.htmx and not request.htmx.history_restore_request:
        return render(request, "console/routing/_deployment_rows.html", ctx)
    return render(request, "console/routing/deployment_list.html", ctx)


def _named_form_view(
    request, obj, *, form_class, model, label, save, redirect_to, template, context_name
):
    """Create (``obj`` None) or edit a row known by its unique ``name``; ``save(name, data)``
    calls the service. Shared by deployments, groups and rules."""
    form = form_class(request.POST or None, initial=form_class.initial_for(obj))
    if obj is not None:
        form.fields["name"].disabled = True
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        name = obj.name if obj else data["name"]
        data.pop("name", None)
        if obj is None and model.objects.filter(name=name).exists():
            form.add_error("name", f"A {label} with this name already exists.")
        else:
            try:
                save(name, data)
            except ValidationError as exc:
                apply_errors(form, exc)
            else:
                messages.success(request, f"{label.capitalize()} {name} saved.")
                return redirect(redirect_to)
    return render(request, template, {"form": form, context_name: obj})


def _deployment_form_view(request, dep: Deployment | None):
    def save(name: str, data: dict) -> None:
        api_key = data.pop("api_key") or None
        deployment_set(name=name, api_key=api_key, actor=request.user, **data)

    return _named_form_view(
        request, dep, form_class=DeploymentForm, model=Deployment, label="deployment", save=save,
        redirect_to="console:deployment-list", template="console/routing/deployment_form.html",
        context_name="dep",
    )  # fmt: skip


@admin_required
def deployment_create(request):
    return _deployment_form_view(request, None)


@admin_required
def deployment_edit(request, name: str):
    return _deployment_form_view(request, get_object_or_404(Deployment, name=name))


# ---- groups and rules --------------------------------------------------------------------


@operator_required
def rule_list(request):
    return render(
        request,
        "console/routing/rule_list.html",
        {
            "rules": RoutingRule.objects.select_related("tier", "tenant").order_by(
                "position", "id"
            ),
            "groups": ModelGroup.objects.prefetch_related("members"),
            "tiers": Tier.objects.order_by("name"),
        },
    )


@admin_required
def tier_routing_edit(request, pk: int):
    tier = get_object_or_404(Tier, pk=pk)
    form = TierRoutingForm(request.POST or None, initial=TierRoutingForm.initial_for(tier))
    if request.method == "POST" and form.is_valid():
        try:
            services.tier_update(tier=tier, actor=request.user, **form.tier_fields())
        except ValidationError as exc:
            apply_errors(form, exc, {"request_budget_micro_usd": "request_budget_usd"})
        else:
            messages.success(request, f"Routing settings of tier {tier.name} saved.")
            return redirect("console:rule-list")
    return render(request, "console/routing/tier_form.html", {"form": form, "tier": tier})


def _group_form_view(request, group: ModelGroup | None):
    def save(name: str, data: dict) -> None:
        model_group_set(name=name, strategy=data["strategy"], members=data["members"],
                        description=data["description"], actor=request.user)  # fmt: skip

    return _named_form_view(
        request, group, form_class=ModelGroupForm, model=ModelGroup, label="group", save=save,
        redirect_to="console:rule-list", template="console/routing/group_form.html",
        context_name="group",
    )  # fmt: skip


@admin_required
def group_create(request):
    return _group_form_view(request, None)


@admin_required
def group_edit(request, pk: int):
    return _group_form_view(request, get_object_or_404(ModelGroup, pk=pk))


def _rule_form_view(request, rule: RoutingRule | None):
    def save(name: str, data: dict) -> None:
        routing_rule_set(name=name, actor=request.user, **data)

    return _named_form_view(
        request, rule, form_class=RoutingRuleForm, model=RoutingRule, label="rule", save=save,
        redirect_to="console:rule-list", template="console/routing/rule_form.html",
        context_name="rule",
    )  # fmt: skip


@admin_required
def rule_create(request):
    return _rule_form_view(request, None)


@admin_required
def rule_edit(request, pk: int):
    return _rule_form_view(request, get_object_or_404(RoutingRule, pk=pk))


@require_POST
@admin_required
def rule_delete(request, pk: int):
    rule = get_object_or_404(RoutingRule, pk=pk)
    routing_rule_delete(rule=rule, actor=request.user)
    messages.success(request, f"Rule {rule.name} deleted.")
    return redirect("console:rule-list")


# ---- dry run -----------------------------------------------------------------------------


@operator_required
def test_route(request):
    form = TestRouteForm(request.POST or None)
    preview = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        cost = data["max_cost_usd"]
        preview = preview_route(
            tenant=data["tenant"],
            model=data["model"],
            prompt=data["prompt"],
            max_tokens=data["max_tokens"],
            max_cost_micro_usd=None if cost is None else int(cost * 1_000_000),
            metadata=data["metadata"],
        )
    return render(request, "console/routing/test_route.html", {"form": form, "preview": preview})
