"""Billing forms: date ranges, invoice months, the crossover calculator."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django import forms

from billing.crossover import deployment_throughputs, engine_throughputs
from tenants.models import Tenant

MAX_DAYS = 366


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


class UsageRangeForm(forms.Form):
    """UTC days, both inclusive; an optional tenant."""

    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    tenant = forms.ModelChoiceField(
        queryset=Tenant.objects.order_by("slug"),
        to_field_name="slug",
        required=False,
        empty_label="All tenants",
    )

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        end = data.get("end") or _today()
        start = data.get("start") or end - dt.timedelta(days=29)
        if end < start:
            self.add_error("end", "The end date is before the start date.")
        elif (end - start).days + 1 > MAX_DAYS:
            self.add_error("end", f"Choose at most {MAX_DAYS} days.")
        data["start"], data["end"] = start, end
        return data


class CalculatorForm(forms.Form):
    api_usd_per_mtok = forms.DecimalField(
        label="API price ($ per million tokens)",
        min_value=Decimal("0.000001"),
        max_digits=12,
        decimal_places=6,
        initial=Decimal("0.60"),
    )
    gpu_usd_per_hour = forms.DecimalField(
        label="GPU cost ($ per hour)",
        min_value=Decimal("0.000001"),
        max_digits=10,
        decimal_places=4,
        initial=Decimal("2.50"),
    )
    utilisation_percent = forms.DecimalField(
        label="Utilisation (% of the month doing useful work)",
        min_value=Decimal("0.1"),
        max_value=Decimal("100"),
        max_digits=5,
        decimal_places=1,
        initial=Decimal("60"),
    )
    measured = forms.ChoiceField(
        label="Measured throughput (deployments' busiest hour, or the engine benchmark)",
        required=False,
    )
    tokens_per_second = forms.DecimalField(
        label="…or tokens per second of your deployment",
        required=False,
        min_value=Decimal("0.001"),
        max_digits=12,
        decimal_places=3,
        help_text="Overrides the measured figure when filled in.",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        engine = engine_throughputs()
        self.measurements = deployment_throughputs() + engine
        self.fields["measured"].choices = [("", "—")] + [
            (str(m.tokens_per_second), m.label) for m in self.measurements
        ]
        if self.measurements and not self.is_bound:
            default = (engine or self.measurements)[0]
            self.initial.setdefault("measured", str(default.tokens_per_second))

    def clean(self):
        data = super().clean()
        tps = data.get("tokens_per_second")
        if tps is None and data.get("measured"):
            tps = Decimal(data["measured"])
        if tps is None and "tokens_per_second" not in self.errors:
            self.add_error(
                "tokens_per_second", "Pick a measured throughput or enter tokens per second."
            )
        data["tps"] = tps
        return data


def _usd_per_mtok(label: str, required: bool = True) -> forms.DecimalField:
    return forms.DecimalField(
        label=label, required=required, min_value=Decimal(0), max_digits=14, decimal_places=6
    )


class PriceForm(forms.Form):
    """A new price list from a moment on (USD per million tokens)."""

    model = forms.CharField(max_length=128)
    deployment = forms.CharField(
        max_length=128, required=False, help_text="Empty: every deployment of the model."
    )
    input_usd_per_mtok = _usd_per_mtok("Input $/Mtok")
    output_usd_per_mtok = _usd_per_mtok("Output $/Mtok")
    cached_input_usd_per_mtok = _usd_per_mtok("Cached input $/Mtok", required=False)
    effective_from = forms.DateTimeField(
        required=False,
        help_text="UTC, e.g. 2026-12-01 00:00; empty: now.",
        widget=forms.DateTimeInput(attrs={"placeholder": "YYYY-MM-DD HH:MM"}),
    )


class TenantTermsForm(forms.Form):
    """A tenant's discount and/or committed-use rates from a moment on."""

    tenant = forms.ModelChoiceField(queryset=Tenant.objects.order_by("slug"), to_field_name="slug")
    model = forms.CharField(max_length=128, required=False, help_text="Empty: every model.")
    discount_percent = forms.DecimalField(
        min_value=Decimal(0), max_value=Decimal(100), max_digits=5, decimal_places=2, initial=0
    )
    input_usd_per_mtok = _usd_per_mtok("Committed input $/Mtok", required=False)
    output_usd_per_mtok = _usd_per_mtok("Committed output $/Mtok", required=False)
    cached_input_usd_per_mtok = _usd_per_mtok("Committed cached input $/Mtok", required=False)
    effective_from = forms.DateTimeField(required=False, help_text="UTC; empty: now.")


class AlertContactsForm(forms.Form):
    """Where a tenant's billing alerts go besides its contact e-mail."""

    tenant = forms.ModelChoiceField(queryset=Tenant.objects.order_by("slug"), to_field_name="slug")
    alert_emails = forms.CharField(
        max_length=512, required=False, help_text="Comma-separated addresses."
    )
    webhook_url = forms.URLField(max_length=512, required=False, assume_scheme="https")

    def clean_alert_emails(self) -> str:
        from django.core.validators import validate_email

        raw = [e.strip() for e in self.cleaned_data["alert_emails"].split(",") if e.strip()]
        for e in raw:
            try:
                validate_email(e)
            except forms.ValidationError:
                raise forms.ValidationError(f"{e!r} is not an e-mail address.") from None
        return ", ".join(raw)
