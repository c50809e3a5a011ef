"""The exact cache: identical deterministic requests are answered from Redis, as JSON or as a
stream, per tenant, unless the caller bypasses it or the tier turns it off."""

import json

import httpx

from billing.models import UsageRecord
from serving.cache.models import SemanticCacheEntry
from tests.serving.gateway.cache_helpers import wait_exact_entries
from tests.serving.gateway.conftest import MODEL
from tests.serving.gateway.test_metering import drain, expected_cost

MSG = [{"role": "user", "content": "list three colours"}]
EXACT_ONLY = {"exact_cache_enabled": True, "semantic_cache_enabled": False}


def _ask(client, **kw):
    kw.setdefault("temperature", 0)
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MSG, **kw)
    return raw.headers, raw.parse()


def test_identical_deterministic_request_is_a_hit(make_caller, price):
    caller = make_caller(**EXACT_ONLY)
    client = caller.client()
    h1, first = _ask(client)
    assert h1["x-switchyard-cache"] == "miss"
    wait_exact_entries(caller.tenant, 1)
    h2, second = _ask(client)
    assert h2["x-switchyard-cache"] == "hit-exact"
    assert second.choices[0].message.content == first.choices[0].message.content
    assert second.usage == first.usage
    assert second.id != first.id and h2["x-request-id"] != h1["x-request-id"]


def test_hit_is_metered_at_the_cache_price_with_savings(make_caller, price):
    caller = make_caller(cache_hit_price_percent=25, **EXACT_ONLY)
    client = caller.client()
    h1, first = _ask(client)
    wait_exact_entries(caller.tenant, 1)
    h2, _ = _ask(client)
    drain()
    miss = UsageRecord.objects.get(request_id=h1["x-request-id"])
    hit = UsageRecord.objects.get(request_id=h2["x-request-id"])
    full = expected_cost(first.usage.model_dump())
    assert (miss.cache, miss.cost_micro_usd, miss.saved_micro_usd) == ("miss", full, 0)
    charged = (full * 25 + 50) // 100
    assert (hit.cache, hit.cost_micro_usd, hit.saved_micro_usd) == (
        "hit-exact",
        charged,
        full - charged,
    )
    assert (hit.input_tokens, hit.output_tokens) == (miss.input_tokens, miss.output_tokens)


def test_sampled_requests_are_not_replayed(make_caller):
    caller = make_caller(**EXACT_ONLY)
    client = caller.client()
    for _ in range(2):
        h, _ = _ask(client, temperature=0.7)
        assert h["x-switchyard-cache"] == "miss"


def test_a_seed_makes_a_request_cacheable(make_caller):
    caller = make_caller(**EXACT_ONLY)
    client = caller.client()
    _ask(client, temperature=0.9, seed=7)
    wait_exact_entries(caller.tenant, 1)
    assert _ask(client, temperature=0.9, seed=7)[0]["x-switchyard-cache"] == "hit-exact"
    assert _ask(client, temperature=0.9, seed=8)[0]["x-switchyard-cache"] == "miss"


def test_output_changing_parameters_change_the_key(make_caller):
    caller = make_caller(**EXACT_ONLY)
    client = caller.client()
    _ask(client, max_tokens=5)
    wait_exact_entries(caller.tenant, 1)
    assert _ask(client, max_tokens=6)[0]["x-switchyard-cache"] == "miss"
    assert _ask(client, max_tokens=5, stop=["x"])[0]["x-switchyard-cache"] == "miss"
    # ...while what does not change the output does not.
    assert _ask(client, max_tokens=5, user="someone")[0]["x-switchyard-cache"] == "hit-exact"


def test_stream_is_answered_from_cache_as_a_stream(make_caller):
    caller = make_caller(**EXACT_ONLY)
    client = caller.client()
    _, first = _ask(client)
    wait_exact_entries(caller.tenant, 1)
    with client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=MSG, temperature=0, stream=True,
        stream_options={"include_usage": True},
    ) as resp:  # fmt: skip
        assert resp.headers["x-switchyard-cache"] == "hit-exact"
        assert resp.headers["content-type"].startswith("text/event-stream")
        chunks = list(resp.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == first.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 2
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == first.usage.completion_tokens


def test_a_streamed_miss_fills_the_cache_for_json_and_stream(make_caller):
    caller = make_caller(**EXACT_ONLY)
    client = caller.client()
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model=MODEL, messages=MSG, temperature=0, stream=True
        )
        if c.choices
    )
    wait_exact_entries(caller.tenant, 1)
    h, again = _ask(client)
    assert h["x-switchyard-cache"] == "hit-exact"
    assert again.choices[0].message.content == streamed == "echo: list three colours"


