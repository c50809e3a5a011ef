"""What a cached answer is keyed by (no services needed)."""

from types import SimpleNamespace

from serving.cache.keys import (
    bypass_requested,
    exact_key,
    is_deterministic,
    scope_for,
    semantic_key,
)

MODEL = "smollm2-135m-instruct"


def skey(endpoint, body):
    """The semantic key of a tier that also caches sampled requests (key shape tests)."""
    return semantic_key(endpoint, body, sampled_ok=True)


def _chat(*messages, **params):
    return {"model": "up", "messages": list(messages), **params}


def user(text):
    return {"role": "user", "content": text}


def test_exact_key_ignores_what_does_not_change_the_output():
    a = _chat(user("hi"), temperature=0, max_tokens=5)
    b = {**a, "stream": True, "stream_options": {"include_usage": True}, "user": "u1",
         "metadata": {"x": "y"}, "model": "another-upstream-name"}  # fmt: skip
    assert exact_key("t:1", MODEL, "chat.completions", a) == exact_key(
        "t:1", MODEL, "chat.completions", b
    )


def test_exact_key_changes_with_scope_model_input_and_parameters():
    base = _chat(user("hi"), temperature=0, max_tokens=5)
    key = exact_key("t:1", MODEL, "chat.completions", base)
    others = [
        exact_key("t:2", MODEL, "chat.completions", base),
        exact_key("shared", MODEL, "chat.completions", base),
        exact_key("t:1", "other-model", "chat.completions", base),
        exact_key("t:1", MODEL, "chat.completions", {**base, "max_tokens": 6}),
        exact_key("t:1", MODEL, "chat.completions", {**base, "seed": 1}),
        exact_key(
            "t:1", MODEL, "chat.completions", _chat(user("hi!"), temperature=0, max_tokens=5)
        ),
        exact_key("t:1", MODEL, "completions", {"prompt": "hi", "temperature": 0, "max_tokens": 5}),
    ]
    assert key not in others and len(set(others)) == len(others)


def test_key_order_of_parameters_does_not_matter():
    a = {"messages": [user("x")], "temperature": 0, "top_p": 1}
    b = {"top_p": 1, "temperature": 0, "messages": [user("x")]}
    assert exact_key("t:1", MODEL, "chat.completions", a) == exact_key(
        "t:1", MODEL, "chat.completions", b
    )


def test_deterministic_means_temperature_zero_or_a_seed():
    assert is_deterministic({"temperature": 0})
    assert is_deterministic({"temperature": 1.2, "seed": 3})
    assert not is_deterministic({})
    assert not is_deterministic({"temperature": 0.1})


def test_semantic_key_hashes_context_and_keeps_the_last_user_message():
    sys = {"role": "system", "content": "Be brief."}
    k1 = skey("chat.completions", _chat(sys, user(" What is 2+2? ")))
    k2 = skey("chat.completions", _chat(sys, user("Something else entirely")))
    k3 = skey("chat.completions", _chat({"role": "system", "content": "Be long."}, user("x")))
    k4 = skey("chat.completions", _chat(sys, user("x"), temperature=0.5))
    assert k1.text == "What is 2+2?"
    assert k1.context_hash == k2.context_hash
    assert len({k1.context_hash, k3.context_hash, k4.context_hash}) == 3


def test_earlier_turns_are_context():
    one = _chat(user("a"), {"role": "assistant", "content": "b"}, user("c"))
    two = _chat(user("a"), {"role": "assistant", "content": "B"}, user("c"))
    assert skey("chat.completions", one).context_hash != skey("chat.completions", two).context_hash


def test_sampled_requests_and_tools_are_not_embedded_unless_the_tier_opts_in():
    sampled = {"messages": [user("a")], "temperature": 0.7}
    assert semantic_key("chat.completions", sampled) is None
    assert semantic_key("chat.completions", {"messages": [user("a")]}) is None  # default 1
    assert semantic_key("chat.completions", sampled, sampled_ok=True).text == "a"
    assert semantic_key("chat.completions", {**sampled, "seed": 1}).text == "a"
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    det = {"messages": [user("a")], "temperature": 0}
    assert semantic_key("chat.completions", det).text == "a"
    assert semantic_key("chat.completions", {**det, "tools": tools}, sampled_ok=True) is None


def test_requests_the_semantic_cache_does_not_answer():
    assert skey("chat.completions", _chat(user("a"), n=2)) is None
    assert skey("chat.completions", _chat(user("a"), {"role": "assistant", "content": "b"})) is None
    assert skey("chat.completions", _chat(user("   "))) is None
    assert skey("completions", {"prompt": [1, 2, 3]}) is None
    assert skey("embeddings", {"input": "x"}) is None
    assert skey("completions", {"prompt": ["only one"], "temperature": 0}).text == ("only one")


def test_scope_is_private_unless_the_tenant_opted_into_the_pool():
    assert scope_for(SimpleNamespace(pk=7, cache_shared_pool=False)) == "t:7"
    assert scope_for(SimpleNamespace(pk=7, cache_shared_pool=True)) == "shared"


def test_bypass_directives():
    assert bypass_requested(None, None) == (False, False)
    assert bypass_requested("no-cache", None) == (True, False)
    assert bypass_requested("max-age=0, No-Store", None) == (True, True)
    assert bypass_requested(None, False) == (True, True)
    assert bypass_requested(None, True) == (False, False)
