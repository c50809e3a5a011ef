import pytest
from django.core.exceptions import ValidationError

from billing.models import UsageRecord
from tenants import services
from tenants.errors import TenantHasUsage, TierInUse
from tenants.models import AuditEvent, Budget, Tenant, Tier


def test_tier_defaults_match_the_plan(db):
    tier = services.tier_create(name="basic")
    assert tier.semantic_cache_threshold == 0.83
    assert tier.semantic_cache_ttl_seconds == 3600
    assert tier.fairness_weight == 1.0


def test_unknown_model_is_a_field_error_and_nothing_is_saved(db):
    with pytest.raises(ValidationError) as err:
        services.tier_create(name="x", allowed_models=["gpt-9"])
    assert "allowed_models" in err.value.message_dict
    assert not Tier.objects.filter(name="x").exists()
    assert not AuditEvent.objects.exists()


def test_default_model_must_be_allowed(db):
    with pytest.raises(ValidationError) as err:
        services.tier_create(
            name="x", allowed_models=["all-minilm-l6-v2"], default_model="smollm2-135m-instruct"
        )
    assert "default_model" in err.value.message_dict


def test_negative_limits_are_refused(db):
    with pytest.raises(ValidationError) as err:
        services.tier_create(name="neg", requests_per_minute=-1)
    assert "requests_per_minute" in err.value.message_dict


def test_duplicate_slug_is_a_field_error(tenant_a, tier):
    with pytest.raises(ValidationError) as err:
        services.tenant_create(name="Other", slug="acme", tier=tier)
    assert "slug" in err.value.message_dict
    assert Tenant.objects.filter(slug="acme").count() == 1


def test_every_change_is_audited_with_before_and_after(tenant_a, alice):
    services.tenant_update(tenant=tenant_a, name="Acme Corp", actor=alice)
    event = AuditEvent.objects.filter(action="tenant.update").get()
    assert event.actor == alice and event.actor_repr == "alice"
    assert event.before["name"] == "Acme" and event.after["name"] == "Acme Corp"
    assert event.tenant == tenant_a


def test_audit_never_holds_a_key(tenant_a, alice):
    _, raw = services.api_key_create(tenant=tenant_a, name="ci", actor=alice)
    for event in AuditEvent.objects.all():
        assert raw not in str(event.before) and raw not in str(event.after)


def test_unchanged_update_writes_no_audit_row(tenant_a, alice):
    before = AuditEvent.objects.count()
    services.tenant_update(tenant=tenant_a, name=tenant_a.name, actor=alice)
    assert AuditEvent.objects.count() == before


def test_tenant_with_usage_cannot_be_deleted(tenant_a, alice):
    UsageRecord.objects.create(request_id="r1", tenant=tenant_a, model="m", input_tokens=3)
    with pytest.raises(TenantHasUsage, match="suspend"):
        services.tenant_delete(tenant=tenant_a, actor=alice)
    assert Tenant.objects.filter(pk=tenant_a.pk).exists()


def test_the_usage_records_foreign_key_is_what_protects_the_tenant(tenant_a, alice, monkeypatch):
    """Without the EXISTS check in front, the delete itself is refused (on_delete=PROTECT):
    same error, nothing deleted, no audit row."""
    UsageRecord.objects.create(request_id="r1", tenant=tenant_a, model="m", input_tokens=3)
    monkeypatch.setattr(services, "_has_protected_records", lambda tenant: False)
    with pytest.raises(TenantHasUsage, match="has usage records and cannot be deleted; suspend"):
        services.tenant_delete(tenant=tenant_a, actor=alice)
    assert Tenant.objects.filter(pk=tenant_a.pk).exists()
    assert not AuditEvent.objects.filter(action="tenant.delete").exists()


def test_tenant_without_usage_is_deleted_with_audit(tenant_b, alice):
    services.tenant_delete(tenant=tenant_b, actor=alice)
    assert not Tenant.objects.filter(slug="bravo").exists()
    assert AuditEvent.objects.filter(action="tenant.delete", object_repr="bravo").exists()


def test_tier_in_use_cannot_be_deleted(tenant_a, tier):
    with pytest.raises(TierInUse):
        services.tier_delete(tier=tier)


def test_budget_set_is_one_per_period_and_updates(tenant_a, alice):
    services.budget_set(tenant=tenant_a, period="monthly", limit_micro_usd=5_000_000, actor=alice)
    b = services.budget_set(
        tenant=tenant_a, period="monthly", limit_micro_usd=7_000_000, hard=True, actor=alice
    )
    assert Budget.objects.filter(tenant=tenant_a).count() == 1
    assert b.limit_micro_usd == 7_000_000 and b.hard and b.alert_thresholds == [50, 80, 100]
    assert list(
        AuditEvent.objects.filter(object_type="budget").values_list("action", flat=True)
    ) == ["budget.update", "budget.create"]


def test_negative_budget_is_refused(tenant_a):
    with pytest.raises(ValidationError):
        services.budget_set(tenant=tenant_a, period="daily", limit_micro_usd=-1)


@pytest.mark.parametrize(
    ("usd", "micro"), [("25", 25_000_000), ("0.000001", 1), ("12.50", 12_500_000), (3, 3_000_000)]
)
def test_usd_to_micro_is_exact(usd, micro):
    assert services.usd_to_micro(usd) == micro


def test_usd_to_micro_refuses_sub_micro_amounts():
    with pytest.raises(ValidationError):
        services.usd_to_micro("0.0000001")


@pytest.mark.parametrize("name", ["a\x00", "a\nb", "tab\there", "\x1b[31mred", "sur\ud800"])
def test_names_with_control_characters_are_a_field_error_not_a_database_error(db, name):
    with pytest.raises(ValidationError) as err:
        services.tier_create(name=name)
    assert list(err.value.message_dict) == ["name"]
    tier = services.tier_create(name="ok")
    with pytest.raises(ValidationError) as err:
        services.tenant_create(name=name, slug="acme", tier=tier)
    assert list(err.value.message_dict) == ["name"]
    assert list(Tier.objects.values_list("name", flat=True)) == ["ok"]
    assert not Tenant.objects.exists()
    assert list(AuditEvent.objects.values_list("action", flat=True)) == ["tier.create"]
