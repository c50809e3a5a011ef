"""Attacks on the model worker, over real HTTP (the ``worker`` fixture: the real engine under
uvicorn, with an auth token; and a worker process of its own for start-up).

- ``temperature: 1e-300`` (and ``top_p: 0``) beside honest streams: greedy, nobody hurt.
- A request whose sampling row turns to NaN mid-stream (injected in the engine, since
  validation now refuses every natural one): it alone ends, with an error event and no
  ``[DONE]``; honest streams in the same steps finish with the text they get alone.
- Clients that go away (non-streaming, or still queued) are aborted and their blocks freed;
  ``POST /v1/abort`` by ``x-request-id`` aborts and reports the work done, idempotently.
- The prefix cache is not shared across tenants (no timing side channel), only within a
  tenant or a shared salt.
- Direct calls without the worker token are refused and never reach the engine.
- A worker process answers at once: liveness 200, readiness 503 ``starting``, generation 503
  ``model_loading`` with ``Retry-After``, until the model is loaded and warmed up.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from switchyard.embedded import free_port
from switchyard.processes import stop_process
from tests.worker_fixtures import MODEL

ERROR_KEYS = {"message", "type", "param", "code"}
HONEST = ["What is the capital of France?", "List three colors.", "Name a large animal."]


def _chat(question: str, **kw) -> dict:
    body = {"model": MODEL, "messages": [{"role": "user", "content": question}],
            "temperature": 0, "max_tokens": 16}  # fmt: skip
    return body | kw


async def _stream(client: httpx.AsyncClient, body: dict, headers: dict) -> tuple[str, list]:
    """The text of a stream and its raw ``data:`` payloads (parsed, or the string [DONE])."""
    events: list = []
    async with client.stream("POST", "/v1/chat/completions", json=body | {"stream": True},
                             headers=headers) as r:  # fmt: skip
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                data = line[6:]
                events.append(data if data == "[DONE]" else json.loads(data))
    text = "".join(
        c["delta"].get("content") or "" for e in events if isinstance(e, dict)
        for c in e.get("choices", [])
    )  # fmt: skip
    return text, events


def _alone(worker, questions=HONEST) -> list[str]:
    with httpx.Client(base_url=worker.url, headers=worker.headers, timeout=120) as c:
        return [c.post("/v1/chat/completions", json=_chat(q)).json()["choices"][0]["message"]
                ["content"] for q in questions]  # fmt: skip


def _wait_idle(engine, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = engine.stats()
        if s.running == 0 and s.waiting == 0 and s.kv_blocks_used == 0:
            return
        time.sleep(0.05)
    s = engine.stats()
    raise AssertionError(f"engine not idle: {s}")


def _assert_error_event(events: list, code: str) -> dict:
    assert "[DONE]" not in events, events[-3:]
    last = events[-1]
    assert set(last["error"]) == ERROR_KEYS and last["error"]["code"] == code, last
    return last


def test_tiny_temperature_and_top_p_zero_are_greedy_beside_honest_streams(worker):
    expected = _alone(worker)
    headers = worker.headers

    async def run():
        async with httpx.AsyncClient(base_url=worker.url, timeout=120) as c:
            honest = [_stream(c, _chat(q), headers) for q in HONEST]
            hostile = [
                c.post("/v1/chat/completions", json=_chat(HONEST[0], temperature=1e-300),
                       headers=headers),
                c.post("/v1/chat/completions", json=_chat(HONEST[1], temperature=5e-324,
                                                          top_p=0.5), headers=headers),
                c.post("/v1/chat/completions", json=_chat(HONEST[2], temperature=1.0, top_p=0),
                       headers=headers),
                _stream(c, _chat(HONEST[0], temperature=1e-300), headers),
            ]  # fmt: skip
            return await asyncio.gather(*honest), await asyncio.gather(*hostile)

    honest, hostile = asyncio.run(run())
    for (text, events), want in zip(honest, expected, strict=True):
        assert text == want and events[-1] == "[DONE]"
    for resp, want in zip(hostile[:3], expected, strict=True):
        assert resp.status_code == 200, resp.text
        assert resp.json()["choices"][0]["message"]["content"] == want  # greedy
    assert hostile[3][0] == expected[0] and hostile[3][1][-1] == "[DONE]"
    _wait_idle(worker.app.state.engine)


@pytest.fixture
def poison(worker):
    """Requests of tenant ``poison`` get NaN logits from their third token on (a stand-in for
    whatever makes one row of a batch non-finite)."""
    llm = worker.app.state.engine.engine
    real_run = llm.runner.run

    def run(batch):
        logits = real_run(batch)
        sampling = [it for it in batch if it.samples]
        for row, it in enumerate(sampling):
            if it.seq.tenant == "poison" and it.seq.num_output_tokens >= 2:
                logits[row] = float("nan")
        return logits

    llm.runner.run = run
    yield {**worker.headers, "x-switchyard-tenant": "poison"}
    llm.runner.run = real_run


def test_a_poisoned_request_fails_alone_and_says_so(worker, poison):
    expected = _alone(worker)
    headers = worker.headers

    async def run():
        async with httpx.AsyncClient(base_url=worker.url, timeout=120) as c:
            return await asyncio.gather(
                *(_stream(c, _chat(q, max_tokens=16), headers) for q in HONEST),
                _stream(c, _chat("Tell me a story.", max_tokens=40), poison),
                c.post("/v1/chat/completions", json=_chat("Tell me a joke.", max_tokens=40),
                       headers=poison),
                *(_stream(c, _chat(q, max_tokens=16), headers) for q in HONEST[:1]),
            )  # fmt: skip

    *honest, (bad_text, bad_events), bad_json, late = asyncio.run(run())
    for (text, events), want in zip(honest[:3] + [late], expected + expected[:1], strict=True):
        assert text == want and events[-1] == "[DONE]"
        assert not any(isinstance(e, dict) and "error" in e for e in events)
    # The poisoned stream got its first tokens, then an error event, and no [DONE].
    assert bad_text and len([e for e in bad_events if "choices" in e]) == 2
    last = _assert_error_event(bad_events, "generation_failed")
    assert last["error"]["type"] == "invalid_request_error"
    assert last["usage"]["completion_tokens"] == 2 and last["usage"]["prompt_tokens"] > 0
    assert bad_json.status_code == 400
    body = bad_json.json()
    assert set(body["error"]) == ERROR_KEYS and body["error"]["code"] == "generation_failed"
    _wait_idle(worker.app.state.engine)
    s = httpx.get(f"{worker.url}/health").json()
    assert s["status"] == "ready" and s["failed_requests"] >= 2


def _long(question="Tell me a long story about a lighthouse.", **kw) -> dict:
    return _chat(question, max_tokens=400, ignore_eos=True) | kw


def test_abort_endpoint_aborts_by_request_id_and_reports_the_work_done(worker):
    engine = worker.app.state.engine
    rid = f"adv-{uuid.uuid4().hex}"
    _wait_idle(engine)
    generated = engine.stats().generation_tokens_total

    async def run():
        async with httpx.AsyncClient(base_url=worker.url, headers=worker.headers,
                                     timeout=120) as c:  # fmt: skip
            call = asyncio.ensure_future(
                c.post("/v1/chat/completions", json=_long(), headers={"x-request-id": rid})
            )
            while engine.stats().generation_tokens_total < generated + 3:
                await asyncio.sleep(0.05)
            first = await c.post("/v1/abort", json={"request_id": rid})
            again = await c.post("/v1/abort", json={"request_id": rid})
            unknown = await c.post("/v1/abort", json={"request_id": "never-sent"})
            return await call, first, again, unknown

    call, first, again, unknown = asyncio.run(run())
    assert first.status_code == 200
    f = first.json()
    assert f["request_id"] == rid and f["aborted"] is True
    assert f["usage"]["prompt_tokens"] > 20 and 0 < f["usage"]["completion_tokens"] < 400
    # The aborted call ends with an error, never a truncated success.
    assert call.status_code == 409 and call.json()["error"]["code"] == "request_aborted"
    assert call.json()["usage"]["completion_tokens"] == f["usage"]["completion_tokens"]
    # Late and repeated aborts are harmless and still report the usage.
    assert again.status_code == 200 and again.json() == f | {"aborted": False}
    assert unknown.status_code == 200 and unknown.json()["aborted"] is False
    assert unknown.json()["usage"]["completion_tokens"] == 0
    _wait_idle(engine)
    bad = httpx.post(f"{worker.url}/v1/abort", json={"request_id": 7}, headers=worker.headers)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "request_id"


@pytest.fixture
def one_slot(worker):
    """One sequence at a time: the second request waits in the queue."""
    scheduler = worker.app.state.engine.engine.scheduler
    saved = scheduler.max_num_seqs
    scheduler.max_num_seqs = 1
    yield
    scheduler.max_num_seqs = saved


def test_clients_that_go_away_are_aborted_running_or_queued(worker, one_slot):
    engine = worker.app.state.engine
    holder, queued, running = (f"adv-{uuid.uuid4().hex}" for _ in range(3))

    async def run():
        async with httpx.AsyncClient(base_url=worker.url, headers=worker.headers,
                                     timeout=120) as c:  # fmt: skip
            hold = asyncio.ensure_future(
                c.post("/v1/chat/completions", json=_long(), headers={"x-request-id": holder})
            )
            while engine.stats().running == 0:
                await asyncio.sleep(0.05)
            # A non-streaming client gives up while its request is still queued.
            with pytest.raises(httpx.ReadTimeout):
                await c.post("/v1/chat/completions", json=_long(), timeout=1.5,
                             headers={"x-request-id": queued})  # fmt: skip
            deadline = time.monotonic() + 10
            while engine.stats().waiting and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert engine.stats().waiting == 0
            late = await c.post("/v1/abort", json={"request_id": queued})
            assert late.json() == {"request_id": queued, "aborted": False, "usage": {
                "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
                "prompt_tokens_details": {"cached_tokens": 0}}}  # fmt: skip
            await c.post("/v1/abort", json={"request_id": holder})
            assert (await hold).status_code == 409
            # A non-streaming client gives up while its request is generating.
            with pytest.raises(httpx.ReadTimeout):
                await c.post("/v1/chat/completions", json=_long(), timeout=5,
                             headers={"x-request-id": running})  # fmt: skip
            await asyncio.to_thread(_wait_idle, engine)  # aborted, not generating 400 tokens
            return await c.post("/v1/abort", json={"request_id": running})

    after = asyncio.run(run())
    # It was aborted when its client left: a late abort finds it finished, with its work.
    assert after.json()["aborted"] is False
    assert 0 < after.json()["usage"]["completion_tokens"] < 400


def _cached(worker, prompt: str, **headers) -> int:
    r = httpx.post(f"{worker.url}/v1/completions", headers=worker.headers | headers, timeout=60,
                   json={"model": MODEL, "prompt": prompt, "max_tokens": 1, "temperature": 0})  # fmt: skip
    assert r.status_code == 200, r.text
    return r.json()["usage"]["prompt_tokens_details"]["cached_tokens"]


def test_the_prefix_cache_is_not_shared_across_tenants(worker):
    prompt = f"{uuid.uuid4().hex} " + "The quick brown fox jumps over the lazy dog. " * 12
    assert _cached(worker, prompt, **{"x-switchyard-tenant": "tenant-a"}) == 0
    # Tenant B sends the same prompt: nothing cached (and its first token no faster).
    assert _cached(worker, prompt, **{"x-switchyard-tenant": "tenant-b"}) == 0
    assert _cached(worker, prompt, **{"x-switchyard-tenant": "tenant-a"}) >= 64
    # Tenants in one shared pool share it.
    pool = {"x-switchyard-prefix-salt": f"pool-{uuid.uuid4().hex}"}
    assert _cached(worker, prompt, **{"x-switchyard-tenant": "tenant-c"}, **pool) == 0
    assert _cached(worker, prompt, **{"x-switchyard-tenant": "tenant-d"}, **pool) >= 64


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", "Bearer {token}x", "Bearer {short}", "Basic {token}", "bearer",
     "{token}"],
)  # fmt: skip
def test_direct_calls_without_the_worker_token_are_refused(worker, authorization):
    engine = worker.app.state.engine
    before = engine.stats().generation_tokens_total
    headers = {"x-switchyard-tenant": "victim", "x-switchyard-weight": "1000",
               "x-switchyard-prefix-salt": "victim"}  # fmt: skip
    if authorization is not None:
        headers["Authorization"] = authorization.format(token=worker.token, short=worker.token[:-1])
    with httpx.Client(base_url=worker.url, headers=headers, timeout=30) as c:
        for method, path, body in (
            ("POST", "/v1/chat/completions", _chat(HONEST[0])),
            ("POST", "/v1/completions", {"model": MODEL, "prompt": "Hi"}),
            ("POST", "/v1/embeddings", {"model": "all-minilm-l6-v2", "input": "hi"}),
            ("POST", "/v1/abort", {"request_id": "x"}),
            ("GET", "/v1/models", None),
        ):
            r = c.request(method, path, json=body)
            assert r.status_code == 401, (path, r.text)
            assert set(r.json()["error"]) == ERROR_KEYS
            assert r.json()["error"]["code"] == "invalid_api_key"
            assert r.headers["www-authenticate"] == "Bearer"
        # Probes stay open: they reveal load, never content.
        for path in ("/healthz", "/readyz", "/health", "/metrics"):
            assert c.get(path).status_code == 200, path
    assert engine.stats().generation_tokens_total == before


def test_bad_bodies_are_400s_not_500s(worker):
    post = lambda body, **kw: httpx.post(  # noqa: E731
        f"{worker.url}/v1/chat/completions", content=body, timeout=30,
        headers=worker.headers | {"content-type": "application/json"}, **kw)  # fmt: skip
    assert post(b"[" * 100_000 + b"]" * 100_000).status_code == 400  # RecursionError
    assert post(b" " * (9 << 20)).status_code == 413
    parts = json.dumps(_chat("x") | {"messages": [{"role": "user", "content": [{"text": 5}]}]})
    r = post(parts.encode())
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].content"
    for field, value in (("temperature", float("nan")), ("top_p", -1e-300), ("n", 10**30)):
        r = post(json.dumps(_chat("x") | {field: value}).encode())
        assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text
    for weight in ("1e-300", "nan", "inf", "9" * 5000):
        r = httpx.post(f"{worker.url}/v1/chat/completions", json=_chat("x"), timeout=30,
                       headers=worker.headers | {"x-switchyard-weight": weight})  # fmt: skip
        assert r.status_code == 400 and "x-switchyard-weight" in r.json()["error"]["message"]


@pytest.mark.slow  # starts a worker process
def test_a_worker_process_answers_at_once_and_is_honest_about_warm_up():
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    token = uuid.uuid4().hex
    env = {**os.environ, "SWITCHYARD_WORKER_TOKEN": token, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving.engine.cli", "--port", str(port), "--no-embeddings",
         "--kv-cache-mb", "32"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    auth = {"Authorization": f"Bearer {token}"}
    try:
        deadline = time.monotonic() + 120
        while True:  # the port is bound before the model loads
            assert proc.poll() is None and time.monotonic() < deadline
            try:
                live = httpx.get(f"{url}/healthz", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        ready = httpx.get(f"{url}/readyz")
        health = httpx.get(f"{url}/health")
        call = httpx.post(f"{url}/v1/chat/completions", json=_chat("Hi"), headers=auth)
        anonymous = httpx.post(f"{url}/v1/chat/completions", json=_chat("Hi"))
        assert live.status_code == 200 and live.json() == {"status": "alive"}
        assert ready.status_code == 503 and ready.json() == {"status": "starting"}
        assert health.status_code == 503 and health.json()["status"] == "starting"
        assert int(ready.headers["retry-after"]) > 0
        assert call.status_code == 503 and int(call.headers["retry-after"]) > 0
        assert set(call.json()["error"]) == ERROR_KEYS
        assert call.json()["error"]["code"] == "model_loading"
        assert anonymous.status_code == 401  # the token is checked even while loading
        while httpx.get(f"{url}/readyz").status_code != 200:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        assert httpx.get(f"{url}/readyz").json() == {"status": "ready"}
        assert httpx.get(f"{url}/health").json()["status"] == "ready"
        r = httpx.post(f"{url}/v1/chat/completions", json=_chat(HONEST[0]), headers=auth,
                       timeout=60)  # fmt: skip
        assert r.status_code == 200 and "Paris" in r.json()["choices"][0]["message"]["content"]
        assert httpx.post(f"{url}/v1/chat/completions", json=_chat("Hi")).status_code == 401
    finally:
        stop_process(proc)
