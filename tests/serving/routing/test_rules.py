"""Model selection: ordered rules, overrides, defaults, and what the router says about it.

Rules and deployments are real rows; the table is loaded the way gateways load it."""

from __future__ import annotations

import random

import pytest
from django.core.exceptions import ValidationError

from serving.gateway.errors import GatewayError
from serving.routing.deployments import deployment_set
from serving.routing.router import Router
from serving.routing.services import model_group_set, routing_rule_set
from serving.routing.table import RouteContext, load_routing_table
from tenants import services

SMALL = "smollm2-135m-instruct"


@pytest.fixture
def fleet(db):
    deployment_set(name="small-a", model=SMALL, base_url="http://127.0.0.1:9/v1")
    deployment_set(name="big-a", model="big", base_url="http://127.0.0.1:9/v1",
                   capabilities=["long_context"], context_window=131072)  # fmt: skip
    deployment_set(name="coder-a", model="coder", base_url="http://127.0.0.1:9/v1",
                   capabilities=["code"])  # fmt: skip
    model_group_set(name="fast", strategy="weighted", members=["small-a"])
    model_group_set(name="long-context", strategy="weighted", members=["big-a"])


def _tier(name: str, **kw):
    kw.setdefault("allowed_models", [])
    return services.tier_create(name=name, **kw)


def _ctx(tier, requested="auto", tokens=10, task_class=None, tenant_id=1, metadata=None):
    return RouteContext(tier.pk, tenant_id, requested, tokens, task_class, metadata or {})


def route(tier, ctx):
    return Router(random.Random(1)).route(tier, ctx.requested, load_routing_table(), ctx=ctx)


def test_first_matching_rule_wins_in_position_order(fleet):
    tier = _tier("open", default_model=SMALL)
    routing_rule_set(name="long-prompts", position=10, min_prompt_tokens=30_000,
                     target="long-context")  # fmt: skip
    routing_rule_set(name="code-tasks", position=20, task_class="code", target="coder")
    routing_rule_set(name="everything-else", position=30, target="fast")

    r = route(tier, _ctx(tier, tokens=40_000, task_class="code"))
    assert (r.model, r.rule, r.target.name) == ("long-context", "long-prompts", "big-a")
    r = route(tier, _ctx(tier, tokens=500, task_class="code"))
    assert (r.model, r.rule) == ("coder", "code-tasks")
    assert "rule `long-prompts` skipped: prompt ~500 tokens < 30000" in r.explanation
    r = route(tier, _ctx(tier, tokens=500, task_class="simple"))
    assert (r.model, r.rule) == ("fast", "everything-else")
    assert (
        r.header() == "model=fast; deployment=small-a; rule=everything-else; class=simple; "
        "strategy=weighted"
    )


def test_rules_match_tier_tenant_requested_name_and_metadata(fleet):
    gold = _tier("gold", default_model=SMALL)
    free = _tier("free", default_model=SMALL)
    routing_rule_set(name="gold-gets-big", position=1, tier=gold, target="big")
    routing_rule_set(name="devtools-to-coder", position=2, tenant_id=None, requested_models=["auto"],
                     metadata_key="team", metadata_value="devtools", target="coder")  # fmt: skip

    assert route(gold, _ctx(gold)).rule == "gold-gets-big"
    assert route(free, _ctx(free)).rule == "tier-default"
    r = route(free, _ctx(free, metadata={"team": "devtools"}))
    assert (r.rule, r.model) == ("devtools-to-coder", "coder")
    assert route(free, _ctx(free, metadata={"team": "sales"})).rule == "tier-default"


def test_rule_on_one_tenant_skips_the_others(fleet):
    tier = _tier("t", default_model=SMALL)
    a = services.tenant_create(name="A", slug="a", tier=tier)
    b = services.tenant_create(name="B", slug="b", tier=tier)
    routing_rule_set(name="a-only", position=1, tenant=a, target="big")
    assert route(tier, _ctx(tier, tenant_id=a.pk)).model == "big"
    r = route(tier, _ctx(tier, tenant_id=b.pk))
    assert r.model == SMALL and "rule `a-only` skipped: another tenant" in r.explanation


def test_caller_override_beats_the_rules_only_when_the_tier_allows_it(fleet):
    routing_rule_set(name="all-to-fast", position=1, target="fast")
    free = _tier("may-choose", default_model=SMALL, allow_model_override=True)
    fixed = _tier("no-choice", default_model=SMALL, allow_model_override=False)

    assert route(free, _ctx(free, requested="big")).rule == "requested"
    assert route(free, _ctx(free, requested="auto")).rule == "all-to-fast"
    r = route(fixed, _ctx(fixed, requested="big"))
    assert (r.model, r.rule) == ("fast", "all-to-fast")


def test_names_outside_the_tiers_allow_list_are_404(fleet):
    tier = _tier("narrow", allowed_models=[SMALL, "auto"], default_model=SMALL)
    with pytest.raises(GatewayError) as e:
        route(tier, _ctx(tier, requested="big"))
    assert (e.value.status, e.value.code) == (404, "model_not_found")
    assert route(tier, _ctx(tier, requested="auto")).model == SMALL


def test_a_rule_pointing_at_a_name_without_deployments_is_503(fleet):
    tier = _tier("t2", default_model=SMALL)
    model_group_set(name="empty", strategy="weighted", members=[])
    routing_rule_set(name="to-empty", position=1, target="empty")
    with pytest.raises(GatewayError) as e:
        route(tier, _ctx(tier))
    assert (e.value.status, e.value.code) == (503, "model_unavailable")


def test_rule_validation_refuses_unknown_targets_and_inverted_ranges(fleet):
    with pytest.raises(ValidationError) as e:
        routing_rule_set(name="bad", target="no-such-model")
    assert "target" in e.value.message_dict
    with pytest.raises(ValidationError) as e:
        routing_rule_set(name="bad2", target="fast", min_prompt_tokens=10, max_prompt_tokens=5)
    assert "max_prompt_tokens" in e.value.message_dict
    with pytest.raises(ValidationError):
        model_group_set(name="g", strategy="weighted", members=["ghost"])
