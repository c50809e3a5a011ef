"""Seed the demo tier, tenant, operator and key that `make run` shows on start.

Safe to run again: the data are reused, and the demo key and operator password kept in the
data dir (mode 600) are reused while they still work.
"""

import json
import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from tenants import auth, services
from tenants.models import Tenant, Tier
from tenants.roles import Role

DEMO_TIER = "demo"
DEMO_TENANT = "demo"
DEMO_OPERATOR = "admin"


def _write_secret(path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


class Command(BaseCommand):
    help = "Create the demo tier, tenant, key and operator (idempotent); print them as JSON."

    def handle(self, *args, **opts):
        models = services.known_models()
        tier = Tier.objects.filter(name=DEMO_TIER).first() or services.tier_create(
            name=DEMO_TIER,
            description="Demo plan seeded by make run",
            requests_per_minute=120,
            tokens_per_minute=200_000,
            tokens_per_day=5_000_000,
            max_concurrent_requests=16,
            allowed_models=models,
            default_model=models[0] if models else "",
        )
        tenant = Tenant.objects.filter(slug=DEMO_TENANT).first() or services.tenant_create(
            name="Demo tenant", slug=DEMO_TENANT, tier=tier, contact_email="demo@example.com"
        )

        key_path = settings.DATA_DIR / "demo_api_key"
        raw = key_path.read_text().strip() if key_path.exists() else ""
        try:
            auth.authenticate_key(raw)
            key_created = False
        except auth.AuthFailure:
            _, raw = services.api_key_create(tenant=tenant, name="demo (make run)")
            _write_secret(key_path, raw)
            key_created = True

        pw_path = settings.DATA_DIR / "operator_password"
        User = get_user_model()
        user = User.objects.filter(username=DEMO_OPERATOR).first()
        password = pw_path.read_text().strip() if pw_path.exists() else ""
        if user is None or not password or not user.check_password(password):
            password = secrets.token_urlsafe(12)
            services.operator_set(username=DEMO_OPERATOR, role=Role.ADMIN, password=password)
            _write_secret(pw_path, password)

        self.stdout.write(
            json.dumps(
                {
                    "tenant": tenant.slug,
                    "tier": tier.name,
                    "api_key": raw,
                    "api_key_new": key_created,
                    "api_key_file": str(key_path),
                    "operator": DEMO_OPERATOR,
                    "operator_password": password,
                    "operator_password_file": str(pw_path),
                }
            )
        )
