from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tenants import auth, services
from tenants.auth import AuthFailure, authenticate_key


@pytest.fixture(autouse=True)
def _fresh_auth_cache():
    auth.clear_cache()
    yield
    auth.clear_cache()


def test_new_key_authenticates_to_its_tenant(tenant_a, alice):
    key, raw = services.api_key_create(tenant=tenant_a, name="ci", actor=alice)
    assert raw.startswith("sy-" + key.prefix + "_")
    ctx = authenticate_key(raw)
    assert ctx.tenant == tenant_a and ctx.key == key and ctx.tier == tenant_a.tier


def test_key_is_stored_only_as_a_hash(tenant_a):
    key, raw = services.api_key_create(tenant=tenant_a, name="ci")
    key.refresh_from_db()
    assert raw not in key.key_hash and len(key.key_hash) == 64
    assert all(raw not in str(v) for v in vars(key).values())


def test_lookup_is_one_query(tenant_a):
    _, raw = services.api_key_create(tenant=tenant_a, name="ci")
    authenticate_key(raw)  # first use also stamps last_used
    auth.clear_cache()
    with CaptureQueriesContext(connection) as queries:
        authenticate_key(raw)
    assert len(queries) == 1
    assert "key_hash" in queries[0]["sql"]


def test_revoked_key_never_authenticates(tenant_a, alice):
    key, raw = services.api_key_create(tenant=tenant_a, name="ci")
    authenticate_key(raw)
    services.api_key_revoke(key=key, actor=alice)
    auth.clear_cache()  # the on_commit invalidation does not run inside a test transaction
    with pytest.raises(AuthFailure) as err:
        authenticate_key(raw)
    assert err.value.reason == "revoked"


def test_expired_key_never_authenticates(tenant_a):
    key, raw = services.api_key_create(
        tenant=tenant_a, name="ci", expires=timezone.now() + timedelta(hours=1)
    )
    key.expires = timezone.now() - timedelta(seconds=1)
    key.save()
    with pytest.raises(AuthFailure) as err:
        authenticate_key(raw)
    assert err.value.reason == "expired"


def test_suspended_tenant_keys_stop_working_and_data_is_kept(tenant_a, alice):
    key, raw = services.api_key_create(tenant=tenant_a, name="ci")
    services.tenant_suspend(tenant=tenant_a, actor=alice)
    with pytest.raises(AuthFailure) as err:
        authenticate_key(raw)
    assert err.value.reason == "tenant_suspended"
    key.refresh_from_db()
    assert key.revoked is None
    services.tenant_activate(tenant=tenant_a, actor=alice)
    auth.clear_cache()
    assert authenticate_key(raw).tenant == tenant_a


@pytest.mark.parametrize(
    "raw", [None, "", "sk-123", "sy-short", "sy-" + "a" * 49, "sy-AAAAAAAA_" + "!" * 40]
)
def test_malformed_keys_are_refused_without_a_query(raw, db):
    with CaptureQueriesContext(connection) as queries, pytest.raises(AuthFailure):
        authenticate_key(raw)
    assert len(queries) == 0


def test_unknown_key_is_invalid(db):
    with pytest.raises(AuthFailure) as err:
        authenticate_key("sy-AAAAAAAA_" + "b" * 40)
    assert err.value.reason == "invalid"
