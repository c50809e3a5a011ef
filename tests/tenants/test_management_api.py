"""The management API: same permissions and validation as the console."""

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from billing.models import UsageRecord
from tenants import auth
from tenants.models import AuditEvent, Tenant


def client_for(user) -> APIClient:
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.fixture
def admin_api(alice):
    return client_for(alice)


@pytest.fixture
def viewer_api(bob):
    return client_for(bob)


def test_admin_creates_tier_tenant_key_and_budget(admin_api, alice):
    r = admin_api.post(
        "/api/v1/tiers/",
        {"name": "pro", "requests_per_minute": 10, "allowed_models": ["smollm2-135m-instruct"]},
        format="json",
    )
    assert r.status_code == 201, r.content
    r = admin_api.post(
        "/api/v1/tenants/", {"name": "Acme", "slug": "acme", "tier": "pro"}, format="json"
    )
    assert r.status_code == 201, r.content
    r = admin_api.post("/api/v1/keys/", {"tenant": "acme", "name": "ci"}, format="json")
    assert r.status_code == 201
    raw = r.json()["key"]
    auth.clear_cache()
    assert auth.authenticate_key(raw).tenant.slug == "acme"
    assert raw not in admin_api.get("/api/v1/keys/").content.decode()
    r = admin_api.post(
        "/api/v1/budgets/",
        {"tenant": "acme", "period": "monthly", "limit_micro_usd": 5_000_000, "hard": True},
        format="json",
    )
    assert r.status_code == 201, r.content
    assert AuditEvent.objects.filter(actor=alice).count() == 4


def test_viewer_reads_but_cannot_write(viewer_api, tenant_a):
    assert viewer_api.get("/api/v1/tenants/").status_code == 200
    r = viewer_api.post("/api/v1/tenants/", {"name": "X", "slug": "x", "tier": "standard"})
    assert r.status_code == 403
    assert r["Content-Type"] == "application/problem+json"
    assert viewer_api.post(f"/api/v1/tenants/{tenant_a.slug}/suspend/").status_code == 403
    tenant_a.refresh_from_db()
    assert tenant_a.is_active and not Tenant.objects.filter(slug="x").exists()


def test_non_operators_and_anonymous_are_refused(charlie, tenant_a):
    assert client_for(charlie).get("/api/v1/tenants/").status_code == 403
    assert client_for(None).get("/api/v1/tenants/").status_code == 401


def test_validation_errors_name_the_field_in_problem_format(admin_api, tenant_a):
    r = admin_api.post(
        "/api/v1/tenants/", {"name": "Dup", "slug": "acme", "tier": "standard"}, format="json"
    )
    assert r.status_code == 400
    body = r.json()
    assert body["status"] == 400 and "slug" in body["errors"]
    r = admin_api.post(
        "/api/v1/tiers/", {"name": "bad", "allowed_models": ["gpt-9"]}, format="json"
    )
    assert r.status_code == 400 and "allowed_models" in r.json()["errors"]
    r = admin_api.post("/api/v1/tiers/", {"name": "neg", "tokens_per_minute": -5}, format="json")
    assert r.status_code == 400 and "tokens_per_minute" in r.json()["errors"]


def test_suspend_and_activate(admin_api, tenant_a):
    assert admin_api.post("/api/v1/tenants/acme/suspend/").json()["status"] == "suspended"
    assert admin_api.post("/api/v1/tenants/acme/activate/").json()["status"] == "active"


def test_delete_tenant_with_usage_is_refused_with_reason(admin_api, tenant_a):
    UsageRecord.objects.create(request_id="r1", tenant=tenant_a, model="m")
    r = admin_api.delete("/api/v1/tenants/acme/")
    assert r.status_code == 409
    assert r.json()["code"] == "tenant_has_usage" and "suspend" in r.json()["detail"]


def test_revoke_key(admin_api, tenant_a):
    raw = admin_api.post("/api/v1/keys/", {"tenant": "acme", "name": "ci"}, format="json").json()
    key_id = raw["api_key"]["id"]
    r = admin_api.post(f"/api/v1/keys/{key_id}/revoke/")
    assert r.status_code == 200 and r.json()["state"] == "revoked"
    auth.clear_cache()
    with pytest.raises(auth.AuthFailure):
        auth.authenticate_key(raw["key"])


def test_openapi_schema_and_docs_are_served(client, db):
    r = client.get("/api/schema/")
    assert r.status_code == 200 and b"/api/v1/tenants/" in r.content
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"cdn" not in docs.content.lower()
