"""The cache's Celery tasks are registered, scheduled, and do their work on the database."""

import datetime as dt

from django.utils import timezone

from serving.cache.models import SemanticCacheEntry
from serving.cache.tasks import enforce_cache_caps, expire_cache_entries
from switchyard.celery import app
from tests.console.cache_data import add_entry


def test_tasks_are_registered_and_on_the_beat_schedule():
    app.loader.import_default_modules()
    scheduled = {entry["task"] for entry in app.conf.beat_schedule.values()}
    for name in (
        "serving.cache.tasks.expire_cache_entries",
        "serving.cache.tasks.enforce_cache_caps",
    ):
        assert name in app.tasks and name in scheduled


def test_expiry_task_deletes_only_expired_entries(tenant_a, tenant_b):
    old = add_entry(tenant_a, "old")
    live = add_entry(tenant_b, "live", seed=1)
    SemanticCacheEntry.objects.filter(pk=old.pk).update(expires=timezone.now() - dt.timedelta(1))
    assert expire_cache_entries() == 1
    assert list(SemanticCacheEntry.objects.values_list("pk", flat=True)) == [live.pk]


def test_cap_task_holds_each_tenant_to_its_tiers_cap(tenant_a, tenant_b, tier):
    tier.cache_max_entries = 1
    tier.save()
    for i in range(3):
        add_entry(tenant_a, f"a{i}", seed=i)
    add_entry(tenant_b, "b0", seed=9)
    assert enforce_cache_caps() == 2
    assert sorted(SemanticCacheEntry.objects.values_list("prompt", flat=True)) == ["a2", "b0"]
