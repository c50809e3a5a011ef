"""The model worker over real HTTP with the official openai client."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from tests.serving.engine.conftest import MODEL

Q = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def client(worker) -> openai.OpenAI:
    return openai.OpenAI(api_key=worker.token, base_url=f"{worker.url}/v1", max_retries=0)


def test_chat_completion(client):
    r = client.chat.completions.create(model=MODEL, messages=Q, temperature=0, max_tokens=20)
    assert "Paris" in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 20 and r.usage.completion_tokens > 3


def test_chat_stream_with_usage(client):
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=Q,
            temperature=0,
            max_tokens=20,
            stream=True,
            stream_options={"include_usage": True},
        )  # fmt: skip
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 3


def test_completions_and_n(client):
    r = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=4,
                                  temperature=0.8, n=2, seed=3)  # fmt: skip
    assert sorted(c.index for c in r.choices) == [0, 1]
    assert r.usage.completion_tokens <= 8


def test_seed_is_reproducible_over_http(client):
    kw = dict(model=MODEL, messages=Q, temperature=1.0, seed=42, max_tokens=12)
    a = client.chat.completions.create(**kw).choices[0].message.content
    b = client.chat.completions.create(**kw).choices[0].message.content
    assert a == b


def test_stop_and_logprobs(client):
    r = client.chat.completions.create(model=MODEL, messages=Q, temperature=0, max_tokens=20,
                                       stop=["Paris"], logprobs=True, top_logprobs=2)  # fmt: skip
    assert "Paris" not in r.choices[0].message.content
    lp = r.choices[0].logprobs.content
    assert lp and len(lp[0].top_logprobs) == 2


def test_embeddings_are_normalised_and_batched(worker, client):
    r = client.embeddings.create(model="all-minilm-l6-v2", input=["hello", "world"])
    assert len(r.data) == 2 and len(r.data[0].embedding) == 384
    assert abs(sum(x * x for x in r.data[0].embedding) - 1) < 1e-3

    async def many():
        c = openai.AsyncOpenAI(api_key=worker.token, base_url=f"{worker.url}/v1", max_retries=0)
        return await asyncio.gather(
            *(c.embeddings.create(model="all-minilm-l6-v2", input=f"text {i}") for i in range(12))
        )

    batcher = worker.app.state.batcher
    runs = batcher.batches_run
    asyncio.run(many())
    assert batcher.batches_run - runs < 12 and batcher.largest_batch > 1


def test_models_health_metrics(worker, client):
    assert {m.id for m in client.models.list()} == {MODEL, "all-minilm-l6-v2"}
    h = httpx.get(f"{worker.url}/health").json()
    assert h["status"] == "ready" and h["kv_blocks_total"] > 0 and "waiting" in h
    text = httpx.get(f"{worker.url}/metrics").text
    for name in ("switchyard_num_requests_running", "switchyard_kv_cache_usage_perc",
                 "switchyard_prefix_cache_hit_rate", "switchyard_time_to_first_token_seconds",
                 "switchyard_inter_token_latency_seconds_bucket"):  # fmt: skip
        assert name in text


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": MODEL, "messages": [{"role": "user", "content": "x " * 9000}]}, 400, "messages"),
        ({"model": MODEL, "messages": Q, "temperature": 5}, 400, "temperature"),
        ({"model": MODEL, "messages": Q, "max_tokens": 0}, 400, "max_tokens"),
        ({"model": MODEL, "messages": []}, 400, "messages"),
        ({"model": "nope", "messages": Q}, 404, "model"),
    ],
)
def test_bad_input_is_an_openai_error(worker, body, status, param):
    r = httpx.post(f"{worker.url}/v1/chat/completions", json=body, headers=worker.headers)
    assert r.status_code == status
    assert r.json()["error"]["param"] == param


def test_disconnect_frees_the_sequence_and_its_blocks(worker):
    engine = worker.app.state.engine
    with httpx.stream("POST", f"{worker.url}/v1/chat/completions", json={
        "model": MODEL, "messages": Q, "max_tokens": 500, "stream": True,
        "temperature": 1.0, "seed": 1}, headers=worker.headers) as r:  # fmt: skip
        for i, _ in enumerate(r.iter_lines()):
            if i > 3:
                break
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        s = engine.stats()
        if s.running == 0 and s.kv_blocks_used == 0:
            break
        time.sleep(0.05)
    s = engine.stats()
    assert s.running == 0 and s.kv_blocks_used == 0


def test_overload_is_503_with_retry_after(worker):
    engine = worker.app.state.engine.engine
    saved = engine.max_waiting
    engine.max_waiting = 0
    try:
        r = httpx.post(f"{worker.url}/v1/chat/completions", json={"model": MODEL, "messages": Q},
                       headers=worker.headers)  # fmt: skip
    finally:
        engine.max_waiting = saved
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
