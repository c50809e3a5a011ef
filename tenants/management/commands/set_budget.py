from django.core.management.base import BaseCommand, CommandError

from tenants import services
from tenants.management.commands._helpers import run_service
from tenants.models import Tenant


class Command(BaseCommand):
    help = "Set a tenant's daily and/or monthly budget in USD (creates or updates; safe to rerun)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--monthly-usd", help="monthly limit in dollars, e.g. 25 or 12.50")
        parser.add_argument("--daily-usd", help="daily limit in dollars")
        parser.add_argument("--hard", action="store_true", help="refuse requests at the limit")
        parser.add_argument(
            "--alerts", default="50,80,100", help="alert thresholds in percent, comma-separated"
        )

    def handle(self, *args, slug, monthly_usd, daily_usd, hard, alerts, **opts):
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is None:
            raise CommandError(f"Unknown tenant {slug!r}.")
        if monthly_usd is None and daily_usd is None:
            raise CommandError("Give --monthly-usd and/or --daily-usd.")
        try:
            thresholds = [int(x) for x in alerts.split(",") if x.strip()]
        except ValueError as exc:
            raise CommandError("--alerts must be integers, e.g. 50,80,100.") from exc
        for period, usd in (("monthly", monthly_usd), ("daily", daily_usd)):
            if usd is None:
                continue
            try:
                micro = services.usd_to_micro(usd)
            except Exception as exc:
                raise CommandError(f"Not an amount in dollars: {usd!r}.") from exc
            run_service(
                services.budget_set,
                tenant=tenant,
                period=period,
                limit_micro_usd=micro,
                hard=hard,
                alert_thresholds=thresholds,
            )
            kind = "hard" if hard else "soft"
            self.stdout.write(f"{tenant.slug}: {period} budget ${usd} ({kind})")
