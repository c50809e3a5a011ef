import datetime as dt

from django.core.management.base import BaseCommand, CommandError

from billing import services
from tenants.management.commands._helpers import run_service
from tenants.models import Tenant
from tenants.services import usd_to_micro


def _rate(value: str | None, flag: str) -> int | None:
    if value is None:
        return None
    try:
        return usd_to_micro(value)
    except Exception as exc:
        raise CommandError(
            f"{flag}: not an amount in dollars per million tokens: {value!r}"
        ) from exc


class Command(BaseCommand):
    help = (
        "Add a price list for a model (optionally one deployment), or a tenant's terms with "
        "--tenant, in USD per million tokens, from --from (ISO time; default now). Past usage "
        "keeps the prices it was charged."
    )

    def add_arguments(self, parser):
        parser.add_argument("model", help="public model name; '*' with --tenant for all models")
        parser.add_argument("--input", help="input $/Mtok")
        parser.add_argument("--output", help="output $/Mtok")
        parser.add_argument("--cached-input", help="cached input $/Mtok (default: the input price)")
        parser.add_argument("--deployment", default="", help="price only this deployment")
        parser.add_argument("--tenant", help="tenant slug: committed-use rates / discount")
        parser.add_argument("--discount-percent", default="0", help="with --tenant, e.g. 15")
        parser.add_argument("--from", dest="start", help="effective from, ISO 8601 (UTC if naive)")

    def handle(self, *args, model, deployment, tenant, start, **o):
        when = None
        if start:
            try:
                when = dt.datetime.fromisoformat(start)
            except ValueError as exc:
                raise CommandError(f"--from: not an ISO 8601 time: {start!r}") from exc
            when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
        rates = {
            "input_micro_usd_per_mtok": _rate(o["input"], "--input"),
            "output_micro_usd_per_mtok": _rate(o["output"], "--output"),
            "cached_input_micro_usd_per_mtok": _rate(o["cached_input"], "--cached-input"),
        }
        if tenant:
            t = Tenant.objects.filter(slug=tenant).first()
            if t is None:
                raise CommandError(f"Unknown tenant {tenant!r}.")
            try:
                bp = round(float(o["discount_percent"]) * 100)
            except ValueError as exc:
                raise CommandError("--discount-percent must be a number.") from exc
            terms = run_service(
                services.tenant_terms_set, tenant=t, model="" if model == "*" else model,
                discount_bp=bp, effective_from=when, **rates,
            )  # fmt: skip
            self.stdout.write(
                f"{t.slug}: terms for {model} from {terms.effective_from:%Y-%m-%d %H:%M:%S} UTC"
            )
            return
        if rates["input_micro_usd_per_mtok"] is None or rates["output_micro_usd_per_mtok"] is None:
            raise CommandError("Give --input and --output (dollars per million tokens).")
        price = run_service(
            services.price_set, model=model, deployment=deployment, effective_from=when, **rates
        )
        where = f" on {deployment}" if deployment else ""
        self.stdout.write(
            f"{model}{where}: price from {price.effective_from:%Y-%m-%d %H:%M:%S} UTC"
        )
