"""Setting prices and tenant terms: the service and the command add rows from a moment on and
never touch history; bad input is refused with a reason."""

import datetime as dt

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from billing import pricing, services
from billing.models import ModelPrice, TenantPriceOverride
from tenants.models import AuditEvent

M = "smollm2-135m-instruct"


def test_set_price_command_adds_a_list_per_deployment_from_a_time(db):
    call_command(
        "set_price", M, "--input", "0.10", "--output", "0.40", "--from", "2026-01-01T00:00"
    )
    call_command("set_price", M, "--input", "0.05", "--output", "0.2", "--cached-input", "0.01",
                 "--deployment", "gpu-east", "--from", "2026-02-01T00:00")  # fmt: skip
    rows = {p.deployment: p for p in ModelPrice.objects.all()}
    assert (
        rows[""].input_micro_usd_per_mtok == 100_000
        and rows[""].output_micro_usd_per_mtok == 400_000
    )
    assert rows["gpu-east"].cached_input_micro_usd_per_mtok == 10_000
    pricing.clear_cache()
    feb = dt.datetime(2026, 2, 2, tzinfo=dt.UTC)
    assert pricing.price_at(M, feb, deployment="gpu-east").input_per_mtok == 50_000
    assert pricing.price_at(M, feb, deployment="cpu").input_per_mtok == 100_000
    assert AuditEvent.objects.filter(action="price.create").count() == 2


def test_tenant_terms_command(tenant_a):
    call_command("set_price", "*", "--tenant", "acme", "--discount-percent", "12.5")
    terms = TenantPriceOverride.objects.get(tenant=tenant_a)
    assert terms.discount_bp == 1250 and terms.model == ""
    assert AuditEvent.objects.get(action="price_override.create").tenant == tenant_a


@pytest.mark.parametrize(
    "argv, message",
    [
        ([M, "--input", "0.1"], "Give --input and --output"),
        ([M, "--input", "abc", "--output", "1"], "--input: not an amount"),
        ([M, "--input", "0.0000001", "--output", "1"], "--input: not an amount"),
        ([M, "--input", "1", "--output", "1", "--from", "tuesday"], "--from: not an ISO 8601"),
        (["*", "--tenant", "nobody"], "Unknown tenant 'nobody'"),
    ],
)
def test_set_price_refuses_bad_input(db, argv, message):
    with pytest.raises(CommandError, match=message):
        call_command("set_price", *argv)


def test_services_refuse_bad_rates_and_duplicate_instants(tenant_a):
    when = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    services.price_set(model=M, input_micro_usd_per_mtok=1, output_micro_usd_per_mtok=2,
                       effective_from=when)  # fmt: skip
    with pytest.raises(ValidationError) as exc:
        services.price_set(model=M, input_micro_usd_per_mtok=1, output_micro_usd_per_mtok=2,
                           effective_from=when)  # fmt: skip
    assert "effective_from" in exc.value.message_dict
    with pytest.raises(ValidationError) as exc:
        services.price_set(model=M, input_micro_usd_per_mtok=-1, output_micro_usd_per_mtok=2)
    assert "input_micro_usd_per_mtok" in exc.value.message_dict
    with pytest.raises(ValidationError) as exc:
        services.tenant_terms_set(tenant=tenant_a, discount_bp=10_001)
    assert "discount_bp" in exc.value.message_dict
