"""Console forms: they parse and check input; saving is always a tenants.services call."""

from __future__ import annotations

from decimal import Decimal

from django import forms
from django.core.exceptions import ValidationError

from tenants.models import Budget, Tier
from tenants.services import known_models


def apply_errors(form: forms.Form, exc: ValidationError, field_map: dict[str, str] | None = None):
    """Put a service's ValidationError on the form's fields."""
    field_map = field_map or {}
    if hasattr(exc, "message_dict"):
        for field, messages in exc.message_dict.items():
            target = field_map.get(field, field)
            for m in messages:
                form.add_error(target if target in form.fields else None, m)
    else:
        for m in exc.messages:
            form.add_error(None, m)


class TierForm(forms.Form):
    name = forms.CharField(max_length=64)
    description = forms.CharField(max_length=255, required=False)
    requests_per_minute = forms.IntegerField(min_value=0)
    tokens_per_minute = forms.IntegerField(min_value=0)
    tokens_per_day = forms.IntegerField(min_value=0)
    max_concurrent_requests = forms.IntegerField(min_value=0)
    allowed_models = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None checked means every model the platform serves.",
    )
    default_model = forms.ChoiceField(required=False)
    fairness_weight = forms.FloatField(min_value=0.01, max_value=1000)
    semantic_cache_threshold = forms.FloatField(min_value=0.5, max_value=1.0)
    semantic_cache_ttl_seconds = forms.IntegerField(min_value=1, label="Cache TTL (s)")
    exact_cache_enabled = forms.BooleanField(required=False, label="Exact cache")
    semantic_cache_enabled = forms.BooleanField(required=False, label="Semantic cache")
    semantic_cache_sampled = forms.BooleanField(
        required=False, label="Semantic cache for sampled requests (temperature > 0)"
    )
    cache_hit_price_percent = forms.IntegerField(
        required=False, min_value=0, max_value=100, label="Cache hit price (% of the call)"
    )
    cache_max_entries = forms.IntegerField(
        required=False, min_value=1, label="Cache entries per tenant (cap)"
    )
    allow_model_override = forms.BooleanField(required=False)
    pass_unknown_params = forms.BooleanField(
        required=False,
        label="Pass unknown OpenAI parameters through",
        help_text="To OpenAI-compatible deployments; off, they are refused with a 400.",
    )
    pii_redaction = forms.BooleanField(required=False, label="PII redaction")
    log_bodies = forms.BooleanField(required=False, label="Log bodies (redacted)")
    max_output_tokens = forms.IntegerField(
        min_value=0,
        label="Output tokens reserved without max_tokens",
        help_text="0: the model's context window. Nothing is injected upstream.",
    )
    blocklist = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Comma-separated words or phrases; requests containing them are refused.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        models = known_models()
        self.fields["allowed_models"].choices = [(m, m) for m in models]
        self.fields["default_model"].choices = [("", "—")] + [(m, m) for m in models]

    @classmethod
    def initial_for(cls, tier: Tier | None) -> dict:
        if tier is None:
            t = Tier()
            return {f: getattr(t, f) for f in cls.base_fields if hasattr(t, f)} | {
                "blocklist": "",
                "allowed_models": [],
            }
        data = {f: getattr(tier, f) for f in cls.base_fields if hasattr(tier, f)}
        data["blocklist"] = ", ".join(tier.blocklist)
        return data

    def clean_cache_hit_price_percent(self) -> int:
        value = self.cleaned_data.get("cache_hit_price_percent")
        return Tier().cache_hit_price_percent if value is None else value

    def clean_cache_max_entries(self) -> int:
        value = self.cleaned_data.get("cache_max_entries")
        return Tier().cache_max_entries if value is None else value

    def clean_blocklist(self) -> list[str]:
        raw = self.cleaned_data.get("blocklist") or ""
        return [t.strip() for t in raw.split(",") if t.strip()]


class TenantForm(forms.Form):
    name = forms.CharField(max_length=128)
    slug = forms.SlugField(max_length=64, help_text="Lowercase letters, digits and dashes.")
    tier = forms.ModelChoiceField(queryset=Tier.objects.order_by("name"), to_field_name="name")
    contact_email = forms.EmailField(required=False)


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=128, help_text="What the key is for, e.g. 'production'.")
    expires = forms.DateTimeField(
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="Optional (UTC).",
    )


class BudgetForm(forms.Form):
    period = forms.ChoiceField(
        choices=Budget.Period.choices, help_text="A period that has a budget gets it replaced."
    )
    limit_usd = forms.DecimalField(
        min_value=Decimal("0"), max_digits=18, decimal_places=6, label="Limit (USD)"
    )
    hard = forms.TypedChoiceField(
        label="Kind",
        choices=[("soft", "Soft: alert only"), ("hard", "Hard: refuse requests at the limit")],
        coerce=lambda value: value == "hard",
        initial="soft",
    )
    alert_thresholds = forms.CharField(
        initial="50, 80, 100", help_text="Percentages of the limit, comma-separated."
    )

    def clean_alert_thresholds(self) -> list[int]:
        raw = self.cleaned_data["alert_thresholds"]
        try:
            values = sorted({int(x) for x in raw.split(",") if x.strip()})
        except ValueError as exc:
            raise ValidationError("Use whole percentages, e.g. 50, 80, 100.") from exc
        if any(v < 1 or v > 1000 for v in values):
            raise ValidationError("Each threshold must be between 1 and 1000 percent.")
        return values
