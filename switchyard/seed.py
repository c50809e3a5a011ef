"""The demo data `make run` shows on start: the demo tier, tenant, operator and key, the local
deployments and their prices, and the routing policy of SEED.md (``auto`` classifies each
prompt; simple, complex, code and long-context prompts go to their groups).

Safe to run again: the data are reused, and the demo key and operator password kept in the
data dir (mode 600) are reused while they still work. The deployments on the local model
worker get the worker's token (``SWITCHYARD_WORKER_TOKEN``, set by `make run`) as their API
key, kept up to date while they still point at the local worker.

Project level (``manage.py seed_demo``): it writes through every app's services.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model

from billing.models import ModelPrice
from billing.services import price_set
from serving import secrets as upstream_secrets
from serving.models import Deployment
from serving.routing.deployments import deployment_set
from serving.routing.services import routing_policy_seed
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


def _seed_serving() -> list[str]:
    """Deployments on the local model worker, demo prices and the routing policy, unless
    they exist. Returns the policy's groups and rules it created."""
    worker = settings.SWITCHYARD_MODEL_WORKER_URL or "http://127.0.0.1:8100"
    base_url = f"{worker.rstrip('/')}/v1"
    token = os.environ.get("SWITCHYARD_WORKER_TOKEN", "")
    for name, model in (
        ("local-smollm2", "smollm2-135m-instruct"),
        ("local-minilm", "all-minilm-l6-v2"),
    ):
        dep = Deployment.objects.filter(name=name).first()
        if dep is None:
            deployment_set(
                name=name,
                model=model,
                kind=Deployment.Kind.LOCAL_WORKER,
                base_url=base_url,
                context_window=8192 if model.startswith("smollm2") else 512,
                api_key=token,
                # The worker calls tools (a grammar holds it to the format; docs/engine.md).
                capabilities=["tools"] if model.startswith("smollm2") else [],
            )
        elif token and dep.base_url == base_url:
            try:
                stored = upstream_secrets.decrypt(dep.api_key_encrypted)
            except ValueError:  # SECRET_KEY rotated: it is unreadable, store it again
                stored = ""
            if stored != token:
                deployment_set(name=name, api_key=token)
    # Demo prices, per million tokens: $0.10 in / $0.30 out for chat, $0.02 for embeddings.
    for model, pin, pout in (
        ("smollm2-135m-instruct", 100_000, 300_000),
        ("all-minilm-l6-v2", 20_000, 0),
    ):
        if not ModelPrice.objects.filter(model=model).exists():
            price_set(model=model, input_micro_usd_per_mtok=pin, output_micro_usd_per_mtok=pout)
    return routing_policy_seed()


def seed_demo() -> dict[str, Any]:
    """Create (or reuse) the demo data; returns what `make run` prints: the tenant, tier, key,
    operator and password, the files they are kept in, and the routing policy created."""
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

    policy = _seed_serving()

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

    return {
        "tenant": tenant.slug,
        "tier": tier.name,
        "api_key": raw,
        "api_key_new": key_created,
        "api_key_file": str(key_path),
        "operator": DEMO_OPERATOR,
        "operator_password": password,
        "operator_password_file": str(pw_path),
        "routing_policy_created": policy,
    }
