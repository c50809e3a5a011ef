"""Whatever the console can set, the management API can set: the serializers take their fields
from the services' field lists, every console form's field has a writable API field, and each
such field set through the API is stored."""

from __future__ import annotations

import datetime as dt

import pytest
from django import forms
from rest_framework import serializers

from billing.models import BillingProfile, ModelPrice, TenantPriceOverride
from billing.services import ALERT_CONTACT_FIELDS, PRICE_FIELDS
from console.billing_forms import AlertContactsForm, PriceForm, TenantTermsForm
from console.cache_forms import SharedPoolForm
from console.forms import ApiKeyForm, BudgetForm, TenantForm, TierForm
from console.routing_forms import DeploymentForm, ModelGroupForm, RoutingRuleForm, TierRoutingForm
from serving.api.serializers import (
    AlertContactsSerializer,
    DeploymentSerializer,
    ModelGroupSerializer,
    PriceSerializer,
    RoutingRuleSerializer,
    TenantTermsSerializer,
)
from serving.models import Deployment, RoutingRule
from serving.routing.deployments import FIELDS as DEPLOYMENT_FIELDS
from serving.routing.services import GROUP_FIELDS, RULE_FIELDS
from tenants.api.serializers import (
    ApiKeyCreateSerializer,
    ApiKeySerializer,
    BudgetSerializer,
    TenantSerializer,
    TierSerializer,
)
from tenants.models import ApiKey, AuditEvent, Budget, Tenant, Tier
from tenants.services import BUDGET_FIELDS, KEY_FIELDS, TENANT_FIELDS, TIER_FIELDS
from tests.serving.api.conftest import client_for

MODEL = "smollm2-135m-instruct"

# Console fields that take dollars or percent where the API takes the stored unit.
CONSOLE_UNITS = {
    "limit_usd": "limit_micro_usd",
    "request_budget_usd": "request_budget_micro_usd",
    "input_usd_per_mtok": "input_micro_usd_per_mtok",
    "output_usd_per_mtok": "output_micro_usd_per_mtok",
    "cached_input_usd_per_mtok": "cached_input_micro_usd_per_mtok",
    "discount_percent": "discount_bp",
}

# Each console form (or the forms that edit one thing together) and the API serializer that
# writes the same thing.
PAIRS = [
    ((TierForm, TierRoutingForm), TierSerializer),
    ((TenantForm, SharedPoolForm), TenantSerializer),
    ((ApiKeyForm,), ApiKeyCreateSerializer),
    ((BudgetForm,), BudgetSerializer),
    ((DeploymentForm,), DeploymentSerializer),
    ((ModelGroupForm,), ModelGroupSerializer),
    ((RoutingRuleForm,), RoutingRuleSerializer),
    ((PriceForm,), PriceSerializer),
    ((TenantTermsForm,), TenantTermsSerializer),
    ((AlertContactsForm,), AlertContactsSerializer),
]


def _writable(serializer: type[serializers.Serializer]) -> set[str]:
    return {name for name, field in serializer().fields.items() if not field.read_only}


@pytest.mark.parametrize(("console", "api"), PAIRS, ids=[api.__name__ for _, api in PAIRS])
def test_every_console_field_is_writable_through_the_api(console, api, db):
    fields = {CONSOLE_UNITS.get(f, f) for form in console for f in form.base_fields}
    # A budget's tenant is its page's (the URL), a key's too; the API names it in the body.
    missing = fields - _writable(api)
    assert not missing, f"{api.__name__} cannot set {sorted(missing)}"


