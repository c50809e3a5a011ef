"""The management API's serving and pricing endpoints: deployments, model groups, routing rules,
prices and tenant terms, through the same services (validation, audit) as the console."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from billing.models import ModelPrice, TenantPriceOverride
from serving import secrets
from serving.models import Deployment, ModelGroup, RoutingRule
from tenants.api.serializers import TierSerializer
from tenants.models import AuditEvent, Tier
from tenants.services import TIER_FIELDS
from tests.serving.api.conftest import client_for

MODEL = "smollm2-135m-instruct"
UPSTREAM_KEY = "sk-upstream-secret-4242"
DEP = {"name": "gpu-a", "model": MODEL, "kind": "openai_compatible",
       "base_url": "http://10.0.0.5:8000/v1", "api_key": UPSTREAM_KEY}  # fmt: skip


def test_deployments_create_read_update_delete_with_a_write_only_key(admin_api, alice):
    r = admin_api.post("/api/v1/deployments/", DEP | {"capabilities": ["code"]}, format="json")
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["has_api_key"] is True and "api_key" not in body
    assert body["capabilities"] == ["code"] and body["weight"] == 1
    dep = Deployment.objects.get(name="gpu-a")
    assert secrets.decrypt(dep.api_key_encrypted) == UPSTREAM_KEY
    assert UPSTREAM_KEY not in dep.api_key_encrypted
    for url in ("/api/v1/deployments/", "/api/v1/deployments/gpu-a/", "/api/v1/audit/"):
        assert UPSTREAM_KEY not in admin_api.get(url).content.decode()

    r = admin_api.patch("/api/v1/deployments/gpu-a/", {"weight": 3}, format="json")
    assert r.status_code == 200 and r.json()["weight"] == 3 and r.json()["has_api_key"]
    r = admin_api.patch("/api/v1/deployments/gpu-a/", {"api_key": ""}, format="json")
    assert r.json()["has_api_key"] is False

    r = admin_api.post("/api/v1/deployments/", DEP, format="json")
    assert r.status_code == 400 and "name" in r.json()["errors"]
    r = admin_api.patch("/api/v1/deployments/gpu-a/", {"name": "gpu-b"}, format="json")
    assert r.status_code == 400 and "name" in r.json()["errors"]
    r = admin_api.patch("/api/v1/deployments/gpu-a/", {"base_url": "not a url"}, format="json")
    assert r.status_code == 400 and "base_url" in r.json()["errors"]

    assert admin_api.delete("/api/v1/deployments/gpu-a/").status_code == 204
    assert not Deployment.objects.filter(name="gpu-a").exists()
    actions = list(
        AuditEvent.objects.filter(actor=alice, object_type="deployment")
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert actions == ["deployment.create", "deployment.update", "deployment.update",
                       "deployment.delete"]  # fmt: skip


def test_groups_and_rules_are_validated_and_audited(admin_api, alice, tier):
    admin_api.post("/api/v1/deployments/", DEP, format="json")
    r = admin_api.post(
        "/api/v1/model-groups/",
        {"name": "fast", "strategy": "least_connections", "members": ["gpu-a"]},
        format="json",
    )
    assert r.status_code == 201, r.content
    assert r.json()["members"] == ["gpu-a"]
    r = admin_api.post("/api/v1/model-groups/", {"name": "x", "members": ["nope"]}, format="json")
    assert r.status_code == 400 and "members" in r.json()["errors"]
    r = admin_api.post("/api/v1/model-groups/", {"name": "auto"}, format="json")
    assert r.status_code == 400 and "name" in r.json()["errors"]
    r = admin_api.patch("/api/v1/model-groups/fast/", {"description": "quick"}, format="json")
    assert r.status_code == 200 and r.json()["members"] == ["gpu-a"]
    assert r.json()["strategy"] == "least_connections"

    rule = {"name": "code-first", "position": 5, "task_class": "code", "target": "fast",
            "tier": "standard"}  # fmt: skip
    r = admin_api.post("/api/v1/routing-rules/", rule, format="json")
    assert r.status_code == 201, r.content
    assert r.json()["tier"] == "standard" and r.json()["tenant"] is None
    assert RoutingRule.objects.get(name="code-first").tier == tier
    r = admin_api.post("/api/v1/routing-rules/", rule | {"name": "r2", "target": "gpt-9"},
                       format="json")  # fmt: skip
    assert r.status_code == 400 and "target" in r.json()["errors"]
    r = admin_api.post("/api/v1/routing-rules/", rule, format="json")
    assert r.status_code == 400 and "name" in r.json()["errors"]
    r = admin_api.patch("/api/v1/routing-rules/code-first/", {"min_prompt_tokens": 10,
                        "max_prompt_tokens": 5}, format="json")  # fmt: skip
    assert r.status_code == 400 and "max_prompt_tokens" in r.json()["errors"]
    r = admin_api.patch("/api/v1/routing-rules/code-first/", {"tier": None}, format="json")
    assert r.status_code == 200 and r.json()["tier"] is None

    assert admin_api.delete("/api/v1/routing-rules/code-first/").status_code == 204
    assert admin_api.delete("/api/v1/model-groups/fast/").status_code == 204
    assert not ModelGroup.objects.exists() and not RoutingRule.objects.exists()
    actions = set(AuditEvent.objects.filter(actor=alice).values_list("action", flat=True))
    assert {"model_group.create", "model_group.update", "model_group.delete",
            "routing_rule.create", "routing_rule.update", "routing_rule.delete"} <= actions  # fmt: skip


def test_prices_and_tenant_terms_are_history(admin_api, alice, tenant_a):
    price = {"model": MODEL, "input_micro_usd_per_mtok": 100_000,
             "output_micro_usd_per_mtok": 400_000}  # fmt: skip
    r = admin_api.post("/api/v1/prices/", price, format="json")
    assert r.status_code == 201, r.content
    pid = r.json()["id"]
    assert r.json()["deployment"] == "" and r.json()["cached_input_micro_usd_per_mtok"] is None
    later = "2099-01-01T00:00:00Z"
    r = admin_api.post("/api/v1/prices/", price | {"effective_from": later}, format="json")
    assert r.status_code == 201
    r = admin_api.post("/api/v1/prices/", price | {"effective_from": later}, format="json")
    assert r.status_code == 400 and "effective_from" in r.json()["errors"]
    r = admin_api.post("/api/v1/prices/", price | {"input_micro_usd_per_mtok": -1}, format="json")
    assert r.status_code == 400 and "input_micro_usd_per_mtok" in r.json()["errors"]
    listed = admin_api.get(f"/api/v1/prices/?model={MODEL}").json()["results"]
    assert len(listed) == 2
    assert admin_api.get("/api/v1/prices/?model=other").json()["results"] == []
    # History is never edited.
    assert admin_api.patch(f"/api/v1/prices/{pid}/", {"input_micro_usd_per_mtok": 1},
                           format="json").status_code == 405  # fmt: skip
    assert admin_api.delete(f"/api/v1/prices/{pid}/").status_code == 405
    assert ModelPrice.objects.get(pk=pid).input_micro_usd_per_mtok == 100_000

    r = admin_api.post("/api/v1/tenant-terms/", {"tenant": "acme", "discount_bp": 1500},
                       format="json")  # fmt: skip
    assert r.status_code == 201, r.content
    assert r.json()["tenant"] == "acme" and r.json()["model"] == ""
    r = admin_api.post("/api/v1/tenant-terms/", {"tenant": "acme", "discount_bp": 10_001},
                       format="json")  # fmt: skip
    assert r.status_code == 400 and "discount_bp" in r.json()["errors"]
    r = admin_api.post("/api/v1/tenant-terms/", {"tenant": "nobody", "discount_bp": 1},
                       format="json")  # fmt: skip
    assert r.status_code == 400 and "tenant" in r.json()["errors"]
    assert len(admin_api.get("/api/v1/tenant-terms/?tenant=acme").json()["results"]) == 1
    assert TenantPriceOverride.objects.get().discount_bp == 1500
    actions = list(AuditEvent.objects.filter(actor=alice).values_list("action", flat=True))
    assert sorted(actions) == ["price.create", "price.create", "price_override.create"]


ENDPOINTS = ["deployments", "model-groups", "routing-rules", "prices", "tenant-terms"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_viewers_read_others_are_refused(endpoint, viewer_api, charlie, tenant_a):
    assert viewer_api.get(f"/api/v1/{endpoint}/").status_code == 200
    r = viewer_api.post(f"/api/v1/{endpoint}/", {"name": "x", "model": MODEL}, format="json")
    assert r.status_code == 403 and r["Content-Type"] == "application/problem+json"
    assert client_for(charlie).get(f"/api/v1/{endpoint}/").status_code == 403
    assert client_for(None).get(f"/api/v1/{endpoint}/").status_code == 401
    assert (
        not AuditEvent.objects.exclude(action__startswith=("tier.", "tenant."))
        .filter(action__regex=r"^(deployment|model_group|routing_rule|price)")
        .exists()
    )


def test_tier_api_has_every_field_the_console_edits(admin_api):
    assert set(TIER_FIELDS) <= set(TierSerializer.Meta.fields)
    r = admin_api.post(
        "/api/v1/tiers/",
        {"name": "strict", "pii_redaction": False, "blocklist": ["forbidden"],
         "log_bodies": True, "quality_floor": 0.5, "request_budget_micro_usd": 2000},
        format="json",
    )  # fmt: skip
    assert r.status_code == 201, r.content
    tier = Tier.objects.get(name="strict")
    assert (tier.pii_redaction, tier.blocklist, tier.log_bodies) == (False, ["forbidden"], True)
    assert (tier.quality_floor, tier.request_budget_micro_usd) == (0.5, 2000)
    assert r.json()["blocklist"] == ["forbidden"]


@pytest.mark.parametrize("name", ["v1.2", "a/b", "with space", "ünï", "x.json", "..", "end/"])
def test_tiers_and_groups_with_any_name_are_reachable(name, admin_api):
    from urllib.parse import quote

    r = admin_api.post("/api/v1/tiers/", {"name": name}, format="json")
    assert r.status_code == 201, r.content
    url = f"/api/v1/tiers/{quote(name, safe='')}/"
    r = admin_api.get(url)
    assert r.status_code == 200 and r.json()["name"] == name
    r = admin_api.patch(url, {"requests_per_minute": 7}, format="json")
    assert r.status_code == 200 and Tier.objects.get(name=name).requests_per_minute == 7
    assert admin_api.delete(url).status_code == 204
    assert not Tier.objects.filter(name=name).exists()

    group = f"meta/{name}"
    assert (
        admin_api.post("/api/v1/model-groups/", {"name": group}, format="json").status_code == 201
    )
    r = admin_api.get(f"/api/v1/model-groups/{quote(group, safe='')}/")
    assert r.status_code == 200 and r.json()["name"] == group


def test_a_name_never_reaches_another_row(admin_api):
    for name in ("a", "a/b"):
        admin_api.post("/api/v1/tiers/", {"name": name, "description": name}, format="json")
    assert admin_api.get("/api/v1/tiers/a/").json()["description"] == "a"
    assert admin_api.get("/api/v1/tiers/a%2Fb/").json()["description"] == "a/b"
    assert admin_api.get("/api/v1/tiers/a%2Fc/").status_code == 404


def test_schema_describes_the_new_endpoints_without_warnings(db, capsys):
    out = io.StringIO()
    call_command("spectacular", "--validate", stdout=out)
    err = capsys.readouterr().err
    schema = out.getvalue()
    for path in ENDPOINTS:
        assert f"/api/v1/{path}/:" in schema
    assert "api_key:" in schema and "writeOnly: true" in schema
    mine = ("Deployment", "ModelGroup", "RoutingRule", "Price", "TenantTerms", "Tier")
    warnings = [line for line in err.splitlines() if any(m in line for m in mine)]
    assert warnings == []
