import io
import json

import pytest
from django.core.management import CommandError, call_command

from tenants import auth
from tenants.models import ApiKey, Budget, Tenant, Tier


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_operator_commands_script_everything_and_are_idempotent(db):
    for _ in range(2):
        run("create_tier", "pro", "--rpm", "100", "--tpm", "50000", "--tokens-per-day", "900000",
            "--max-concurrency", "5", "--models", "smollm2-135m-instruct")  # fmt: skip
        run("create_tenant", "acme", "--tier", "pro")
        run("set_budget", "acme", "--monthly-usd", "25", "--hard")
    tier = Tier.objects.get(name="pro")
    assert (tier.requests_per_minute, tier.tokens_per_minute, tier.max_concurrent_requests) == (
        100,
        50000,
        5,
    )
    assert tier.allowed_models == ["smollm2-135m-instruct"]
    assert Tenant.objects.get(slug="acme").tier == tier
    budget = Budget.objects.get(tenant__slug="acme")
    assert budget.limit_micro_usd == 25_000_000 and budget.hard and budget.period == "monthly"


def test_create_api_key_prints_only_a_working_key(tenant_a):
    out = run("create_api_key", "--tenant", "acme")
    lines = out.strip().splitlines()
    assert len(lines) == 1
    auth.clear_cache()
    assert auth.authenticate_key(lines[0]).tenant == tenant_a
    assert ApiKey.objects.filter(tenant=tenant_a).count() == 1


def test_unknown_tenant_or_tier_is_a_clear_error(db):
    with pytest.raises(CommandError, match="Unknown tier"):
        run("create_tenant", "x", "--tier", "nope")
    with pytest.raises(CommandError, match="Unknown tenant"):
        run("create_api_key", "--tenant", "nope")


def test_bad_values_are_refused(tenant_a):
    with pytest.raises(CommandError, match="allowed_models"):
        run("create_tier", "bad", "--models", "gpt-9")
    with pytest.raises(CommandError, match="dollars"):
        run("set_budget", "acme", "--monthly-usd", "lots")


def test_seed_demo_reuses_its_key(db, settings, tmp_path):
    settings.DATA_DIR = tmp_path
    first = json.loads(run("seed_demo"))
    second = json.loads(run("seed_demo"))
    assert first["api_key_new"] and not second["api_key_new"]
    assert first["api_key"] == second["api_key"]
    assert first["operator_password"] == second["operator_password"]
    assert (tmp_path / "demo_api_key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "operator_password").stat().st_mode & 0o777 == 0o600
    auth.clear_cache()
    assert auth.authenticate_key(first["api_key"]).tenant.slug == "demo"


def test_seed_demo_stores_the_worker_token(db, settings, tmp_path, monkeypatch):
    from serving import secrets
    from serving.models import Deployment

    settings.DATA_DIR = tmp_path
    monkeypatch.setenv("SWITCHYARD_WORKER_TOKEN", "first-token")
    run("seed_demo")
    monkeypatch.setenv("SWITCHYARD_WORKER_TOKEN", "second-token")  # a new token file
    run("seed_demo")
    for name in ("local-smollm2", "local-minilm"):
        dep = Deployment.objects.get(name=name)
        assert secrets.decrypt(dep.api_key_encrypted) == "second-token"


def test_create_tier_says_when_auto_would_route_nowhere(db):
    from serving.routing.deployments import deployment_set
    from serving.routing.services import routing_policy_seed

    def notes(*args) -> str:
        err = io.StringIO()
        call_command("create_tier", *args, stdout=io.StringIO(), stderr=err)
        return err.getvalue()

    deployment_set(name="local", model="smollm2-135m-instruct", base_url="http://localhost:9/v1")
    assert "`auto` routes nowhere for tier plain" in notes("plain")
    assert notes("plain", "--default-model", "smollm2-135m-instruct") == ""
    assert notes("narrow", "--models", "smollm2-135m-instruct") == ""  # auto not allowed
    routing_policy_seed()
    assert notes("other") == ""