@pytest.mark.parametrize(
    ("serializer", "service_fields"),
    [
        (TierSerializer, TIER_FIELDS),
        (TenantSerializer, TENANT_FIELDS),
        (ApiKeySerializer, KEY_FIELDS),
        (BudgetSerializer, BUDGET_FIELDS),
        (DeploymentSerializer, DEPLOYMENT_FIELDS),
        (ModelGroupSerializer, GROUP_FIELDS),
        (RoutingRuleSerializer, RULE_FIELDS),
        (PriceSerializer, PRICE_FIELDS),
        (TenantTermsSerializer, PRICE_FIELDS),
        (AlertContactsSerializer, ALERT_CONTACT_FIELDS),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
def test_serializers_show_every_field_of_their_service(serializer, service_fields, db):
    assert set(service_fields) <= set(serializer().fields)


def test_the_console_forms_are_all_checked():
    """A new console form that sets something must join PAIRS (or be listed here as not a
    setting: filters, calculators, searches, the route tester, login)."""
    import console.billing_forms
    import console.cache_forms
    import console.forms
    import console.routing_forms

    paired = {form for forms_, _ in PAIRS for form in forms_}
    not_settings = {"UsageRangeForm", "CalculatorForm", "EntrySearchForm", "TestRouteForm"}
    found = {
        obj
        for module in (console.forms, console.routing_forms, console.billing_forms,
                       console.cache_forms)
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, forms.Form) and obj.__module__ == module.__name__
    }  # fmt: skip
    assert {f.__name__ for f in found - paired} == not_settings


# Every tier field set to a value that is not its default, so a field the API dropped fails.
TIER_VALUES = {
    "name": "every-field",
    "description": "set through the API",
    "requests_per_minute": 61,
    "tokens_per_minute": 100_001,
    "tokens_per_day": 2_000_001,
    "max_concurrent_requests": 9,
    "allowed_models": [MODEL],
    "default_model": MODEL,
    "fairness_weight": 2.5,
    "semantic_cache_threshold": 0.9,
    "semantic_cache_ttl_seconds": 60,
    "exact_cache_enabled": False,
    "semantic_cache_enabled": False,
    "semantic_cache_sampled": True,
    "cache_hit_price_percent": 25,
    "cache_max_entries": 500,
    "allow_model_override": False,
    "pii_redaction": False,
    "blocklist": ["forbidden", "words"],
    "log_bodies": True,
    "max_output_tokens": 1024,
    "quality_floor": 0.6,
    "request_budget_micro_usd": 2_000,
    "pass_unknown_params": True,
}


def test_every_tier_field_is_set_through_the_api(admin_api):
    assert set(TIER_VALUES) == set(TIER_FIELDS)
    default = Tier()
    assert [f for f in TIER_FIELDS if getattr(default, f) == TIER_VALUES[f]] == []
    r = admin_api.post("/api/v1/tiers/", TIER_VALUES, format="json")
    assert r.status_code == 201, r.content
    tier = Tier.objects.get(name="every-field")
    assert {f: getattr(tier, f) for f in TIER_FIELDS} == TIER_VALUES
    # And each one alone through PATCH.
    changes = {"requests_per_minute": 7, "semantic_cache_sampled": False, "blocklist": [],
               "pass_unknown_params": False, "request_budget_micro_usd": 0}  # fmt: skip
    for field, value in changes.items():
        r = admin_api.patch("/api/v1/tiers/every-field/", {field: value}, format="json")
        assert r.status_code == 200 and r.json()[field] == value, r.content
        tier.refresh_from_db()
        assert getattr(tier, field) == value


def test_every_tenant_field_the_console_sets_is_set_through_the_api(admin_api, tier):
    other = Tier.objects.create(name="other")
    r = admin_api.post("/api/v1/tenants/", {"name": "Acme", "slug": "acme", "tier": "standard",
                       "contact_email": "ops@acme.test", "cache_shared_pool": True},
                       format="json")  # fmt: skip
    assert r.status_code == 201, r.content
    tenant = Tenant.objects.get(slug="acme")
    assert (tenant.contact_email, tenant.cache_shared_pool) == ("ops@acme.test", True)
    changes = {"name": "Acme Two", "slug": "acme-2", "tier": "other",
               "contact_email": "x@acme.test", "cache_shared_pool": False}  # fmt: skip
    url = "/api/v1/tenants/acme/"
    for field, value in changes.items():
        r = admin_api.patch(url, {field: value}, format="json")
        assert r.status_code == 200 and r.json()[field] == value, r.content
        url = f"/api/v1/tenants/{r.json()['slug']}/"
    tenant.refresh_from_db()
    assert (tenant.name, tenant.slug, tenant.tier, tenant.contact_email) == (
        "Acme Two",
        "acme-2",
        other,
        "x@acme.test",
    )
    assert tenant.cache_shared_pool is False


def test_a_key_and_a_budget_take_every_console_field(admin_api, tenant_a):
    expires = "2099-01-01T00:00:00Z"
    r = admin_api.post("/api/v1/keys/", {"tenant": "acme", "name": "ci", "expires": expires},
                       format="json")  # fmt: skip
    assert r.status_code == 201, r.content
    key = ApiKey.objects.get(pk=r.json()["api_key"]["id"])
    assert (key.name, key.expires) == ("ci", dt.datetime(2099, 1, 1, tzinfo=dt.UTC))
    r = admin_api.post("/api/v1/keys/", {"tenant": "acme", "name": "x" * 129}, format="json")
    assert r.status_code == 400 and "name" in r.json()["errors"]

    budget = {"tenant": "acme", "period": "monthly", "limit_micro_usd": 5_000_000, "hard": True,
              "alert_thresholds": [50, 90]}  # fmt: skip
    r = admin_api.post("/api/v1/budgets/", budget, format="json")
    assert r.status_code == 201, r.content
    stored = Budget.objects.get(tenant=tenant_a)
    assert {f: getattr(stored, f) for f in BUDGET_FIELDS} == {
        "period": "monthly", "limit_micro_usd": 5_000_000, "hard": True, "alert_thresholds": [50, 90]
    }  # fmt: skip


def test_every_deployment_and_rule_field_is_set_through_the_api(admin_api, tier, tenant_a):
    dep = {"name": "gpu-a", "model": MODEL, "upstream_model": "SmolLM2-135M",
           "kind": "azure_openai", "base_url": "http://10.0.0.5:8000/v1", "api_version": "2025-01-01",
           "weight": 3, "max_concurrency": 7, "context_window": 4096, "enabled": False,
           "timeout_seconds": 9.5, "capabilities": ["code", "tools"], "quality": 0.5,
           "health_check": "none"}  # fmt: skip
    assert set(dep) == set(DEPLOYMENT_FIELDS)
    default = Deployment()
    assert [f for f in DEPLOYMENT_FIELDS if getattr(default, f) == dep[f]] == []
    r = admin_api.post("/api/v1/deployments/", dep | {"api_key": "sk-x"}, format="json")
    assert r.status_code == 201, r.content
    stored = Deployment.objects.get(name="gpu-a")
    assert {f: getattr(stored, f) for f in DEPLOYMENT_FIELDS} == dep

    rule = {"position": 5, "name": "every-field", "enabled": False, "tier": "standard",
            "tenant": "acme", "requested_models": ["auto"], "min_prompt_tokens": 10,
            "max_prompt_tokens": 900, "task_class": "code", "metadata_key": "team",
            "metadata_value": "search", "target": MODEL}  # fmt: skip
    assert set(rule) == set(RULE_FIELDS)
    r = admin_api.post("/api/v1/routing-rules/", rule, format="json")
    assert r.status_code == 201, r.content
    stored = RoutingRule.objects.get(name="every-field")
    shown = {f: getattr(stored, f) for f in RULE_FIELDS} | {"tier": stored.tier.name,
                                                            "tenant": stored.tenant.slug}  # fmt: skip
    assert shown == rule

    group = {"name": "fast", "strategy": "cheapest", "description": "the quick ones",
             "members": ["gpu-a"]}  # fmt: skip
    assert set(GROUP_FIELDS) < set(group)
    r = admin_api.post("/api/v1/model-groups/", group, format="json")
    assert r.status_code == 201, r.content
    assert {k: r.json()[k] for k in group} == group


def test_prices_and_terms_take_every_rate(admin_api, tenant_a):
    rates = dict(zip(PRICE_FIELDS, (100_000, 400_000, 50_000), strict=True))
    r = admin_api.post("/api/v1/prices/", {"model": MODEL, "deployment": "gpu-a", **rates,
                       "effective_from": "2099-01-01T00:00:00Z"}, format="json")  # fmt: skip
    assert r.status_code == 201, r.content
    price = ModelPrice.objects.get()
    assert {f: getattr(price, f) for f in PRICE_FIELDS} == rates
    assert (price.deployment, price.effective_from.year) == ("gpu-a", 2099)
    r = admin_api.post("/api/v1/tenant-terms/", {"tenant": "acme", "model": MODEL,
                       "discount_bp": 1000, **rates}, format="json")  # fmt: skip
    assert r.status_code == 201, r.content
    terms = TenantPriceOverride.objects.get()
    assert {f: getattr(terms, f) for f in PRICE_FIELDS} == rates
    assert (terms.model, terms.discount_bp) == (MODEL, 1000)


def test_alert_contacts_are_set_through_the_api_as_in_the_console(admin_api, alice, tenant_a):
    url = "/api/v1/alert-contacts/acme/"
    assert admin_api.get(url).status_code == 404
    body = {"tenant": "acme", "alert_emails": " a@acme.test,b@acme.test ,",
            "webhook_url": "https://hooks.acme.test/billing"}  # fmt: skip
    r = admin_api.post("/api/v1/alert-contacts/", body, format="json")
    assert r.status_code == 201, r.content
    assert r.json() == {"tenant": "acme", "alert_emails": "a@acme.test, b@acme.test",
                        "webhook_url": "https://hooks.acme.test/billing"}  # fmt: skip
    profile = BillingProfile.objects.get(tenant=tenant_a)
    assert (profile.alert_emails, profile.webhook_url) == (
        "a@acme.test, b@acme.test",
        "https://hooks.acme.test/billing",
    )
    assert admin_api.get(url).json()["alert_emails"] == "a@acme.test, b@acme.test"
    assert [p["tenant"] for p in admin_api.get("/api/v1/alert-contacts/").json()["results"]] == [
        "acme"
    ]

    r = admin_api.patch(url, {"webhook_url": ""}, format="json")
    assert r.status_code == 200, r.content
    profile.refresh_from_db()
    assert (profile.alert_emails, profile.webhook_url) == ("a@acme.test, b@acme.test", "")
    r = admin_api.post("/api/v1/alert-contacts/", {"tenant": "acme", "alert_emails": "c@acme.test"},
                       format="json")  # fmt: skip
    assert r.status_code == 201
    profile.refresh_from_db()
    assert (profile.alert_emails, profile.webhook_url) == ("c@acme.test", "")
    assert BillingProfile.objects.count() == 1

    # The console's checks: each address, the URL; the tenant is the URL's.
    r = admin_api.patch(url, {"alert_emails": "ok@acme.test, nope"}, format="json")
    assert r.status_code == 400 and "alert_emails" in r.json()["errors"]
    r = admin_api.patch(url, {"webhook_url": "not a url"}, format="json")
    assert r.status_code == 400 and "webhook_url" in r.json()["errors"]
    Tenant.objects.create(name="Bravo", slug="bravo", tier=tenant_a.tier)
    r = admin_api.patch(url, {"tenant": "bravo"}, format="json")
    assert r.status_code == 400 and "tenant" in r.json()["errors"]
    assert not BillingProfile.objects.filter(tenant__slug="bravo").exists()
    actions = list(
        AuditEvent.objects.filter(actor=alice, action="billing_profile.update")
        .order_by("id")
        .values_list("after", flat=True)
    )
    assert len(actions) == 3 and actions[-1] == {"alert_emails": "c@acme.test", "webhook_url": ""}


def test_alert_contacts_viewers_read_others_are_refused(admin_api, viewer_api, charlie, tenant_a):
    admin_api.post("/api/v1/alert-contacts/", {"tenant": "acme", "alert_emails": "a@acme.test"},
                   format="json")  # fmt: skip
    assert viewer_api.get("/api/v1/alert-contacts/acme/").status_code == 200
    r = viewer_api.patch("/api/v1/alert-contacts/acme/", {"alert_emails": ""}, format="json")
    assert r.status_code == 403 and r["Content-Type"] == "application/problem+json"
    assert client_for(charlie).get("/api/v1/alert-contacts/").status_code == 403
    assert client_for(None).get("/api/v1/alert-contacts/").status_code == 401
    assert BillingProfile.objects.get().alert_emails == "a@acme.test"
