"""One request's failure is its own: tiny temperatures are greedy, a poisoned sampling row,
a forward pass that raises for one sequence or an output step that raises fail that request
only (the others finish with the text they get alone), the engine loop survives anything,
and the prefix cache is keyed by a salted cryptographic chain."""

from __future__ import annotations

import asyncio

import pytest
import torch

from serving.engine.block_manager import chain_key, salt_root
from serving.engine.engine import AsyncEngine
from serving.engine.errors import RequestFailed
from serving.engine.sampler import sample
from serving.engine.sequence import Sequence
from serving.engine.types import GREEDY_TEMPERATURE, GenerationRequest, SamplingParams
from tests.serving.engine.conftest import chat_request

HONEST = ["What is the capital of France?", "List three colors."]


def _seq(**params) -> Sequence:
    return Sequence(request_id="r", index=0, prompt_token_ids=[1, 2], params=SamplingParams(**params),
                    tenant="t", weight=1.0, priority=0, cache_salt=None, arrival=0)  # fmt: skip


@pytest.mark.parametrize("temperature", [1e-300, 5e-324, 1e-45, GREEDY_TEMPERATURE / 2, 0.0])
def test_tiny_temperatures_are_greedy_in_the_sampler(temperature):
    logits = torch.randn(2, 50) * 30
    out = sample(logits.clone(), [_seq(temperature=temperature), _seq(temperature=1.0, top_p=0)])
    assert not out.failed
    assert out.tokens == logits.argmax(dim=-1).tolist()


def test_a_non_finite_row_fails_alone():
    logits = torch.randn(4, 50)
    logits[1, 7] = float("nan")
    logits[2, 3] = float("inf")
    seqs = [_seq(temperature=0.0), _seq(temperature=0.0), _seq(temperature=0.7), _seq(seed=5)]
    out = sample(logits.clone(), seqs)
    assert set(out.failed) == {1, 2}
    assert out.tokens[1] is None and out.tokens[2] is None
    assert out.tokens[0] == int(logits[0].argmax()) and isinstance(out.tokens[3], int)
    # A temperature that slipped past validation as NaN poisons its row only.
    out = sample(torch.randn(2, 50), [_seq(temperature=float("nan")), _seq(temperature=0.9)])
    assert set(out.failed) == {0} and isinstance(out.tokens[1], int)


def _alone(make_engine, max_tokens=12) -> dict[str, list[str]]:
    e = make_engine()
    reqs = [
        chat_request(e.tokenizer, f"h{i}", q, max_tokens=max_tokens) for i, q in enumerate(HONEST)
    ]
    return e.generate_sync(reqs)


def _run(engine, requests, poison=None) -> tuple[dict[str, str], dict[str, list]]:
    texts: dict[str, str] = {}
    ends: dict[str, list] = {}
    for r in requests:
        engine.add_request(r)
        texts[r.request_id] = ""
    if poison:
        poison()
    while engine.has_work():
        for d in engine.step():
            texts[d.request_id] += d.text
            if d.finish_reason:
                ends.setdefault(d.request_id, []).append(d)
    return texts, ends


def _requests(engine, max_tokens=12):
    reqs = [chat_request(engine.tokenizer, f"h{i}", q, max_tokens=max_tokens)
            for i, q in enumerate(HONEST)]  # fmt: skip
    bad = chat_request(engine.tokenizer, "bad", "Tell me a story.", max_tokens=12)
    return [reqs[0], bad, reqs[1]], bad


def _assert_clean(engine):
    assert not engine.has_work()
    assert engine.block_manager.num_used == 0
    assert all(b.ref_count == 0 for b in engine.block_manager.blocks)


def test_a_poisoned_sampling_row_fails_only_its_request(make_engine):
    expected = _alone(make_engine)
    engine = make_engine()
    reqs, bad = _requests(engine)
    # Past validation, its temperature turns to NaN: its row of the batch is NaN.
    texts, ends = _run(engine, reqs, lambda: setattr(bad.params, "temperature", float("nan")))
    assert {k: [v] for k, v in texts.items() if k != "bad"} == expected
    (err,) = ends["bad"]
    assert err.finish_reason == "error" and err.error_status == 400
    assert err.error_code == "generation_failed" and "not finite" in err.error
    assert err.usage.prompt_tokens == len(bad.prompt_token_ids)
    assert engine.stats().failed_total == 1
    _assert_clean(engine)


