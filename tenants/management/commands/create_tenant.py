from django.core.management.base import BaseCommand, CommandError

from tenants import services
from tenants.management.commands._helpers import run_service
from tenants.models import Tenant, Tier


class Command(BaseCommand):
    help = "Create a tenant on a tier, or update it if the slug exists (safe to run twice)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--tier", required=True)
        parser.add_argument("--name", help="display name (default: the slug)")
        parser.add_argument("--email", default=None, help="contact e-mail")

    def handle(self, *args, slug, tier, name, email, **opts):
        tier_obj = Tier.objects.filter(name=tier).first()
        if tier_obj is None:
            raise CommandError(f"Unknown tier {tier!r}; create it with create_tier first.")
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is None:
            tenant = run_service(
                services.tenant_create,
                slug=slug,
                name=name or slug,
                tier=tier_obj,
                contact_email=email or "",
            )
            self.stdout.write(f"created tenant {tenant.slug}")
        else:
            fields = {"tier": tier_obj}
            if name:
                fields["name"] = name
            if email is not None:
                fields["contact_email"] = email
            run_service(services.tenant_update, tenant=tenant, **fields)
            self.stdout.write(f"updated tenant {tenant.slug}")
