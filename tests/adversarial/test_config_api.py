"""Attacks on config as code: the management API's serving and pricing endpoints,
apply_config's YAML, and the names both take.

- Hostile names (NUL, unpaired surrogates, control characters, newlines) through every
  service, every new endpoint and a YAML file: a field error, never a database ValueError
  (a 500), nothing stored, nothing audited.
- The same characters in URL paths and query parameters: 404 / 400 in the problem format.
- Names that look like paths ("a/b", "..", "x.json") never reach another row or route.
- The upstream API key never comes back: not in the API, the audit log, the export, the
  apply_config diff, the schema.
- Viewers, outsiders and anonymous callers change nothing.
- YAML that attacks the loader (python tags, alias bombs, deep nesting, huge files) or the
  terminal (escape sequences in names) is refused with a reason, quickly.
- ``/v1/models`` lists nothing a key cannot call, and refuses the rest in OpenAI's format.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from billing import services as billing_services
from billing.models import ModelPrice, TenantPriceOverride
from serving.models import Deployment, ModelGroup, RoutingRule
from serving.routing.deployments import deployment_set
from serving.routing.services import model_group_set, routing_rule_set
from tenants import services
from tenants.models import AuditEvent, Tenant, Tier
from tests.serving.api.conftest import client_for

MODEL = "smollm2-135m-instruct"
JSON = "application/json"
SECRET = "sk-live-very-secret-0123456789"
HOSTILE = ["nul\x00name", "sur\ud800rogate", "new\nline", "tab\tname", "esc\x1b[2J", "bell\x07"]


@pytest.fixture
def admin_api(alice):
    return client_for(alice)


def _field_error(response, field: str) -> None:
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert field in response.json()["errors"], response.json()


@pytest.mark.parametrize("bad", HOSTILE)
def test_services_refuse_hostile_names_with_a_field_error(db, tier, bad):
    calls = [
        ("name", lambda: services.tier_create(name=bad)),
        ("name", lambda: services.tier_update(tier=tier, name=bad)),
        ("name", lambda: services.tenant_create(name=bad, slug="s", tier=tier)),
        ("name", lambda: deployment_set(name=bad, model=MODEL, base_url="http://localhost:9/v1")),
        ("model", lambda: deployment_set(name="d", model=bad, base_url="http://localhost:9/v1")),
        ("name", lambda: model_group_set(name=bad, strategy="weighted")),
        ("name", lambda: routing_rule_set(name=bad, target=MODEL)),
        ("target", lambda: routing_rule_set(name="r", target=bad)),
        ("model", lambda: billing_services.price_set(model=bad, input_micro_usd_per_mtok=1,
                                                     output_micro_usd_per_mtok=1)),
        ("model", lambda: billing_services.tenant_terms_set(
            tenant=services.tenant_create(name="T", slug=f"t{HOSTILE.index(bad)}", tier=tier),
            model=bad, discount_bp=1)),
    ]  # fmt: skip
    audits = AuditEvent.objects.count()
    for field, call in calls:
        with pytest.raises(ValidationError) as err:
            call()
        assert field in err.value.message_dict, (field, err.value)
    assert not Tier.objects.exclude(pk=tier.pk).exists()
    assert not Deployment.objects.exists() and not ModelGroup.objects.exists()
    assert not RoutingRule.objects.exists() and not ModelPrice.objects.exists()
    assert not TenantPriceOverride.objects.exists()
    assert AuditEvent.objects.filter(action="tenant.create").count() == 1
    assert AuditEvent.objects.count() == audits + 1  # only the tenant the terms were for


def test_nul_in_free_text_is_refused_too(db, tier):
    with pytest.raises(ValidationError) as err:
        services.tier_update(tier=tier, description="a\x00b", blocklist=["ok", "b\x00d"])
    assert set(err.value.message_dict) == {"description", "blocklist"}
    # Tabs and newlines are fine in free text; only names refuse them.
    assert services.tier_update(tier=tier, description="two\nlines").description == "two\nlines"


@pytest.mark.parametrize("bad", HOSTILE)
def test_every_endpoint_refuses_hostile_names(admin_api, tenant_a, bad):
    deployment = {"model": MODEL, "base_url": "http://localhost:9/v1"}
    price = {"input_micro_usd_per_mtok": 1, "output_micro_usd_per_mtok": 1}
    cases = [
        ("tiers", {"name": bad}, "name"),
        ("tenants", {"name": bad, "slug": "x", "tier": "standard"}, "name"),
        ("deployments", deployment | {"name": "d", "model": bad}, "model"),
        ("deployments", deployment | {"name": "d", "upstream_model": bad}, "upstream_model"),
        ("model-groups", {"name": bad}, "name"),
        ("model-groups", {"name": "g", "members": [bad]}, "members"),
        ("routing-rules", {"name": "r", "target": bad}, "target"),
        ("routing-rules", {"name": "r", "target": MODEL, "tier": bad}, "tier"),
        ("prices", price | {"model": bad}, "model"),
        ("prices", price | {"model": MODEL, "deployment": bad}, "deployment"),
        ("tenant-terms", {"tenant": "acme", "model": bad}, "model"),
        ("tenant-terms", {"tenant": bad}, "tenant"),
    ]
    audits = AuditEvent.objects.count()
    for endpoint, body, field in cases:
        # Sent as a client would: JSON text, a lone surrogate as its \ud800 escape.
        r = admin_api.post(f"/api/v1/{endpoint}/", json.dumps(body), content_type=JSON)
        _field_error(r, field)
    assert AuditEvent.objects.count() == audits
    assert Tier.objects.count() == 1 and Tenant.objects.count() == 1
    assert not Deployment.objects.exists() and not ModelGroup.objects.exists()
    assert not ModelPrice.objects.exists() and not TenantPriceOverride.objects.exists()


def test_hostile_paths_and_queries_are_404_and_400_not_500(admin_api, tenant_a):
    for path in ("tiers/a%00b/", "tenants/a%00/", "deployments/%00/", "model-groups/x%0Ay/",
                 "routing-rules/%1b/", "tiers/%ED%A0%80/", "keys/%00/", "budgets/1%00/"):  # fmt: skip
        r = admin_api.get(f"/api/v1/{path}")
        assert r.status_code == 404, (path, r.status_code)
        assert r["Content-Type"] == "application/problem+json"
    for query in ("tenants/?q=%00", "tenants/?tier=%00", "keys/?tenant=%00", "audit/?q=a%00",
                  "deployments/?model=%00", "prices/?model=%00", "prices/?deployment=%00",
                  "tenant-terms/?tenant=%00", "budgets/?tenant=%0A", "tiers/?x%00=1"):  # fmt: skip
        r = admin_api.get(f"/api/v1/{query}")
        assert r.status_code == 400, (query, r.status_code)
        assert r["Content-Type"] == "application/problem+json"


def test_path_like_names_never_reach_another_row_or_route(admin_api):
    for name in ("keys", "..", "a", "a/b", "x.json"):
        assert admin_api.post("/api/v1/tiers/", {"name": name, "description": name},
                              format="json").status_code == 201  # fmt: skip
    for name in ("keys", "..", "a", "a/b", "x.json"):
        r = admin_api.get(f"/api/v1/tiers/{quote(name, safe='')}/")
        assert r.status_code == 200 and r.json()["description"] == name
    # A traversal is a tier name, not a way out of /tiers/.
    assert admin_api.get("/api/v1/tiers/..%2Fkeys/").status_code == 404
    assert admin_api.get("/api/v1/tiers/a%2F..%2Fa/").status_code == 404
    assert admin_api.get("/api/v1/tiers/x.json/").json()["name"] == "x.json"


def test_the_upstream_key_never_comes_back(admin_api, tmp_path, capsys):
    r = admin_api.post("/api/v1/deployments/", {"name": "paid", "model": MODEL,
                       "base_url": "https://api.example.com/v1", "api_key": SECRET},
                       format="json")  # fmt: skip
    assert r.status_code == 201
    admin_api.patch("/api/v1/deployments/paid/", {"api_key": SECRET + "2"}, format="json")
    seen = [
        r.content,
        admin_api.get("/api/v1/deployments/").content,
        admin_api.get("/api/v1/deployments/paid/").content,
        admin_api.get("/api/v1/audit/?q=paid").content,
        admin_api.get("/api/schema/").content,
        str(list(AuditEvent.objects.values_list("before", "after", "object_repr"))).encode(),
    ]
    out = io.StringIO()
    call_command("export_config", stdout=out)
    seen.append(out.getvalue().encode())
    path = tmp_path / "c.yaml"
    path.write_text(out.getvalue().replace("  health_check: health\n",
                                           "  health_check: health\n  api_key_env: PAID_KEY\n"))  # fmt: skip
    import os

    os.environ["PAID_KEY"] = SECRET + "3"
    try:
        for args in ([str(path), "--dry-run"], [str(path)]):
            out = io.StringIO()
            call_command("apply_config", *args, stdout=out)
            seen.append(out.getvalue().encode())
    finally:
        del os.environ["PAID_KEY"]
    seen.append(capsys.readouterr().err.encode())
    for blob in seen:
        assert SECRET.encode() not in blob
    assert b"(from $PAID_KEY)" in seen[-2]
    body = admin_api.get("/api/v1/deployments/paid/").json()
    assert body["has_api_key"] is True and "api_key" not in body


def test_viewers_outsiders_and_anonymous_change_nothing(bob, charlie, tier, tenant_a):
    deployment_set(name="d", model=MODEL, base_url="http://localhost:9/v1", api_key=SECRET)
    model_group_set(name="g", strategy="weighted", members=["d"])
    routing_rule_set(name="r", target="g")
    price = billing_services.price_set(model=MODEL, input_micro_usd_per_mtok=1,
                                       output_micro_usd_per_mtok=1)  # fmt: skip
    audits = AuditEvent.objects.count()
    for client, status in ((client_for(bob), 403), (client_for(charlie), 403),
                           (client_for(None), 401)):  # fmt: skip
        for url in ("deployments/d/", "model-groups/g/", "routing-rules/r/", "tiers/standard/"):
            assert client.patch(f"/api/v1/{url}", {"weight": 9, "target": MODEL},
                                format="json").status_code == status  # fmt: skip
            assert client.delete(f"/api/v1/{url}").status_code == status
        assert client.post("/api/v1/prices/", {"model": MODEL, "input_micro_usd_per_mtok": 0,
                           "output_micro_usd_per_mtok": 0}, format="json").status_code == status  # fmt: skip
        assert client.post("/api/v1/tenant-terms/", {"tenant": "acme", "discount_bp": 10_000},
                           format="json").status_code == status  # fmt: skip
        if status == 403 and client is not None:
            assert SECRET not in client.get("/api/v1/deployments/d/").content.decode()
    assert AuditEvent.objects.count() == audits
    assert Deployment.objects.get(name="d").weight == 1
    assert RoutingRule.objects.get(name="r").target == "g"
    assert list(ModelPrice.objects.values_list("pk", flat=True)) == [price.pk]
    assert not TenantPriceOverride.objects.exists()


def test_an_oversized_upstream_key_is_refused(admin_api):
    r = admin_api.post("/api/v1/deployments/", {"name": "d", "model": MODEL,
                       "base_url": "http://localhost:9/v1", "api_key": "k" * 100_000}, format="json")  # fmt: skip
    _field_error(r, "api_key")
    assert not Deployment.objects.exists()


def _apply(tmp_path: Path, text: str, *args: str) -> str:
    path = tmp_path / "attack.yaml"
    path.write_text(text)
    out = io.StringIO()
    call_command("apply_config", str(path), *args, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tiers: [{name: x, description: !!python/object/apply:os.system ['touch /tmp/sy-pwned']}]",
         "Not valid YAML"),
        ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
         "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\ntiers: [{name: t, blocklist: [*c, *c, *c]}]",
         "aliases"),
        ("tiers: " + "[" * 50_000 + "]" * 50_000, "nests too deeply"),
        ("tiers: [{name: x}]\n" + "#" * (11 * 1024 * 1024), "over 10 MB"),
        ("- just\n- a list\n", "must be a mapping"),
        ("tiers: [{name: x, requests_per_minute: 99999999999999999999}]", "requests_per_minute"),
        ("tiers: [{name: \"x\\0y\"}]", "NUL"),
        ("routing_rules: [{name: r, target: smollm2-135m-instruct, tier: \"a\\0\"}]", "NUL"),
        ("prices: [{model: \"m\\0\", input_micro_usd_per_mtok: 1, output_micro_usd_per_mtok: 1}]",
         "NUL"),
        ("prices: [{model: m, input_micro_usd_per_mtok: 1, output_micro_usd_per_mtok: 1, "
         "effective_from: '2030-13-45T99:00:00Z'}]", "not a date and time"),
        ("prices: [{model: m, input_micro_usd_per_mtok: 0.5, output_micro_usd_per_mtok: 1}]",
         "whole number"),
    ],
)  # fmt: skip
def test_hostile_yaml_is_refused_quickly_with_a_reason(db, tmp_path, text, message):
    started = time.monotonic()
    with pytest.raises(CommandError) as err:
        _apply(tmp_path, text)
    assert message in str(err.value)
    assert time.monotonic() - started < 10
    assert not Path("/tmp/sy-pwned").exists()
    assert not AuditEvent.objects.exists() and not Tier.objects.exists()


def test_names_cannot_drive_the_terminal(db, tmp_path):
    with pytest.raises(CommandError) as err:
        _apply(tmp_path, 'tiers: [{name: "evil\\e[2J\\n+ tier forged"}]')
    text = str(err.value)
    assert "\x1b" not in text and "\n" not in text
    assert "\\x1b[2J\\n+ tier forged" in text
    out = _apply(tmp_path, 'tiers: [{name: ok, description: "\\e]0;pwned\\a"}]', "--dry-run")
    assert "\x1b" not in out and "\x07" not in out


def test_v1_models_lists_only_callable_names_and_refuses_the_rest(make_caller):
    caller = make_caller(allowed_models=[], default_model="")
    headers = {"Authorization": f"Bearer {caller.key}"}
    listed = httpx.get(f"{caller.base_url}/v1/models", headers=headers, timeout=10).json()
    names = [m["id"] for m in listed["data"]]
    assert "auto" not in names  # nothing routes it for this tier
    for name in ("auto", "gpt-4o", "a%00b", "x%0Ay", "..%2Fmodels"):
        r = httpx.get(f"{caller.base_url}/v1/models/{name}", headers=headers, timeout=10)
        assert r.status_code == 404, (name, r.status_code)
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["code"] in ("model_not_found", "unknown_url")
    for name in names:
        r = httpx.get(f"{caller.base_url}/v1/models/{name}", headers=headers, timeout=10)
        assert r.status_code == 200 and r.json()["id"] == name
