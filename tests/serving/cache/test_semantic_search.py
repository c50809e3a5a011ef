"""The semantic cache's lookup on the test database: every strategy finds the same nearest
entries within the filter, and never outside it."""

import datetime as dt

import pytest
from django.utils import timezone

from serving.cache import semantic
from serving.cache.models import SemanticCacheEntry
from tests.console.cache_data import add_entry, unit_vector


@pytest.fixture
def slices(tenant_a, tenant_b):
    for i in range(40):
        add_entry(tenant_a, f"a{i}", seed=i)
        add_entry(tenant_b, f"b{i}", seed=1000 + i)
    semantic._slices.clear()
    return tenant_a, tenant_b


def _search(tenant, vec, **kw):
    return semantic.search(
        scope=f"t:{tenant.pk}", model="smollm2-135m-instruct", context_hash="0" * 64,
        embedding=vec, **kw,
    )  # fmt: skip


@pytest.mark.parametrize(
    "kw",
    [
        {"strategy": "hnsw"},
        {"strategy": "hnsw", "iterative_scan": "off"},
        {"strategy": "exact"},
        {"strategy": "auto"},
    ],
)
def test_every_strategy_finds_the_nearest_entry_in_the_slice(slices, kw):
    tenant_a, _ = slices
    found = _search(tenant_a, unit_vector(7), **kw)
    assert found[0].prompt == "a7" and found[0].similarity == pytest.approx(1.0, abs=1e-5)
    assert len(found) == semantic.CANDIDATES
    assert all(c.prompt.startswith("a") for c in found)
    assert [c.similarity for c in found] == sorted((c.similarity for c in found), reverse=True)


def test_another_tenants_nearest_entry_is_never_returned(slices):
    tenant_a, tenant_b = slices
    for strategy in ("hnsw", "exact"):
        found = _search(tenant_a, unit_vector(1007), strategy=strategy)  # b7's vector
        assert found and all(c.prompt.startswith("a") for c in found)
        assert found[0].similarity < 0.5


def test_expired_entries_are_invisible(slices):
    tenant_a, _ = slices
    SemanticCacheEntry.objects.filter(prompt="a7").update(
        expires=timezone.now() - dt.timedelta(seconds=1)
    )
    for strategy in ("hnsw", "exact"):
        assert _search(tenant_a, unit_vector(7), strategy=strategy)[0].prompt != "a7"


def test_auto_counts_the_slice_once_and_remembers_it(slices):
    tenant_a, _ = slices
    assert semantic.slice_rows(f"t:{tenant_a.pk}", "smollm2-135m-instruct", "0" * 64) == 40
    add_entry(tenant_a, "a-late", seed=99)
    # Remembered for a while, not recounted on every lookup.
    assert semantic.slice_rows(f"t:{tenant_a.pk}", "smollm2-135m-instruct", "0" * 64) == 40


def test_unknown_strategy_is_refused(slices):
    with pytest.raises(ValueError):
        _search(slices[0], unit_vector(1), strategy="guess")


@pytest.mark.parametrize("slice_size", ["counted", "large"])
async def test_the_gateways_async_lookup_finds_what_search_finds(
    transactional_db, slices, slice_size
):
    """asearch (the gateway's own async connection, no thread hop) answers like search, on
    the exact path for a small slice and through HNSW for a large one."""
    from asgiref.sync import sync_to_async

    from serving.cache import pg

    tenant_a, _ = slices
    key = (f"t:{tenant_a.pk}", "smollm2-135m-instruct", "0" * 64)
    if slice_size == "large":
        semantic._slices.put(key, semantic.EXACT_MAX_ROWS + 1)  # as if counted: HNSW
    try:
        found = await semantic.asearch(
            scope=key[0], model=key[1], context_hash=key[2], embedding=unit_vector(7)
        )
        expected = await sync_to_async(_search)(tenant_a, unit_vector(7), strategy="exact")
        assert [c.prompt for c in found] == [c.prompt for c in expected]
        assert found[0].prompt == "a7" and isinstance(found[0].response, dict)
        assert semantic._slices.get(key) == (40 if slice_size == "counted" else 10_001)
    finally:
        await pg.close_pool()
