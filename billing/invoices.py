"""Monthly invoices per tenant: line items by model and unit prices, exact in micro-dollars.

A line's amount is the sum of its requests' costs (each request was rounded to the micro-dollar
once, when it was metered), so the invoice total equals the sum of the usage records and of
``/v1/usage`` for the same days. Cents appear only when the invoice is shown.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass

from billing import selectors
from billing.money import micro_to_usd, usd_cents
from tenants.models import Tenant


@dataclass(frozen=True)
class InvoiceLine:
    model: str
    input_price: int
    output_price: int
    cached_input_price: int
    requests: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    amount_micro_usd: int


@dataclass(frozen=True)
class Invoice:
    tenant: Tenant
    month: dt.date  # first day of the month
    lines: list[InvoiceLine]

    @property
    def period_start(self) -> dt.datetime:
        return dt.datetime(self.month.year, self.month.month, 1, tzinfo=dt.UTC)

    @property
    def period_end(self) -> dt.datetime:
        """Exclusive: the first instant of the next month."""
        return month_after(self.period_start)

    @property
    def last_day(self) -> dt.date:
        return (self.period_end - dt.timedelta(days=1)).date()

    @property
    def total_micro_usd(self) -> int:
        return sum(line.amount_micro_usd for line in self.lines)

    @property
    def number(self) -> str:
        return f"SY-{self.month:%Y%m}-{self.tenant.pk:05d}"


def month_after(start: dt.datetime) -> dt.datetime:
    return start.replace(year=start.year + (start.month == 12), month=start.month % 12 + 1)


def parse_month(value: str) -> dt.date:
    """``YYYY-MM`` → the first day of that month; ValueError otherwise."""
    year, _, month = value.partition("-")
    if not (len(year) == 4 and len(month) == 2 and year.isdigit() and month.isdigit()):
        raise ValueError(f"{value!r} is not a month as YYYY-MM")
    return dt.date(int(year), int(month), 1)


def invoice_for(*, tenant: Tenant, month: dt.date) -> Invoice:
    start = dt.datetime(month.year, month.month, 1, tzinfo=dt.UTC)
    rows = selectors.usage(
        start=start,
        end=month_after(start),
        granularity="day",
        group_by=("model", "input_price", "output_price", "cached_input_price"),
        tenant_id=tenant.pk,
    )
    lines = [
        InvoiceLine(
            model=r.model,
            input_price=r.input_price,
            output_price=r.output_price,
            cached_input_price=r.cached_input_price,
            requests=r.requests,
            input_tokens=r.input_tokens,
            output_tokens=r.output_tokens,
            cached_tokens=r.cached_tokens,
            amount_micro_usd=r.cost_micro_usd,
        )
        for r in rows
    ]
    return Invoice(tenant=tenant, month=month.replace(day=1), lines=lines)


def month_totals(*, month: dt.date) -> dict[int, int]:
    """Every tenant's invoice total for the month, micro-dollars, by tenant id."""
    start = dt.datetime(month.year, month.month, 1, tzinfo=dt.UTC)
    rows = selectors.usage(
        start=start, end=month_after(start), granularity="day", group_by=("tenant_id",)
    )
    return {r.tenant_id: r.cost_micro_usd for r in rows}


INVOICE_CSV_HEADER = [
    "invoice",
    "tenant",
    "period_start",
    "period_end",
    "model",
    "requests",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "input_price_usd_per_mtok",
    "cached_input_price_usd_per_mtok",
    "output_price_usd_per_mtok",
    "amount_micro_usd",
    "amount_usd",
]


def invoice_csv(invoice: Invoice) -> str:
    """Line items and a total row; ``amount_micro_usd`` is exact, ``amount_usd`` the cents."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(INVOICE_CSV_HEADER)
    head = [
        invoice.number,
        invoice.tenant.slug,
        invoice.month.isoformat(),
        invoice.last_day.isoformat(),
    ]
    for line in invoice.lines:
        w.writerow(
            head
            + [
                line.model,
                line.requests,
                line.input_tokens - line.cached_tokens,
                line.cached_tokens,
                line.output_tokens,
                micro_to_usd(line.input_price),
                micro_to_usd(line.cached_input_price),
                micro_to_usd(line.output_price),
                line.amount_micro_usd,
                usd_cents(line.amount_micro_usd).replace("$", "").replace(",", ""),
            ]
        )
    total = invoice.total_micro_usd
    w.writerow(
        head
        + ["TOTAL", sum(li.requests for li in invoice.lines), "", "", "", "", "", "", total]
        + [usd_cents(total).replace("$", "").replace(",", "")]
    )
    return buf.getvalue()


USAGE_CSV_HEADER = [
    "request_id",
    "created",
    "tenant",
    "api_key_id",
    "model",
    "deployment",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "input_price_micro_usd_per_mtok",
    "cached_input_price_micro_usd_per_mtok",
    "output_price_micro_usd_per_mtok",
    "cost_micro_usd",
]


def usage_csv_lines(*, start: dt.datetime, end: dt.datetime, tenant_id: int | None = None):
    """The raw usage records of ``[start, end)`` as CSV text, a line at a time (streamable)."""
    buf = io.StringIO()
    w = csv.writer(buf)

    def take() -> str:
        text = buf.getvalue()
        buf.seek(0)
        buf.truncate()
        return text

    w.writerow(USAGE_CSV_HEADER)
    yield take()
    for r in selectors.usage_records(start=start, end=end, tenant_id=tenant_id):
        w.writerow(
            [
                r.request_id,
                r.created.astimezone(dt.UTC).isoformat(),
                r.tenant.slug,
                r.api_key_id or "",
                r.model,
                r.deployment,
                r.input_tokens,
                r.cached_tokens,
                r.output_tokens,
                r.input_price,
                r.cached_input_price,
                r.output_price,
                r.cost_micro_usd,
            ]
        )
        yield take()