def test_completions_endpoint_is_cached_too(make_caller):
    caller = make_caller(**EXACT_ONLY)
    client = caller.client()
    first = client.completions.with_raw_response.create(model=MODEL, prompt="abc def", seed=1)
    wait_exact_entries(caller.tenant, 1)
    again = client.completions.with_raw_response.create(model=MODEL, prompt="abc def", seed=1)
    assert again.headers["x-switchyard-cache"] == "hit-exact"
    assert again.parse().choices[0].text == first.parse().choices[0].text


def test_cache_control_no_cache_bypasses_the_lookup(make_caller):
    caller = make_caller(**EXACT_ONLY)
    client = caller.client()
    _ask(client)
    wait_exact_entries(caller.tenant, 1)
    h, _ = _ask(client, extra_headers={"Cache-Control": "no-cache"})
    assert h["x-switchyard-cache"] == "miss"
    assert _ask(client)[0]["x-switchyard-cache"] == "hit-exact"


def test_request_field_cache_false_keeps_the_request_out(make_caller, upstream_url):
    caller = make_caller(exact_cache_enabled=True, semantic_cache_enabled=True)
    client = caller.client()
    for _ in range(2):
        h, r = _ask(client, extra_body={"cache": False})
        assert h["x-switchyard-cache"] == "miss"
        assert r.choices[0].message.content == "echo: list three colours"
    h, _ = _ask(client, extra_headers={"Cache-Control": "no-store"})
    assert h["x-switchyard-cache"] == "miss"
    # Nothing was stored by any of them: a normal request is still a miss.
    assert not SemanticCacheEntry.objects.filter(tenant=caller.tenant).exists()
    assert _ask(client)[0]["x-switchyard-cache"] == "miss"


def test_bad_cache_field_is_a_400_naming_it(make_caller):
    caller = make_caller(**EXACT_ONLY)
    r = caller.post("/chat/completions", json={"model": MODEL, "messages": MSG, "cache": "no"})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "cache"


def test_tier_switch_off_means_no_exact_cache(make_caller):
    caller = make_caller(exact_cache_enabled=False, semantic_cache_enabled=False)
    client = caller.client()
    for _ in range(2):
        assert _ask(client)[0]["x-switchyard-cache"] == "miss"


def test_tenant_b_never_receives_tenant_as_exact_entry(make_caller):
    a = make_caller(**EXACT_ONLY)
    b = make_caller(**EXACT_ONLY)
    _ask(a.client())
    wait_exact_entries(a.tenant, 1)
    assert _ask(a.client())[0]["x-switchyard-cache"] == "hit-exact"
    assert _ask(b.client())[0]["x-switchyard-cache"] == "miss"


def test_request_log_records_the_cache_outcome(make_caller):
    from serving.models import RequestLog

    caller = make_caller(**EXACT_ONLY)
    h1, _ = _ask(caller.client())
    wait_exact_entries(caller.tenant, 1)
    h2, _ = _ask(caller.client())
    drain()
    logs = dict(RequestLog.objects.filter(tenant=caller.tenant).values_list("request_id", "cache"))
    assert logs == {h1["x-request-id"]: "miss", h2["x-request-id"]: "hit-exact"}


def test_sse_hit_over_plain_http(make_caller):
    caller = make_caller(**EXACT_ONLY)
    _ask(caller.client())
    wait_exact_entries(caller.tenant, 1)
    body = {"model": MODEL, "messages": MSG, "temperature": 0, "stream": True}
    with httpx.stream(
        "POST", f"{caller.base_url}/v1/chat/completions", json=body,
        headers={"Authorization": f"Bearer {caller.key}"}, timeout=30,
    ) as r:  # fmt: skip
        lines = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
    assert r.headers["x-switchyard-cache"] == "hit-exact"
    assert lines[-1] == "data: [DONE]"
    first = json.loads(lines[0][6:])
    assert first["object"] == "chat.completion.chunk" and first["model"] == MODEL


def test_cap_drops_the_oldest_exact_entries(make_caller):
    from serving.cache.services import cache_enforce_caps

    caller = make_caller(cache_max_entries=2, **EXACT_ONLY)
    client = caller.client()
    for n, tokens in enumerate((3, 4, 5), start=1):
        _ask(client, max_tokens=tokens)
        wait_exact_entries(caller.tenant, n)
    assert cache_enforce_caps()[caller.tenant.pk] == 1
    assert _ask(client, max_tokens=3)[0]["x-switchyard-cache"] == "miss"
    assert _ask(client, max_tokens=5)[0]["x-switchyard-cache"] == "hit-exact"