def test_a_forward_pass_that_raises_for_one_sequence_fails_only_it(make_engine):
    expected = _alone(make_engine)
    engine = make_engine()
    reqs, _ = _requests(engine)
    real_run = engine.runner.run

    def run(batch):
        if any(it.seq.request_id == "bad" and it.seq.num_output_tokens >= 2 for it in batch):
            raise RuntimeError("device fault")
        return real_run(batch)

    engine.runner.run = run
    texts, ends = _run(engine, reqs)
    assert {k: [v] for k, v in texts.items() if k != "bad"} == expected
    (err,) = ends["bad"]
    assert err.error_status == 400 and "device fault" in err.error
    assert err.usage.completion_tokens == 2
    _assert_clean(engine)


def test_an_output_step_that_raises_fails_only_its_request(make_engine):
    expected = _alone(make_engine)
    engine = make_engine()
    reqs, _ = _requests(engine)
    # Its detokenization state goes missing: handling its next token raises.
    texts, ends = _run(engine, reqs, lambda: engine._out.pop(engine._requests["bad"][0].seq_id))
    assert {k: [v] for k, v in texts.items() if k != "bad"} == expected
    assert ends["bad"][0].error_code == "generation_failed"
    _assert_clean(engine)


def test_when_nothing_can_be_served_it_is_the_engines_fault(make_engine):
    engine = make_engine()
    reqs, _ = _requests(engine)

    def broken(batch):
        raise RuntimeError("no device")

    real_run, engine.runner.run = engine.runner.run, broken
    _, ends = _run(engine, reqs)
    assert {d.error_status for e in ends.values() for d in e} == {500}
    assert {d.error_code for e in ends.values() for d in e} == {"engine_error"}
    _assert_clean(engine)
    engine.runner.run = real_run  # the engine serves the next request as if nothing happened
    assert (
        "Paris" in engine.generate_sync([chat_request(engine.tokenizer, "ok", HONEST[0])])["ok"][0]
    )


def test_the_engine_loop_survives_a_failing_step(make_engine):
    engine = make_engine()
    aengine = AsyncEngine(engine)
    real_step = engine.step
    calls = {"n": 0}

    def step():
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("scheduler bug")
        return real_step()

    engine.step = step

    async def go():
        await aengine.start()
        try:

            async def text(rid: str) -> str:
                out = ""
                async for d in aengine.generate(chat_request(engine.tokenizer, rid, HONEST[0])):
                    out += d.text
                return out

            with pytest.raises(RequestFailed) as failed:
                await text("first")
            assert failed.value.status == 500 and failed.value.code == "engine_error"
            return await text("second")
        finally:
            await aengine.stop()

    assert "Paris" in asyncio.run(go())
    _assert_clean(engine)


def test_abort_reports_the_work_done_and_remembers_it(engine):
    req = chat_request(engine.tokenizer, "a", HONEST[0], max_tokens=50)
    queued = chat_request(engine.tokenizer, "q", HONEST[1])
    engine.add_request(req)
    for _ in range(4):
        engine.step()
    engine.scheduler.max_num_seqs = 1
    engine.add_request(queued)
    engine.step()
    finals = engine.abort("a")
    assert finals[0].finish_reason == "abort"
    assert finals[0].usage.prompt_tokens == len(req.prompt_token_ids)
    assert finals[0].usage.completion_tokens == 5
    assert engine.usage("a") == finals[0].usage  # after the end, from the recent record
    assert engine.abort("a") == []  # idempotent
    # A request still waiting has done no work.
    engine.abort("q")
    assert engine.usage("q").prompt_tokens == 0 and engine.usage("q").completion_tokens == 0
    assert engine.usage("never") is None
    _assert_clean(engine)


def test_prefix_blocks_are_shared_within_a_salt_only(engine):
    ids = engine.tokenizer.encode("Once upon a time in a land far away " * 8)
    params = SamplingParams(temperature=0, max_tokens=2)

    def cached(rid, salt):
        deltas = []
        engine.add_request(GenerationRequest(rid, ids, params, cache_salt=salt))
        while engine.has_work():
            deltas += engine.step()
        return deltas[-1].cached_tokens

    assert cached("a1", "tenant-a") == 0
    assert cached("b1", "tenant-b") == 0
    assert cached("a2", "tenant-a") >= 16 * ((len(ids) - 1) // 16) - 16 > 0
    assert cached("none", None) == 0


def test_block_keys_are_chained_salted_digests():
    root_a, root_b = salt_root("a"), salt_root("b")
    assert root_a != root_b != salt_root(None) and len(root_a) == 32
    k1 = chain_key(root_a, [1, 2, 3])
    assert chain_key(k1, [4]) != chain_key(chain_key(root_a, [1, 2, 4]), [4])
    assert k1 != chain_key(root_b, [1, 2, 3])
    assert chain_key(root_a, [1, 2, 3]) == k1  # stable across processes (no PYTHONHASHSEED)
