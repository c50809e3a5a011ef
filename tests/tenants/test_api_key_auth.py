import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from switchyard.ttl_cache import LruTtlCache
from tenants import auth, keys, services
from tenants.auth import AuthFailure, authenticate_key
from tenants.auth_throttle import FailureThrottle, address_key


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


def _random_key() -> str:
    raw, _ = keys.generate_key()
    return raw


def test_a_flood_of_random_keys_keeps_the_cache_bounded(tenant_a, monkeypatch):
    # SWITCHYARD_AUTH_CACHE_SIZE sized down, so the flood is quick (each key is a real query).
    monkeypatch.setattr(auth, "_valid", LruTtlCache(auth.CACHE_SECONDS, 1000))
    monkeypatch.setattr(auth, "_refused", LruTtlCache(auth.CACHE_SECONDS, 100))
    _, raw = services.api_key_create(tenant=tenant_a, name="ci")
    authenticate_key(raw)
    flood = 3 * auth._refused.maxsize
    for _ in range(flood):
        with pytest.raises(AuthFailure):
            authenticate_key(_random_key())
    usable, refused = auth.cache_size()
    assert refused == auth._refused.maxsize < flood
    assert usable == 1
    # Refusals live apart: the working key was not pushed out.
    assert auth._valid.seen(keys.hash_key(raw))


def test_failures_from_one_address_are_throttled_without_queries(tenant_a):
    _, raw = services.api_key_create(tenant=tenant_a, name="ci")
    authenticate_key(raw)
    limit = auth.throttle.limit
    for _ in range(limit):
        with pytest.raises(AuthFailure) as err:
            authenticate_key(_random_key(), client="203.0.113.7")
        assert err.value.reason == "invalid"
    with CaptureQueriesContext(connection) as queries, pytest.raises(AuthFailure) as err:
        authenticate_key(_random_key(), client="203.0.113.7")
    assert len(queries) == 0
    assert err.value.reason == "throttled"
    assert 1 <= err.value.retry_after <= auth.throttle.window
    # A key seen usable still works from there, also once its cached answer is stale (then
    # it is looked up again); other addresses are untouched.
    assert authenticate_key(raw, client="203.0.113.7").tenant == tenant_a
    time.sleep(auth.CACHE_SECONDS + 0.05)
    with CaptureQueriesContext(connection) as queries:
        assert authenticate_key(raw, client="203.0.113.7").tenant == tenant_a
    assert len(queries) == 1
    with pytest.raises(AuthFailure) as err:
        authenticate_key(_random_key(), client="203.0.113.8")
    assert err.value.reason == "invalid"


def test_throttle_window_ends_and_memory_is_bounded():
    throttle = FailureThrottle(limit=2, window=0.2, max_addresses=50)
    throttle.failed("198.51.100.1")
    throttle.failed("198.51.100.1")
    assert throttle.retry_after("198.51.100.1") == 1
    time.sleep(0.25)
    assert throttle.retry_after("198.51.100.1") is None
    for i in range(500):
        throttle.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle) == 50


def test_ipv6_addresses_are_throttled_per_64():
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("::ffff:192.0.2.5") == "192.0.2.5"
    assert address_key(None) is None


def test_many_keys_are_rechecked_in_one_query(tenant_a, tenant_b):
    raws = [services.api_key_create(tenant=t, name="ci")[1] for t in (tenant_a, tenant_b)]
    hashes = [keys.hash_key(r) for r in raws] + [keys.hash_key(_random_key())]
    auth.check_hashes(hashes)  # first use stamps last_used
    auth.clear_cache()
    with CaptureQueriesContext(connection) as queries:
        results = auth.check_hashes(hashes)
    assert len(queries) == 1
    assert [type(results[h]).__name__ for h in hashes] == [
        "AuthContext",
        "AuthContext",
        "AuthFailure",
    ]
    with CaptureQueriesContext(connection) as queries:
        auth.check_hashes(hashes)  # all fresh in the cache
    assert len(queries) == 0


def test_an_expiry_that_passes_while_cached_takes_effect(tenant_a):
    _, raw = services.api_key_create(
        tenant=tenant_a, name="ci", expires=timezone.now() + timedelta(seconds=0.3)
    )
    assert authenticate_key(raw).tenant == tenant_a
    time.sleep(0.35)
    with pytest.raises(AuthFailure) as err:
        authenticate_key(raw)  # the cached answer is under a second old
    assert err.value.reason == "expired"
