"""Price lists per model and deployment, versioned by effective-from time, with tenant
overrides (committed-use rates, discounts) applied on top."""

import datetime as dt

from billing import pricing
from billing.models import ModelPrice, TenantPriceOverride
from billing.pricing import price_at

M = "smollm2-135m-instruct"
T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def list_price(deployment="", at=T0, inp=100_000, out=400_000, cached=None):
    pricing.clear_cache()  # gateways cache the tables for a couple of seconds
    return ModelPrice.objects.create(
        model=M, deployment=deployment, effective_from=at, input_micro_usd_per_mtok=inp,
        output_micro_usd_per_mtok=out, cached_input_micro_usd_per_mtok=cached,
    )  # fmt: skip


def test_no_price_list_is_free(db):
    p = price_at(M, T0)
    assert (p.input_per_mtok, p.output_per_mtok, p.price_id) == (0, 0, None)
    assert p.cost(1000, 1000) == 0


def test_request_is_priced_by_the_list_in_force_when_it_started(db):
    old = list_price(at=T0)
    new = list_price(at=T0 + HOUR, inp=200_000, out=800_000)
    assert price_at(M, T0 + HOUR - dt.timedelta(microseconds=1)).price_id == old.pk
    assert price_at(M, T0 + HOUR).price_id == new.pk
    assert price_at(M, T0 - HOUR).price_id is None
    # the current signature (model, at) keeps working and the old keyword form does too
    assert price_at(M, at=T0 + 2 * HOUR).input_per_mtok == 200_000


def test_deployment_list_wins_and_falls_back_to_the_model_list(db):
    list_price(at=T0)
    dep = list_price(deployment="gpu-east", at=T0, inp=50_000, out=150_000, cached=10_000)
    assert price_at(M, T0, deployment="gpu-east").price_id == dep.pk
    p = price_at(M, T0, deployment="gpu-east")
    assert (p.input_per_mtok, p.output_per_mtok, p.cached_input_per_mtok) == (
        50_000,
        150_000,
        10_000,
    )
    other = price_at(M, T0, deployment="cpu-west")
    assert (other.input_per_mtok, other.output_per_mtok) == (100_000, 400_000)
    # a deployment list that starts later does not apply before it starts
    list_price(deployment="cpu-west", at=T0 + HOUR, inp=1, out=2)
    assert price_at(M, T0 + HOUR / 2, deployment="cpu-west").input_per_mtok == 100_000
    assert price_at(M, T0 + HOUR, deployment="cpu-west").input_per_mtok == 1


def test_cached_input_defaults_to_the_input_price_and_is_charged_instead(db):
    list_price(at=T0, inp=1_000_000, out=2_000_000)
    p = price_at(M, T0)
    assert p.cached_input_per_mtok == 1_000_000
    list_price(at=T0 + HOUR, inp=1_000_000, out=2_000_000, cached=250_000)
    p = price_at(M, T0 + HOUR)
    # 600 fresh input at $1/Mtok + 400 cached at $0.25/Mtok + 10 output at $2/Mtok
    assert p.cost(1000, 10, cached_tokens=400) == 600 + 100 + 20


def test_tenant_discount_and_committed_rates_apply_on_top(tenant_a, tenant_b):
    list_price(at=T0, inp=100_000, out=400_000, cached=50_000)
    TenantPriceOverride.objects.create(tenant=tenant_a, discount_bp=1500, effective_from=T0)
    p = price_at(M, T0, tenant_id=tenant_a.pk)
    assert (p.input_per_mtok, p.output_per_mtok, p.cached_input_per_mtok) == (
        85_000,
        340_000,
        42_500,
    )
    # tenant B has no terms: list prices
    assert price_at(M, T0, tenant_id=tenant_b.pk).output_per_mtok == 400_000
    # a committed-use rate for this model replaces the list rate; the discount still applies
    pricing.clear_cache()
    o = TenantPriceOverride.objects.create(
        tenant=tenant_a, model=M, output_micro_usd_per_mtok=300_000, discount_bp=1000,
        effective_from=T0 + HOUR,
    )  # fmt: skip
    p = price_at(M, T0 + HOUR, tenant_id=tenant_a.pk)
    assert (p.input_per_mtok, p.output_per_mtok, p.override_id) == (90_000, 270_000, o.pk)
    # before the new terms started, the old ones hold
    assert price_at(M, T0 + HOUR / 2, tenant_id=tenant_a.pk).output_per_mtok == 340_000


def test_discount_rounds_half_up_to_a_whole_micro_dollar_per_mtok(tenant_a):
    list_price(at=T0, inp=3, out=5)
    TenantPriceOverride.objects.create(tenant=tenant_a, discount_bp=5000, effective_from=T0)
    p = price_at(M, T0, tenant_id=tenant_a.pk)
    assert (p.input_per_mtok, p.output_per_mtok) == (2, 3)


def test_cached_price_reads_each_cache_once_and_never_queries(tenant_a, django_assert_num_queries):
    """What the gateway's event loop prices with: the caches alone (None when one is stale,
    then a thread queries), never a query of its own, whatever goes stale meanwhile."""
    list_price(at=T0, inp=100_000, out=400_000)
    TenantPriceOverride.objects.create(tenant=tenant_a, discount_bp=1000, effective_from=T0)
    pricing.clear_cache()
    with django_assert_num_queries(0):
        assert pricing.cached_price_at(M, T0, tenant_id=tenant_a.pk) is None
    warm = price_at(M, T0, deployment="d", tenant_id=tenant_a.pk)
    with django_assert_num_queries(0):
        assert pricing.cached_price_at(M, T0, deployment="d", tenant_id=tenant_a.pk) == warm
        pricing._override_cache.pop(tenant_a.pk)  # the tenant's terms go stale
        assert pricing.cached_price_at(M, T0, tenant_id=tenant_a.pk) is None
        assert pricing.cached_price_at(M, T0).output_per_mtok == 400_000  # no terms asked
