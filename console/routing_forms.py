"""Console forms for deployments, model groups, routing rules and the dry-run route test.

They parse and check input; saving is always a service call (serving.routing.deployments,
serving.routing.services)."""

from __future__ import annotations

from decimal import Decimal

from django import forms

from serving.models import Deployment, ModelGroup, RoutingRule
from serving.routing.catalog import model_names
from tenants.models import Tenant, Tier


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


class DeploymentForm(forms.Form):
    name = forms.SlugField(max_length=64)
    model = forms.CharField(max_length=128, help_text="Public model name it serves.")
    upstream_model = forms.CharField(max_length=128, required=False)
    kind = forms.ChoiceField(choices=Deployment.Kind.choices)
    base_url = forms.URLField(
        max_length=255, assume_scheme="http", help_text="e.g. http://127.0.0.1:8100/v1"
    )
    api_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput,
        label="Upstream API key",
        help_text="Stored encrypted, never shown again; leave empty to keep the stored one.",
    )
    weight = forms.IntegerField(min_value=1)
    max_concurrency = forms.IntegerField(min_value=1)
    context_window = forms.IntegerField(min_value=1)
    timeout_seconds = forms.FloatField(min_value=0.1)
    quality = forms.FloatField(min_value=0.0, max_value=1.0, help_text="0–1")
    capabilities = forms.MultipleChoiceField(
        choices=Deployment.Capability.choices, required=False, widget=forms.CheckboxSelectMultiple
    )
    health_check = forms.ChoiceField(choices=Deployment.HealthCheck.choices)
    api_version = forms.CharField(max_length=32, required=False, help_text="Azure OpenAI only.")
    enabled = forms.BooleanField(required=False)

    @classmethod
    def initial_for(cls, dep: Deployment | None) -> dict:
        if dep is None:
            return {"kind": Deployment.Kind.LOCAL_WORKER, "weight": 1, "max_concurrency": 64,
                    "context_window": 8192, "timeout_seconds": 120.0, "quality": 0.8,
                    "health_check": Deployment.HealthCheck.HEALTH_URL, "enabled": True}  # fmt: skip
        fields = [f for f in cls.base_fields if f != "api_key"]
        return {f: getattr(dep, f) for f in fields}


class ModelGroupForm(forms.Form):
    name = forms.CharField(max_length=128, help_text="Public name, e.g. fast, smart.")
    strategy = forms.ChoiceField(choices=ModelGroup.Strategy.choices)
    members = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Deployments whose model is the group's name belong to it anyway.",
    )
    description = forms.CharField(max_length=255, required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        names = Deployment.objects.order_by("name").values_list("name", flat=True)
        self.fields["members"].choices = [(n, n) for n in names]

    @classmethod
    def initial_for(cls, group: ModelGroup | None) -> dict:
        if group is None:
            return {"strategy": ModelGroup.Strategy.WEIGHTED}
        return {"name": group.name, "strategy": group.strategy, "description": group.description,
                "members": list(group.members.values_list("name", flat=True))}  # fmt: skip


class RoutingRuleForm(forms.Form):
    position = forms.IntegerField(min_value=0, help_text="Lower runs first.")
    name = forms.SlugField(max_length=64)
    enabled = forms.BooleanField(required=False)
    target = forms.ChoiceField(help_text="Model or group the request goes to.")
    tier = forms.ModelChoiceField(queryset=Tier.objects.order_by("name"), required=False)
    tenant = forms.ModelChoiceField(queryset=Tenant.objects.order_by("slug"), required=False)
    requested_models = forms.CharField(
        required=False, help_text="Comma-separated requested names (empty: any), e.g. auto."
    )
    min_prompt_tokens = forms.IntegerField(min_value=0, required=False)
    max_prompt_tokens = forms.IntegerField(min_value=0, required=False)
    task_class = forms.ChoiceField(choices=RoutingRule.TaskClass.choices, required=False)
    metadata_key = forms.CharField(max_length=64, required=False)
    metadata_value = forms.CharField(max_length=255, required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["target"].choices = [(m, m) for m in model_names()]

    def clean_requested_models(self) -> list[str]:
        return _csv(self.cleaned_data["requested_models"])

    @classmethod
    def initial_for(cls, rule: RoutingRule | None) -> dict:
        if rule is None:
            return {"position": 100, "enabled": True}
        data = {f: getattr(rule, f) for f in cls.base_fields}
        data["requested_models"] = ", ".join(rule.requested_models)
        return data


class TestRouteForm(forms.Form):
    tenant = forms.ModelChoiceField(queryset=Tenant.objects.order_by("slug"))
    model = forms.CharField(max_length=128, initial="auto", help_text="As a caller would send it.")
    prompt = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}))
    max_tokens = forms.IntegerField(min_value=1, required=False, initial=256)
    max_cost_usd = forms.DecimalField(
        min_value=Decimal(0), required=False, label="Max cost (USD)",
        help_text="As x-switchyard-max-cost-usd; empty: the tier's default.",
    )  # fmt: skip
    metadata = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Request metadata, one key=value a line.",
    )

    def clean_metadata(self) -> dict[str, str]:
        out = {}
        for line in self.cleaned_data["metadata"].splitlines():
            if not line.strip():
                continue
            key, sep, value = line.partition("=")
            if not sep or not key.strip():
                raise forms.ValidationError(f"Write key=value, one a line (got {line!r}).")
            out[key.strip()] = value.strip()
        return out


class TierRoutingForm(forms.Form):
    """A tier's cost-aware routing settings (the rest of a tier is on the tier page)."""

    quality_floor = forms.FloatField(
        min_value=0.0,
        max_value=1.0,
        help_text="Cost-aware groups use deployments at least this good.",
    )
    request_budget_usd = forms.DecimalField(
        min_value=Decimal(0), decimal_places=6, required=False, label="Request budget (USD)",
        help_text="Most one request may cost in cost-aware groups, unless the caller sends "
        "x-switchyard-max-cost-usd; empty: no limit.",
    )  # fmt: skip

    @classmethod
    def initial_for(cls, tier: Tier) -> dict:
        budget = tier.request_budget_micro_usd
        return {"quality_floor": tier.quality_floor,
                "request_budget_usd": Decimal(budget) / 1_000_000 if budget else None}  # fmt: skip

    def tier_fields(self) -> dict:
        usd = self.cleaned_data["request_budget_usd"]
        return {"quality_floor": self.cleaned_data["quality_floor"],
                "request_budget_micro_usd": int(usd * 1_000_000) if usd else 0}  # fmt: skip
