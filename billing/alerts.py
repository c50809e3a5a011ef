"""Alerts: recorded once (a unique dedupe key), then delivered by e-mail and webhook.

Budget alerts fire when a budget's spend (:func:`billing.spend.budget_spend`, the gateway's own
figure) reaches one of its thresholds; each threshold fires once per budget period. Recording
and delivering are separate steps: a failed delivery is retried on the next run (up to
``MAX_ATTEMPTS``) without ever recording the alert twice.

Recipients: the tenant's contact e-mail, its billing profile's e-mails and webhook, and the
operators' ``SWITCHYARD_ALERT_EMAILS`` / ``SWITCHYARD_ALERT_WEBHOOK_URL``.
"""

from __future__ import annotations

import datetime as dt
import logging

import httpx
from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from billing.models import Alert, BillingProfile
from billing.money import usd_cents
from billing.periods import period_start
from billing.spend import budget_spends
from tenants.models import Budget, Tenant

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 5
WEBHOOK_TIMEOUT_SECONDS = 5.0


def record_alert(
    *, kind: str, tenant: Tenant, dedupe_key: str, subject: str, message: str, details: dict
) -> Alert | None:
    """Create the alert unless one with ``dedupe_key`` exists; returns it only if new."""
    try:
        with transaction.atomic():
            return Alert.objects.create(
                kind=kind,
                tenant=tenant,
                dedupe_key=dedupe_key,
                subject=subject,
                message=message,
                details=details,
            )
    except IntegrityError:
        return None


def _period_label(period: str, start: dt.datetime) -> str:
    return f"{start:%Y-%m-%d}" if period == Budget.Period.DAILY else f"{start:%B %Y}"


def check_budgets(now: dt.datetime | None = None) -> list[Alert]:
    """Record an alert for every threshold newly reached in the current period."""
    now = now or dt.datetime.now(dt.UTC)
    created = []
    budgets = [
        b
        for b in Budget.objects.select_related("tenant").order_by("pk")
        if b.limit_micro_usd and b.alert_thresholds
    ]
    spends = budget_spends(budgets, now)
    for budget in budgets:
        limit = budget.limit_micro_usd
        spent = spends[budget.pk]
        start = period_start(budget.period, now)
        for threshold in sorted(set(budget.alert_thresholds)):
            if spent * 100 < threshold * limit:
                break
            label = _period_label(budget.period, start)
            percent = spent * 100 / limit
            alert = record_alert(
                kind=Alert.Kind.BUDGET,
                tenant=budget.tenant,
                dedupe_key=f"budget:{budget.pk}:{start:%Y%m%d}:{threshold}",
                subject=(
                    f"[Switchyard] {budget.tenant.slug}: {threshold}% of the {budget.period} "
                    f"budget reached"
                ),
                message=(
                    f"Tenant {budget.tenant.name} ({budget.tenant.slug}) has spent "
                    f"{usd_cents(spent)} of its {budget.period} budget of {usd_cents(limit)} "
                    f"for {label} ({percent:.1f}%), reaching the {threshold}% alert threshold. "
                    + (
                        "The budget is hard: requests are refused once it is used up."
                        if budget.hard
                        else "The budget is soft: requests continue past it."
                    )
                ),
                details={
                    "budget_id": budget.pk,
                    "period": budget.period,
                    "period_start": start.isoformat(),
                    "threshold_percent": threshold,
                    "spent_micro_usd": spent,
                    "limit_micro_usd": limit,
                    "hard": budget.hard,
                },
            )
            if alert:
                created.append(alert)
    return created


def _emails(tenant: Tenant, profile: BillingProfile | None) -> list[str]:
    out = [tenant.contact_email] if tenant.contact_email else []
    if profile and profile.alert_emails:
        out += [e.strip() for e in profile.alert_emails.split(",") if e.strip()]
    out += settings.SWITCHYARD_ALERT_EMAILS
    return sorted(set(out))


def _webhooks(profile: BillingProfile | None) -> list[str]:
    out = [profile.webhook_url] if profile and profile.webhook_url else []
    if settings.SWITCHYARD_ALERT_WEBHOOK_URL:
        out.append(settings.SWITCHYARD_ALERT_WEBHOOK_URL)
    return out


def webhook_payload(alert: Alert) -> dict:
    return {
        "type": f"switchyard.alert.{alert.kind}",
        "id": alert.dedupe_key,
        "tenant": alert.tenant.slug,
        "created": alert.created.isoformat(),
        "subject": alert.subject,
        "message": alert.message,
        "details": alert.details,
    }


def deliver(alert: Alert) -> None:
    """Send what has not been sent yet; remember what went and why anything failed."""
    profile = BillingProfile.objects.filter(tenant=alert.tenant).first()
    errors = []
    now = timezone.now()
    if alert.email_sent is None:
        try:
            to = _emails(alert.tenant, profile)
            if to:
                send_mail(alert.subject, alert.message, None, to)
            alert.email_sent = now
        except Exception as exc:  # any backend failure: retried next run
            errors.append(f"e-mail: {exc}")
    if alert.webhook_sent is None:
        failed = False
        for url in _webhooks(profile):
            try:
                resp = httpx.post(url, json=webhook_payload(alert), timeout=WEBHOOK_TIMEOUT_SECONDS)
                resp.raise_for_status()
            except httpx.HTTPError as exc:
                failed = True
                errors.append(f"webhook {url}: {exc}")
        if not failed:
            alert.webhook_sent = now
    alert.delivery_attempts += 1
    alert.delivery_error = "; ".join(errors)[:500]
    alert.save(update_fields=["email_sent", "webhook_sent", "delivery_attempts", "delivery_error"])


def deliver_pending() -> int:
    """Deliver every alert with an e-mail or webhook still owed; returns how many were tried.

    Each row is claimed with ``SELECT … FOR UPDATE SKIP LOCKED`` so two workers never send the
    same alert at once."""
    owed = Q(email_sent__isnull=True) | Q(webhook_sent__isnull=True)
    pending = Alert.objects.filter(owed, delivery_attempts__lt=MAX_ATTEMPTS)
    tried = 0
    for pk in pending.order_by("pk").values_list("pk", flat=True):
        with transaction.atomic():
            alert = (
                pending.select_for_update(skip_locked=True, of=("self",))
                .select_related("tenant")
                .filter(pk=pk)
                .first()
            )
            if alert is not None:
                deliver(alert)
                tried += 1
    return tried
