"""The real model: answers, batching equivalence, prefix cache, preemption, cancellation."""

import pytest

from serving.engine.types import GenerationRequest, SamplingParams
from tests.serving.engine.conftest import chat_request

QUESTIONS = [
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "List three colors.",
    "Explain in detail why the sky is blue, covering Rayleigh scattering, the spectrum of "
    "sunlight, and why sunsets look red. " * 3,
]


def test_greedy_answer_names_paris(engine):
    out = engine.generate_sync([chat_request(engine.tokenizer, "a", QUESTIONS[0])])
    assert "Paris" in out["a"][0]


def test_batched_greedy_equals_one_at_a_time(make_engine):
    one = make_engine()
    alone = {}
    for i, q in enumerate(QUESTIONS):
        alone.update(one.generate_sync([chat_request(one.tokenizer, f"r{i}", q)]))
    # Small token budget: the long prompt is prefilled in chunks beside running decodes.
    batched = make_engine(max_num_batched_tokens=48)
    together = batched.generate_sync(
        [chat_request(batched.tokenizer, f"r{i}", q) for i, q in enumerate(QUESTIONS)]
    )
    assert together == alone


def test_prefix_hit_gives_the_same_output_as_a_miss(engine):
    system = "You are a meticulous assistant. " * 20
    ids = engine.tokenizer.encode(
        engine.tokenizer.apply_chat_template(
            [{"role": "system", "content": system}, {"role": "user", "content": "Say hello."}]
        )
    )
    params = SamplingParams(temperature=0, max_tokens=16)
    cold = engine.generate_sync([GenerationRequest("cold", ids, params)])
    deltas = []
    engine.add_request(GenerationRequest("warm", ids, params))
    while engine.has_work():
        deltas += engine.step()
    assert "".join(d.text for d in deltas) == cold["cold"][0]
    assert deltas[-1].cached_tokens >= 16 * ((len(ids) - 1) // 16) - 16
    assert engine.stats().prefix_hits > 0


def test_preemption_and_resume_give_the_same_text(make_engine):
    reference = make_engine()
    expected = {}
    for i, q in enumerate(QUESTIONS[:3]):
        expected.update(reference.generate_sync([chat_request(reference.tokenizer, f"p{i}", q,
                                                              max_tokens=40)]))  # fmt: skip
    # A pool this small cannot hold all three at once: the newest gets preempted (6 blocks:
    # the answers' lengths differ between float32 and quantized weights; both preempt here).
    per_block = 2 * 30 * 3 * 64 * 4 * 16
    tight = make_engine(kv_cache_bytes=per_block * 6)
    got = tight.generate_sync(
        [
            chat_request(tight.tokenizer, f"p{i}", q, max_tokens=40)
            for i, q in enumerate(QUESTIONS[:3])
        ]
    )
    assert tight.scheduler.preemptions > 0
    assert got == expected


def test_cancellation_returns_every_block(engine):
    for i, q in enumerate(QUESTIONS):
        engine.add_request(chat_request(engine.tokenizer, f"c{i}", q, max_tokens=200))
    for _ in range(5):
        engine.step()
    assert engine.block_manager.num_used > 0
    for i in range(len(QUESTIONS)):
        finals = engine.abort(f"c{i}")
        assert all(d.finish_reason == "abort" for d in finals)
    assert engine.block_manager.num_used == 0
    assert all(b.ref_count == 0 for b in engine.block_manager.blocks)
    assert not engine.has_work()


def test_seeded_sampling_is_reproducible_in_any_company(make_engine):
    e1 = make_engine()
    alone = e1.generate_sync([chat_request(e1.tokenizer, "s", QUESTIONS[1], temperature=0.9,
                                           seed=1234, max_tokens=20)])  # fmt: skip
    e2 = make_engine()
    crowd = [chat_request(e2.tokenizer, f"x{i}", q, temperature=1.0, max_tokens=20)
             for i, q in enumerate(QUESTIONS)]  # fmt: skip
    crowd.insert(2, chat_request(e2.tokenizer, "s", QUESTIONS[1], temperature=0.9, seed=1234,
                                 max_tokens=20))  # fmt: skip
    assert e2.generate_sync(crowd)["s"] == alone["s"]


def test_stop_strings_cut_the_text(engine):
    out = engine.generate_sync([chat_request(engine.tokenizer, "a", QUESTIONS[0], stop=["Paris"])])
    assert out["a"][0] == "The capital of France is "


def test_n_choices_and_max_tokens(engine):
    deltas = []
    engine.add_request(chat_request(engine.tokenizer, "n", QUESTIONS[2], n=3, max_tokens=5,
                                    temperature=1.0, seed=7))  # fmt: skip
    while engine.has_work():
        deltas += engine.step()
    finals = [d for d in deltas if d.finish_reason]
    assert sorted(d.index for d in finals) == [0, 1, 2]
    assert all(d.completion_tokens <= 5 for d in finals)


def test_logprobs(engine):
    deltas = []
    engine.add_request(chat_request(engine.tokenizer, "l", QUESTIONS[0], logprobs=True,
                                    top_logprobs=3, max_tokens=4))  # fmt: skip
    while engine.has_work():
        deltas += engine.step()
    lp = deltas[0].logprobs[0]
    assert lp.logprob <= 0 and len(lp.top) == 3
    assert lp.top[0][2] >= lp.top[1][2] >= lp.top[2][2]
    assert lp.token_id == lp.top[0][0]  # greedy picks the most likely token


@pytest.mark.parametrize(
    ("ids", "params", "message"),
    [
        ([1] * 9000, SamplingParams(max_tokens=10), "maximum context length"),
        ([1, 2], SamplingParams(max_tokens=0), "max_tokens"),
        ([1, 2], SamplingParams(n=0), "n must"),
        ([], SamplingParams(), "empty"),
        ([10**9], SamplingParams(), "vocabulary"),
    ],
)
def test_bad_requests_raise_value_error(engine, ids, params, message):
    with pytest.raises(ValueError, match=message):
        engine.add_request(GenerationRequest("bad", ids, params))
