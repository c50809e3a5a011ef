"""Config as code: export_config writes tiers, deployments, groups, rules and prices as YAML;
apply_config makes a database match such a file, through the audited services, idempotently,
with a readable diff (and nothing written on --dry-run)."""

from __future__ import annotations

import datetime as dt
import io

import pytest
import yaml
from django.core.management import CommandError, call_command
from django.utils import timezone

from billing import services as billing_services
from billing.models import ModelPrice
from serving import secrets
from serving.models import Deployment, ModelGroup, RoutingRule
from serving.routing.deployments import deployment_set
from serving.routing.services import model_group_set, routing_rule_set
from tenants import services
from tenants.models import AuditEvent, Tier

MODEL = "smollm2-135m-instruct"


def run(*args, **env) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.fixture
def configured(db):
    """A small platform: a tier, two deployments (one with an upstream key), a group, a rule
    on the tier, and a price."""
    tier = services.tier_create(name="pro", requests_per_minute=600, allowed_models=[MODEL])
    deployment_set(name="local", model=MODEL, base_url="http://127.0.0.1:8100/v1")
    deployment_set(name="remote", model=MODEL, kind="openai_compatible",
                   base_url="https://api.example.com/v1", api_key="sk-remote-1")  # fmt: skip
    model_group_set(name="fast", strategy="least_connections", members=["local", "remote"])
    routing_rule_set(name="code-to-fast", position=10, task_class="code", target="fast", tier=tier)
    billing_services.price_set(model=MODEL, input_micro_usd_per_mtok=100_000,
                               output_micro_usd_per_mtok=300_000)  # fmt: skip
    return tier


def export() -> dict:
    return yaml.safe_load(run("export_config"))


