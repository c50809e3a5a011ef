"""The official openai client against the gateway: every endpoint, stream or not."""

import openai
import pytest

from tests.serving.gateway.conftest import MODEL


def test_chat_completion(make_caller):
    caller = make_caller()
    raw = caller.client().chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hello there"}], max_tokens=10
    )
    resp = raw.parse()
    assert resp.choices[0].message.content == "echo: hello there"
    assert resp.model == MODEL
    assert resp.usage.completion_tokens == 3 and resp.usage.prompt_tokens > 0
    assert raw.headers["x-request-id"].startswith("req_")
    assert "deployment=instant" in raw.headers["x-switchyard-route"]
    assert raw.headers["x-switchyard-cache"] == "miss"
    assert int(raw.headers["x-ratelimit-remaining-requests"]) >= 0


def test_chat_stream_with_usage(make_caller):
    caller = make_caller()
    stream = caller.client().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: one two three"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4


def test_stream_without_usage_has_no_usage_chunk(make_caller):
    caller = make_caller()
    chunks = list(
        caller.client().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert all(c.usage is None for c in chunks) and all(c.choices for c in chunks)


def test_completions_stream_and_not(make_caller):
    client = make_caller().client()
    resp = client.completions.create(model=MODEL, prompt="a b c", max_tokens=2)
    assert resp.choices[0].text == "echo: a" and resp.choices[0].finish_reason == "length"
    text = "".join(
        c.choices[0].text for c in client.completions.create(model=MODEL, prompt="x y", stream=True)
    )
    assert text == "echo: x y"


def test_embeddings(make_caller):
    resp = make_caller().client().embeddings.create(model="all-minilm-l6-v2", input=["a", "b"])
    assert len(resp.data) == 2 and len(resp.data[0].embedding) == 384


def test_models_lists_only_what_the_tier_allows(make_caller):
    client = make_caller(allowed_models=[MODEL], default_model=MODEL).client()
    assert [m.id for m in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("all-minilm-l6-v2")


async def test_async_client(caller):
    client = caller.aclient()
    resp = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "async"}]
    )
    assert resp.choices[0].message.content == "echo: async"
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "async stream"}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text == "echo: async stream"
