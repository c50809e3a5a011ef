"""Writes to price lists and tenant terms: each a new row from ``effective_from`` on (history is
never edited), atomic with its audit row. The admin, the command and tests call these."""

from __future__ import annotations

import datetime as dt

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from billing.models import BillingProfile, ModelPrice, TenantPriceOverride
from tenants.models import Tenant
from tenants.services import audit, check_text

PRICE_FIELDS = [
    "input_micro_usd_per_mtok",
    "output_micro_usd_per_mtok",
    "cached_input_micro_usd_per_mtok",
]
# Where a tenant's billing alerts go (its BillingProfile), as the console and the API set them.
ALERT_CONTACT_FIELDS = ["alert_emails", "webhook_url"]


def _check_rates(**rates: int | None) -> None:
    message = ["Must be a whole number of micro-dollars, 0 or more."]
    bad = {
        k: message for k, v in rates.items() if v is not None and (not isinstance(v, int) or v < 0)
    }
    if bad:
        raise ValidationError(bad)


@transaction.atomic
def price_set(
    *,
    model: str,
    input_micro_usd_per_mtok: int,
    output_micro_usd_per_mtok: int,
    cached_input_micro_usd_per_mtok: int | None = None,
    deployment: str = "",
    effective_from: dt.datetime | None = None,
    actor=None,
) -> ModelPrice:
    """A new price list for ``model`` (on ``deployment``, or every deployment) from
    ``effective_from`` (now by default). Gateways see it within SWITCHYARD_TABLE_CACHE_SECONDS:
    schedule changes at least that far ahead for an exact switch-over."""
    if not model:
        raise ValidationError({"model": ["Name the model."]})
    check_text({"model": model, "deployment": deployment})
    _check_rates(
        input_micro_usd_per_mtok=input_micro_usd_per_mtok,
        output_micro_usd_per_mtok=output_micro_usd_per_mtok,
        cached_input_micro_usd_per_mtok=cached_input_micro_usd_per_mtok,
    )
    when = effective_from or timezone.now()
    if ModelPrice.objects.filter(model=model, deployment=deployment, effective_from=when).exists():
        raise ValidationError({"effective_from": ["A price already starts at that instant."]})
    price = ModelPrice.objects.create(
        model=model,
        deployment=deployment,
        input_micro_usd_per_mtok=input_micro_usd_per_mtok,
        output_micro_usd_per_mtok=output_micro_usd_per_mtok,
        cached_input_micro_usd_per_mtok=cached_input_micro_usd_per_mtok,
        effective_from=when,
    )
    audit(
        actor=actor,
        action="price.create",
        obj=price,
        before=None,
        after={
            "model": model,
            "deployment": deployment,
            "effective_from": when.isoformat(),
            **{f: getattr(price, f) for f in PRICE_FIELDS},
        },
    )
    return price


@transaction.atomic
def tenant_terms_set(
    *,
    tenant: Tenant,
    model: str = "",
    discount_bp: int = 0,
    input_micro_usd_per_mtok: int | None = None,
    output_micro_usd_per_mtok: int | None = None,
    cached_input_micro_usd_per_mtok: int | None = None,
    effective_from: dt.datetime | None = None,
    actor=None,
) -> TenantPriceOverride:
    """New terms for ``tenant`` (one model, or all): committed-use rates and/or a discount in
    basis points, from ``effective_from`` on."""
    check_text({"model": model})
    if not isinstance(discount_bp, int) or not 0 <= discount_bp <= 10_000:
        raise ValidationError({"discount_bp": ["Between 0 and 10000 basis points (100%)."]})
    _check_rates(
        input_micro_usd_per_mtok=input_micro_usd_per_mtok,
        output_micro_usd_per_mtok=output_micro_usd_per_mtok,
        cached_input_micro_usd_per_mtok=cached_input_micro_usd_per_mtok,
    )
    when = effective_from or timezone.now()
    if TenantPriceOverride.objects.filter(tenant=tenant, model=model, effective_from=when).exists():
        raise ValidationError({"effective_from": ["Terms already start at that instant."]})
    terms = TenantPriceOverride.objects.create(
        tenant=tenant,
        model=model,
        discount_bp=discount_bp,
        input_micro_usd_per_mtok=input_micro_usd_per_mtok,
        output_micro_usd_per_mtok=output_micro_usd_per_mtok,
        cached_input_micro_usd_per_mtok=cached_input_micro_usd_per_mtok,
        effective_from=when,
    )
    audit(
        actor=actor,
        action="price_override.create",
        obj=terms,
        before=None,
        after={
            "model": model,
            "discount_bp": discount_bp,
            "effective_from": when.isoformat(),
            **{f: getattr(terms, f) for f in PRICE_FIELDS},
        },
        tenant=tenant,
    )
    return terms


def price_rows_in_force(at: dt.datetime | None = None) -> list[ModelPrice]:
    """Each (model, deployment) list's row in force at ``at`` (now by default), then the rows
    scheduled after it, ordered by model, deployment and start."""
    at = at or timezone.now()
    rows: list[ModelPrice] = []
    seen: set[tuple[str, str]] = set()
    for row in ModelPrice.objects.order_by("model", "deployment", "-effective_from"):
        key = (row.model, row.deployment)
        if row.effective_from > at:
            rows.append(row)
        elif key not in seen:
            seen.add(key)
            rows.append(row)
    return sorted(rows, key=lambda r: (r.model, r.deployment, r.effective_from))


@transaction.atomic
def alert_contacts_set(
    *, tenant: Tenant, alert_emails: str = "", webhook_url: str = "", actor=None
) -> BillingProfile:
    """Where the tenant's billing alerts go besides its contact e-mail (and the operators')."""
    profile, _ = BillingProfile.objects.select_for_update().get_or_create(tenant=tenant)
    before = {"alert_emails": profile.alert_emails, "webhook_url": profile.webhook_url}
    profile.alert_emails, profile.webhook_url = alert_emails, webhook_url
    profile.save()
    after = {"alert_emails": alert_emails, "webhook_url": webhook_url}
    if after != before:
        audit(
            actor=actor, action="billing_profile.update", obj=profile, before=before,
            after=after, tenant=tenant,
        )  # fmt: skip
    return profile
