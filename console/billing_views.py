"""Billing pages of the console: usage dashboard, budgets and alerts, invoices, exports and the
self-hosting calculator. Views parse input with a form and call one billing function."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.core.paginator import Paginator
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render

from billing.charts import bar_chart, line_chart
from billing.crossover import CrossoverInputs, crossover
from billing.dashboard import budget_status, usage_dashboard
from billing.invoices import invoice_csv, invoice_for, month_totals, parse_month, usage_csv_lines
from billing.models import Alert
from billing.money import usd_cents
from console.billing_forms import CalculatorForm, UsageRangeForm
from console.decorators import operator_required
from tenants.models import Tenant


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