def write(tmp_path, config: dict, name: str = "config.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def test_export_holds_everything_but_secrets(configured):
    text = run("export_config")
    assert text.startswith("# Switchyard configuration")
    assert "sk-remote-1" not in text
    config = yaml.safe_load(text)
    assert [t["name"] for t in config["tiers"]] == ["pro"]
    assert config["tiers"][0]["requests_per_minute"] == 600
    assert set(config["tiers"][0]) == set(services.TIER_FIELDS)
    assert [d["name"] for d in config["deployments"]] == ["local", "remote"]
    assert "api_key" not in config["deployments"][1]
    assert config["model_groups"] == [{"name": "fast", "strategy": "least_connections",
                                       "description": "", "members": ["local", "remote"]}]  # fmt: skip
    assert config["routing_rules"][0]["tier"] == "pro"
    assert config["routing_rules"][0]["task_class"] == "code"
    assert config["prices"] == [{"model": MODEL, "deployment": "",
                                 "input_micro_usd_per_mtok": 100_000,
                                 "output_micro_usd_per_mtok": 300_000,
                                 "cached_input_micro_usd_per_mtok": None}]  # fmt: skip


def test_applying_the_export_changes_nothing_and_says_so(configured, tmp_path):
    path = tmp_path / "out.yaml"
    run("export_config", "--output", str(path))
    audits = AuditEvent.objects.count()
    assert "No changes" in run("apply_config", str(path))
    assert "No changes" in run("apply_config", str(path), "--dry-run")
    assert AuditEvent.objects.count() == audits
    assert ModelPrice.objects.count() == 1


def test_apply_restores_a_changed_database_then_is_idempotent(configured, tmp_path):
    path = write(tmp_path, export())
    # Drift: edits in the console.
    services.tier_update(tier=configured, requests_per_minute=1)
    deployment_set(name="local", weight=9)
    model_group_set(name="fast", strategy="weighted", members=["local"])
    RoutingRule.objects.all().delete()
    billing_services.price_set(model=MODEL, input_micro_usd_per_mtok=1,
                               output_micro_usd_per_mtok=1)  # fmt: skip

    dry = run("apply_config", path, "--dry-run")
    assert "~ tier pro\n    requests_per_minute: 1 -> 600" in dry
    assert "~ deployment local\n    weight: 9 -> 1" in dry
    assert '~ model group fast\n    strategy: "weighted" -> "least_connections"' in dry
    assert '    members: ["local"] -> ["local", "remote"]' in dry
    assert "+ routing rule code-to-fast" in dry
    assert f"~ price {MODEL}\n    input_micro_usd_per_mtok: 1 -> 100000" in dry
    assert "Dry run: 5 change(s) would be made; nothing was written." in dry
    assert Tier.objects.get(name="pro").requests_per_minute == 1
    assert not RoutingRule.objects.exists()

    before = AuditEvent.objects.count()
    applied = run("apply_config", path)
    assert "Applied 5 change(s)." in applied
    assert Tier.objects.get(name="pro").requests_per_minute == 600
    assert Deployment.objects.get(name="local").weight == 1
    group = ModelGroup.objects.get(name="fast")
    assert group.strategy == "least_connections"
    assert sorted(group.members.values_list("name", flat=True)) == ["local", "remote"]
    assert RoutingRule.objects.get(name="code-to-fast").tier == configured
    assert ModelPrice.objects.count() == 3  # history kept: a new row from now
    assert AuditEvent.objects.count() - before == 5
    assert "No changes" in run("apply_config", path)


def test_a_fresh_database_is_built_from_a_file(db, tmp_path, monkeypatch):
    monkeypatch.setenv("REMOTE_KEY", "sk-from-env")
    config = {
        "tiers": [{"name": "team", "requests_per_minute": 30}],
        "deployments": [
            {
                "name": "remote",
                "model": "gpt-4o-mini",
                "kind": "openai_compatible",
                "base_url": "https://api.example.com/v1",
                "api_key_env": "REMOTE_KEY",
            },
        ],  # fmt: skip
        "model_groups": [{"name": "cheap", "members": ["remote"]}],
        "routing_rules": [{"name": "team-default", "tier": "team", "target": "cheap"}],
        "prices": [
            {
                "model": "gpt-4o-mini",
                "input_micro_usd_per_mtok": 150_000,
                "output_micro_usd_per_mtok": 600_000,
            }
        ],  # fmt: skip
    }
    path = write(tmp_path, config)
    out = run("apply_config", path)
    assert "+ tier team" in out and "+ deployment remote" in out
    assert "api_key: (from $REMOTE_KEY)" in out and "sk-from-env" not in out
    assert "Applied 5 change(s)." in out
    dep = Deployment.objects.get(name="remote")
    assert secrets.decrypt(dep.api_key_encrypted) == "sk-from-env"
    assert RoutingRule.objects.get(name="team-default").tier.name == "team"
    assert all(e.actor_repr == "system" for e in AuditEvent.objects.all())
    assert AuditEvent.objects.count() == 5
    assert "No changes" in run("apply_config", path)

    monkeypatch.setenv("REMOTE_KEY", "sk-rotated")
    out = run("apply_config", path)
    assert "~ deployment remote\n    api_key: (stored) -> (from $REMOTE_KEY)" in out
    assert "sk-rotated" not in out and "sk-from-env" not in out
    assert secrets.decrypt(Deployment.objects.get(name="remote").api_key_encrypted) == "sk-rotated"
    assert "sk-rotated" not in str(list(AuditEvent.objects.values_list("before", "after")))


def test_an_invalid_entry_changes_nothing_and_says_where(configured, tmp_path):
    config = export()
    config["tiers"][0]["requests_per_minute"] = 5
    config["deployments"][0]["base_url"] = "not a url"
    path = write(tmp_path, config)
    before = AuditEvent.objects.count()
    with pytest.raises(CommandError) as err:
        run("apply_config", path)
    assert "deployment local" in str(err.value) and "base_url" in str(err.value)
    assert "Nothing was changed" in str(err.value)
    assert Tier.objects.get(name="pro").requests_per_minute == 600  # rolled back
    assert AuditEvent.objects.count() == before


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"tierz": []}, "Unknown section(s): tierz"),
        ({"tiers": [{"name": "x", "rpm": 5}]}, "tier x: unknown field(s) rpm"),
        ({"tiers": [{"requests_per_minute": 5}]}, "every entry needs a `name`"),
        ({"tiers": [{"name": "x"}, {"name": "x"}]}, "tier x appears twice"),
        ({"tiers": {"name": "x"}}, "`tiers` must be a list of mappings"),
        ({"deployments": [{"name": "d", "api_key_env": "NOT_SET_ANYWHERE"}]},
         "NOT_SET_ANYWHERE (api_key_env) is not set"),
        ({"prices": [{"model": MODEL, "input_micro_usd_per_mtok": 1}]},
         "missing output_micro_usd_per_mtok"),
        ({"prices": [{"model": MODEL, "input_micro_usd_per_mtok": 1,
                      "output_micro_usd_per_mtok": 1, "effective_from": "2020-01-01T00:00:00Z"}]},
         "cannot be backdated"),
        ({"version": 7}, "Unsupported version 7"),
    ],
)  # fmt: skip
def test_malformed_files_are_refused_with_a_reason(db, tmp_path, config, message):
    with pytest.raises(CommandError) as err:
        run("apply_config", write(tmp_path, config))
    assert message in str(err.value)
    assert not AuditEvent.objects.exists()


def test_scheduled_prices_round_trip(configured, tmp_path):
    later = timezone.now() + dt.timedelta(days=30)
    billing_services.price_set(model=MODEL, input_micro_usd_per_mtok=90_000,
                               output_micro_usd_per_mtok=250_000, effective_from=later)  # fmt: skip
    config = export()
    assert [p.get("effective_from") for p in config["prices"]] == [None, later.isoformat()]
    path = write(tmp_path, config)
    assert "No changes" in run("apply_config", path)
    config["prices"][1]["input_micro_usd_per_mtok"] = 1
    with pytest.raises(CommandError, match="never edited"):
        run("apply_config", write(tmp_path, config, "edited.yaml"))


def test_prune_deletes_what_a_section_leaves_out(configured, tmp_path):
    config = export()
    config["routing_rules"] = []
    config["deployments"] = [d for d in config["deployments"] if d["name"] == "local"]
    config["model_groups"][0]["members"] = ["local"]
    del config["tiers"]  # an absent section is never touched
    path = write(tmp_path, config)
    assert "No changes" not in run("apply_config", path, "--dry-run", "--prune")
    out = run("apply_config", path, "--prune")
    assert "- routing rule code-to-fast" in out and "- deployment remote" in out
    assert out.index("- routing rule") > out.index("~ model group fast")
    assert not RoutingRule.objects.exists()
    assert list(Deployment.objects.values_list("name", flat=True)) == ["local"]
    assert Tier.objects.filter(name="pro").exists()
    assert "No changes" in run("apply_config", path, "--prune")
