from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from tenants import services
from tenants.management.commands._helpers import run_service
from tenants.models import Tenant


class Command(BaseCommand):
    help = (
        "Issue a new API key for a tenant and print only the key, once. "
        "Each run issues another key; revoke old ones in the console or the API."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="tenant slug")
        parser.add_argument("--name", default="cli", help="a label for the key")
        parser.add_argument("--expires-days", type=int, help="expire after this many days")

    def handle(self, *args, tenant, name, expires_days, **opts):
        tenant_obj = Tenant.objects.filter(slug=tenant).first()
        if tenant_obj is None:
            raise CommandError(f"Unknown tenant {tenant!r}.")
        if expires_days is not None and expires_days <= 0:
            raise CommandError("--expires-days must be positive.")
        expires = timezone.now() + timedelta(days=expires_days) if expires_days else None
        _, raw = run_service(services.api_key_create, tenant=tenant_obj, name=name, expires=expires)
        self.stdout.write(raw)
