"""Billing pages of the console: usage dashboard, budgets and alerts, invoices, exports and the
self-hosting calculator. Views parse input with a form and call one billing function."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from billing import services as billing_services
from billing.charts import bar_chart, hbar_chart, line_chart
from billing.crossover import CrossoverInputs, crossover
from billing.dashboard import budget_status, usage_dashboard
from billing.invoices import invoice_csv, invoice_for, month_totals, parse_month, usage_csv_lines
from billing.models import Alert, BillingProfile, ModelPrice, TenantPriceOverride
from billing.money import usd_cents
from console.billing_forms import (
    AlertContactsForm,
    CalculatorForm,
    PriceForm,
    TenantTermsForm,
    UsageRangeForm,
)
from console.decorators import admin_required, operator_required
from console.forms import apply_errors
from tenants.models import Tenant
from tenants.services import usd_to_micro


def _usd_axis(micro: float) -> str:
    return usd_cents(round(micro))


def _compact(v: float) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if v >= size:
            return f"{v / size:.1f}{unit}"
    return f"{v:.0f}"


@operator_required
def usage(request):
    form = UsageRangeForm(request.GET)  # every field is optional: empty means the last 30 days
    if not form.is_valid():
        return render(request, "console/billing/usage.html", {"form": form}, status=400)
    data = form.cleaned_data
    tenant = data.get("tenant")
    board = usage_dashboard(
        first=data["start"], last=data["end"], tenant_id=tenant.pk if tenant else None
    )
    labels = [d.day.isoformat() for d in board.days]
    charts = {
        "spend": bar_chart(
            labels, [d.cost_micro_usd for d in board.days], title="Spend per day",
            fmt=_usd_axis, name="spend",
        ),
        "requests": bar_chart(
            labels, [d.requests for d in board.days], title="Requests per day",
            fmt=_compact, name="requests",
        ),
        "tokens": bar_chart(
            labels, [d.input_tokens + d.output_tokens for d in board.days],
            title="Tokens per day (input + output)", fmt=_compact, name="tokens",
        ),
        "by_tenant": hbar_chart(
            [b.name for b in board.by_tenant], [b.cost_micro_usd for b in board.by_tenant],
            title="Spend by tenant", fmt=_usd_axis, name="spend-by-tenant",
        ),
        "by_model": hbar_chart(
            [b.name for b in board.by_model], [b.cost_micro_usd for b in board.by_model],
            title="Spend by model", fmt=_usd_axis, name="spend-by-model",
        ),
    }  # fmt: skip
    if not request.GET:  # show the default range in the inputs
        form = UsageRangeForm(initial={"start": data["start"], "end": data["end"]})
    return render(
        request,
        "console/billing/usage.html",
        {"form": form, "board": board, "charts": charts, "tenant": tenant},
    )


@operator_required
def usage_export(request):
    """Raw usage records of a date range as CSV (all tenants, or one)."""
    form = UsageRangeForm(request.GET)
    if not form.is_valid():
        return render(request, "console/billing/usage.html", {"form": form}, status=400)
    first, last = form.cleaned_data["start"], form.cleaned_data["end"]
    tenant = form.cleaned_data.get("tenant")
    start = dt.datetime(first.year, first.month, first.day, tzinfo=dt.UTC)
    end = dt.datetime(last.year, last.month, last.day, tzinfo=dt.UTC) + dt.timedelta(days=1)
    lines = usage_csv_lines(start=start, end=end, tenant_id=tenant.pk if tenant else None)
    resp = StreamingHttpResponse(lines, content_type="text/csv")
    who = tenant.slug if tenant else "all-tenants"
    resp["Content-Disposition"] = f'attachment; filename="usage-{who}-{first}-{last}.csv"'
    return resp


@operator_required
def alerts(request):
    qs = Alert.objects.select_related("tenant")
    kind = request.GET.get("kind", "")
    if kind in Alert.Kind.values:
        qs = qs.filter(kind=kind)
    page = Paginator(qs, 50).get_page(request.GET.get("page"))
    return render(
        request,
        "console/billing/alerts.html",
        {"page": page, "kind": kind, "kinds": Alert.Kind.choices, "budgets": budget_status()},
    )


def _month(request) -> dt.date:
    value = request.GET.get("month") or dt.datetime.now(dt.UTC).strftime("%Y-%m")
    try:
        return parse_month(value)
    except ValueError:
        raise Http404("Give the month as YYYY-MM.") from None


@operator_required
def invoices(request):
    month = _month(request)
    totals = month_totals(month=month)
    tenants = Tenant.objects.filter(pk__in=list(totals)).order_by("slug")
    rows = [{"tenant": t, "total_micro_usd": totals[t.pk]} for t in tenants]
    prev = (month - dt.timedelta(days=1)).replace(day=1)
    nxt = (month + dt.timedelta(days=32)).replace(day=1)
    return render(
        request,
        "console/billing/invoices.html",
        {
            "month": month,
            "rows": rows,
            "grand_total": sum(totals.values()),
            "prev": prev,
            "next": nxt,
        },
    )


def _invoice(slug: str, month: str):
    tenant = get_object_or_404(Tenant, slug=slug)
    try:
        first = parse_month(month)
    except ValueError:
        raise Http404("Give the month as YYYY-MM.") from None
    return invoice_for(tenant=tenant, month=first)


@operator_required
def invoice(request, slug: str, month: str):
    return render(request, "console/billing/invoice.html", {"invoice": _invoice(slug, month)})


@operator_required
def invoice_download(request, slug: str, month: str):
    inv = _invoice(slug, month)
    resp = HttpResponse(invoice_csv(inv), content_type="text/csv")
    resp["Content-Disposition"] = f'attachment; filename="{inv.number}.csv"'
    return resp


@operator_required
def calculator(request):
    form = CalculatorForm(request.GET or None)
    result = chart = None
    if form.is_bound and form.is_valid():
        d = form.cleaned_data
        result = crossover(
            CrossoverInputs(
                api_usd_per_mtok=d["api_usd_per_mtok"],
                gpu_usd_per_hour=d["gpu_usd_per_hour"],
                utilisation=d["utilisation_percent"] / Decimal(100),
                tokens_per_second=d["tps"],
            )
        )
        pts = result.curve()
        chart = line_chart(
            [
                ("API", "api", [(float(v), float(a)) for v, a, _ in pts]),
                ("Self-hosted (whole GPUs)", "self", [(float(v), float(s)) for v, _, s in pts]),
            ],
            title="Monthly cost by volume",
            fmt_x=lambda x: f"{x:,.0f} Mtok",
            fmt_y=lambda y: f"${y:,.0f}",
            name="crossover",
        )
    status = 400 if form.is_bound and not form.is_valid() else 200
    return render(
        request,
        "console/billing/calculator.html",
        {"form": form, "result": result, "chart": chart},
        status=status,
    )


# ---- prices, tenant terms and alert contacts -------------------------------------------


def _prices_page(request, *, price_form=None, terms_form=None, contacts_form=None, status=200):
    now = dt.datetime.now(dt.UTC)
    prices = list(ModelPrice.objects.order_by("model", "deployment", "-effective_from"))
    in_force = {}
    for p in prices:  # newest first per (model, deployment): the first one started is in force
        if p.effective_from <= now:
            in_force.setdefault((p.model, p.deployment), p.pk)
    return render(
        request,
        "console/billing/prices.html",
        {
            "prices": prices,
            "in_force": set(in_force.values()),
            "now": now,
            "terms": TenantPriceOverride.objects.select_related("tenant").order_by(
                "tenant__slug", "model", "-effective_from"
            ),
            "contacts": BillingProfile.objects.select_related("tenant").order_by("tenant__slug"),
            "price_form": price_form or PriceForm(),
            "terms_form": terms_form or TenantTermsForm(),
            "contacts_form": contacts_form or AlertContactsForm(),
        },
        status=status,
    )


@operator_required
def prices(request):
    return _prices_page(request)


def _micro(value: Decimal | None) -> int | None:
    return None if value is None else usd_to_micro(value)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else value.astimezone(dt.UTC)


def _price_fields(d: dict) -> dict:
    """The unit prices (dollars per million tokens on the form, micro-dollars for the
    services) and start of a price or tenant-terms form."""
    return {
        "input_micro_usd_per_mtok": _micro(d["input_usd_per_mtok"]),
        "output_micro_usd_per_mtok": _micro(d["output_usd_per_mtok"]),
        "cached_input_micro_usd_per_mtok": _micro(d["cached_input_usd_per_mtok"]),
        "effective_from": _utc(d["effective_from"]),
    }


@require_POST
@admin_required
def price_add(request):
    form = PriceForm(request.POST)
    if form.is_valid():
        d = form.cleaned_data
        try:
            p = billing_services.price_set(
                model=d["model"],
                deployment=d["deployment"],
                **_price_fields(d),
                actor=request.user,
            )
        except ValidationError as exc:
            apply_errors(form, exc, PRICE_FIELD_MAP)
        else:
            messages.success(
                request, f"Price for {p.model} from {p.effective_from:%Y-%m-%d %H:%M} UTC added."
            )
            return redirect("console:billing-prices")
    return _prices_page(request, price_form=form, status=400)


@require_POST
@admin_required
def terms_add(request):
    form = TenantTermsForm(request.POST)
    if form.is_valid():
        d = form.cleaned_data
        try:
            t = billing_services.tenant_terms_set(
                tenant=d["tenant"],
                model=d["model"],
                discount_bp=int(d["discount_percent"] * 100),
                **_price_fields(d),
                actor=request.user,
            )
        except ValidationError as exc:
            apply_errors(form, exc, PRICE_FIELD_MAP)
        else:
            messages.success(request, f"Terms for {t.tenant.slug} added.")
            return redirect("console:billing-prices")
    return _prices_page(request, terms_form=form, status=400)


@require_POST
@admin_required
def contacts_set(request):
    form = AlertContactsForm(request.POST)
    if form.is_valid():
        d = form.cleaned_data
        billing_services.alert_contacts_set(
            tenant=d["tenant"], alert_emails=d["alert_emails"], webhook_url=d["webhook_url"],
            actor=request.user,
        )  # fmt: skip
        messages.success(request, f"Alert contacts of {d['tenant'].slug} saved.")
        return redirect("console:billing-prices")
    return _prices_page(request, contacts_form=form, status=400)


PRICE_FIELD_MAP = {
    "input_micro_usd_per_mtok": "input_usd_per_mtok",
    "output_micro_usd_per_mtok": "output_usd_per_mtok",
    "cached_input_micro_usd_per_mtok": "cached_input_usd_per_mtok",
    "discount_bp": "discount_percent",
}
