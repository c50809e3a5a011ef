"""``manage.py create_tier``: a tier from the command line. In serving because it checks the
tier against the routing table (``auto`` must route somewhere); the tier itself is written by
tenants' services."""

from django.core.management.base import BaseCommand

from serving.model_list import auto_routes
from serving.routing.table import AUTO, load_routing_table
from tenants import services
from tenants.management.commands._helpers import run_service
from tenants.models import Tier


class Command(BaseCommand):
    help = "Create a tier, or update it if it exists (safe to run twice)."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--rpm", type=int, help="requests per minute")
        parser.add_argument("--tpm", type=int, help="tokens per minute")
        parser.add_argument("--tokens-per-day", type=int)
        parser.add_argument("--max-concurrency", type=int, help="max concurrent requests")
        parser.add_argument("--models", help="comma-separated allowed models")
        parser.add_argument("--default-model")
        parser.add_argument("--weight", type=float, help="fairness weight")
        parser.add_argument(
            "--no-override", action="store_true", help="callers may not pick a model"
        )

    def handle(self, *args, name, **opts):
        fields = {
            "requests_per_minute": opts["rpm"],
            "tokens_per_minute": opts["tpm"],
            "tokens_per_day": opts["tokens_per_day"],
            "max_concurrent_requests": opts["max_concurrency"],
            "default_model": opts["default_model"],
            "fairness_weight": opts["weight"],
        }
        if opts["models"] is not None:
            fields["allowed_models"] = [m.strip() for m in opts["models"].split(",") if m.strip()]
        if opts["no_override"]:
            fields["allow_model_override"] = False
        fields = {k: v for k, v in fields.items() if v is not None}
        tier = Tier.objects.filter(name=name).first()
        if tier is None:
            tier = run_service(services.tier_create, name=name, **fields)
            self.stdout.write(f"created tier {tier.name}")
        else:
            tier = run_service(services.tier_update, tier=tier, **fields)
            self.stdout.write(f"updated tier {tier.name}")
        self._check_auto(tier)

    def _check_auto(self, tier: Tier) -> None:
        """Say so when ``auto`` would route nowhere for this tier (no rule and no default)."""
        allowed = not tier.allowed_models or AUTO in tier.allowed_models
        if allowed and not auto_routes(tier, load_routing_table()):
            self.stderr.write(
                f"note: `{AUTO}` routes nowhere for tier {tier.name} yet: no routing rule sends "
                "every kind of prompt to a served model and the tier has no --default-model "
                "(`make run` seeds such rules; see docs/routing.md)."
            )
