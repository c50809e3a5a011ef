"""A fresh install works the seed's way (SEED.md's router): after `seed_demo` (what `make run`
runs) `auto` classifies each prompt and routes simple, complex and code prompts, and prompts
over 30k tokens, to their groups, which hold whatever is deployed (on a fresh install, the local
model); `/v1/models` lists only what a key can really call; a tier made without a default model
still serves `auto`. Against the real gateway process, with the official `openai` client."""

from __future__ import annotations

import io
import json

import openai
import pytest
from django.core.management import call_command

from serving.models import ModelGroup, RoutingRule
from serving.routing.deployments import deployment_set
from serving.routing.services import POLICY_RULES, routing_policy_seed
from tenants import services
from tenants.models import Tier
from tests.gateway_fixtures import Caller

MODEL = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"
PROMPTS = [
    ("What's the capital of Spain?", "simple", "simple-tasks", "fast"),
    ("Write a Python function that counts vowels in a string.", "code", "code-tasks", "code"),
    ("Compare the benefits and drawbacks of electric cars versus hydrogen fuel cells, "
     "in depth.", "complex", "complex-tasks", "smart"),
]  # fmt: skip


def route(raw) -> dict[str, str]:
    return dict(p.split("=", 1) for p in raw.headers["x-switchyard-route"].split("; "))


def chat(client: openai.OpenAI, model: str, prompt: str):
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}], max_tokens=4
    )


@pytest.fixture
def fresh(transactional_db, gateway, upstream_url, clean_redis, settings, tmp_path):
    """`seed_demo` on an empty database, its local worker played by the instant upstream."""
    settings.DATA_DIR = tmp_path
    settings.SWITCHYARD_MODEL_WORKER_URL = upstream_url
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    seed = json.loads(out.getvalue().strip().splitlines()[-1])
    return seed, Caller(tenant=None, key=seed["api_key"], base_url=gateway.url)


def test_seed_demo_seeds_the_policy_onto_the_local_model_once(fresh):
    seed, _ = fresh
    assert len(seed["routing_policy_created"]) == 8
    groups = {g.name: sorted(g.members.values_list("name", flat=True))
              for g in ModelGroup.objects.all()}  # fmt: skip
    assert groups == {g: ["local-smollm2"] for g in ("fast", "smart", "code", "long-context")}
    rules = list(RoutingRule.objects.values_list("name", "task_class", "min_prompt_tokens",
                                                 "target"))  # fmt: skip
    assert rules == [("long-context", "", 30_001, "long-context"),
                     ("code-tasks", "code", None, "code"),
                     ("complex-tasks", "complex", None, "smart"),
                     ("simple-tasks", "simple", None, "fast")]  # fmt: skip
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    assert json.loads(out.getvalue().strip().splitlines()[-1])["routing_policy_created"] == []


def test_demo_key_routes_auto_by_task_class_to_the_local_model(fresh):
    _, demo = fresh
    client = demo.client()
    assert [m.id for m in client.models.list()] == [MODEL, EMBED, "auto"]
    for prompt, task_class, rule, group in PROMPTS:
        raw = chat(client, "auto", prompt)
        assert raw.http_response.status_code == 200
        assert raw.parse().choices[0].message.content
        fields = route(raw)
        assert (fields["model"], fields["rule"], fields["class"]) == (group, rule, task_class)
        assert fields["deployment"] == "local-smollm2"
    # A caller who names a model gets it, classified all the same.
    fields = route(chat(client, MODEL, "Hello there!"))
    assert (fields["model"], fields["rule"], fields["deployment"]) == (
        MODEL, "requested", "local-smollm2")  # fmt: skip


def test_prompts_over_30k_tokens_go_to_the_long_context_group(fresh, upstream_url):
    _, demo = fresh
    deployment_set(name="long-a", model="long-ctx", base_url=f"{upstream_url}/v1",
                   context_window=200_000, capabilities=["long_context"])  # fmt: skip
    # Seeded again without its long-context group: the group comes back with the deployments
    # that can take long prompts (all of them only when none can).
    ModelGroup.objects.filter(name="long-context").delete()
    assert routing_policy_seed() == ["group long-context"]
    group = ModelGroup.objects.get(name="long-context")
    assert list(group.members.values_list("name", flat=True)) == ["long-a"]
    services.tier_update(tier=Tier.objects.get(name="demo"), tokens_per_minute=500_000)
    fields = route(chat(demo.client(), "auto", "hello " * 35_000))
    assert (fields["model"], fields["rule"], fields["deployment"]) == (
        "long-context", "long-context", "long-a")  # fmt: skip
    fields = route(chat(demo.client(), "auto", "hello " * 100))
    assert fields["rule"] != "long-context"


def test_a_tier_made_without_a_default_model_serves_auto(fresh):
    out = io.StringIO()
    call_command("create_tier", "plain", stdout=out)
    tier = Tier.objects.get(name="plain")
    assert tier.default_model == "" and tier.allowed_models == []
    tenant = services.tenant_create(name="Plain", slug="plain", tier=tier)
    _, raw = services.api_key_create(tenant=tenant, name="test")
    client = Caller(tenant=tenant, key=raw, base_url=fresh[1].base_url).client()
    listed = [m.id for m in client.models.list()]
    assert set(listed) == {MODEL, EMBED, "fast", "smart", "code", "long-context", "auto"}
    for prompt, task_class, _, group in PROMPTS:
        fields = route(chat(client, "auto", prompt))
        assert (fields["model"], fields["class"]) == (group, task_class)
    # Every listed chat name answers.
    for name in ("fast", "smart", "code", "long-context", MODEL):
        assert chat(client, name, "Hello there!").http_response.status_code == 200


def test_models_lists_only_what_the_key_can_call(make_caller):
    """Without the policy, `auto` is not listed (it would be a 404); a model whose only
    deployment is disabled is not listed either."""
    allowed_all = make_caller(allowed_models=[], default_model="")
    client = allowed_all.client()
    assert [m.id for m in client.models.list()] == [MODEL, EMBED]
    with pytest.raises(openai.NotFoundError) as err:
        chat(client, "auto", "Hello there!")
    assert err.value.body["code"] == "model_not_found"

    with_default = make_caller(allowed_models=[], default_model=MODEL)
    assert [m.id for m in with_default.client().models.list()] == [MODEL, EMBED, "auto"]
    assert route(chat(with_default.client(), "auto", "Hello"))["rule"] == "tier-default"

    deployment_set(name="instant-embed", enabled=False)
    assert [m.id for m in client.models.list()] == [MODEL]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(EMBED)

    routing_policy_seed()
    assert [m.id for m in client.models.list()] == [MODEL, "code", "fast", "long-context",
                                                    "smart", "auto"]  # fmt: skip
    assert len(POLICY_RULES) == RoutingRule.objects.count()
