"""The figures behind the console's usage dashboard, read through :mod:`billing.selectors`
(daily rollups plus the raw records not yet rolled up), so they match invoices and /v1/usage.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from billing import selectors
from billing.spend import budget_spends
from tenants.models import Budget, Tenant


@dataclass
class Day:
    day: dt.date
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_micro_usd: int = 0


@dataclass
class Breakdown:
    name: str
    requests: int
    input_tokens: int
    output_tokens: int
    cost_micro_usd: int


@dataclass
class UsageDashboard:
    first: dt.date
    last: dt.date
    days: list[Day]
    by_tenant: list[Breakdown]
    by_model: list[Breakdown]
    totals: Breakdown
    budgets: list[dict] = field(default_factory=list)


def _breakdown(name: str, r: selectors.UsageRow) -> Breakdown:
    return Breakdown(name, r.requests, r.input_tokens, r.output_tokens, r.cost_micro_usd)


def budget_status(tenant_id: int | None = None) -> list[dict]:
    """Every budget (or one tenant's) with its period's spend as the gateway counts it."""
    qs = Budget.objects.select_related("tenant").order_by("tenant__slug", "period")
    if tenant_id is not None:
        qs = qs.filter(tenant_id=tenant_id)
    budgets = list(qs)
    spends = budget_spends(budgets)
    out = []
    for b in budgets:
        spent = spends[b.pk]
        percent = round(100 * spent / b.limit_micro_usd) if b.limit_micro_usd else 100
        out.append(
            {
                "budget": b,
                "spent_micro_usd": spent,
                "percent": percent,
                "bar_percent": min(100, percent),
                "state": "over" if percent >= 100 else ("near" if percent >= 80 else "ok"),
            }
        )
    return out


def usage_dashboard(
    *, first: dt.date, last: dt.date, tenant_id: int | None = None, with_budgets: bool = True
) -> UsageDashboard:
    """Usage over the UTC days ``[first, last]``: per day, per tenant, per model, totals."""
    start = dt.datetime(first.year, first.month, first.day, tzinfo=dt.UTC)
    end = dt.datetime(last.year, last.month, last.day, tzinfo=dt.UTC) + dt.timedelta(days=1)
    common = {"start": start, "end": end, "granularity": "day", "tenant_id": tenant_id}
    days = {
        first + dt.timedelta(days=i): Day(first + dt.timedelta(days=i))
        for i in range((last - first).days + 1)
    }
    for r in selectors.usage(group_by=("bucket",), **common):
        d = days[r.bucket.astimezone(dt.UTC).date()]
        d.requests, d.input_tokens, d.output_tokens = r.requests, r.input_tokens, r.output_tokens
        d.cost_micro_usd = r.cost_micro_usd
    tenant_rows = selectors.usage(group_by=("tenant_id",), **common)
    slugs = dict(
        Tenant.objects.filter(pk__in=[r.tenant_id for r in tenant_rows]).values_list("pk", "slug")
    )
    by_tenant = sorted(
        (_breakdown(slugs.get(r.tenant_id, str(r.tenant_id)), r) for r in tenant_rows),
        key=lambda b: -b.cost_micro_usd,
    )
    by_model = sorted(
        (_breakdown(r.model, r) for r in selectors.usage(group_by=("model",), **common)),
        key=lambda b: -b.cost_micro_usd,
    )
    totals = Breakdown(
        "total",
        sum(b.requests for b in by_tenant),
        sum(b.input_tokens for b in by_tenant),
        sum(b.output_tokens for b in by_tenant),
        sum(b.cost_micro_usd for b in by_tenant),
    )
    return UsageDashboard(
        first=first,
        last=last,
        days=list(days.values()),
        by_tenant=by_tenant,
        by_model=by_model,
        totals=totals,
        budgets=budget_status(tenant_id) if with_budgets else [],
    )
