"""The scheduler alone (no model): VTC fairness across tenants, weights, prefill sharing.

Each simulated step does what the engine does around the model: mark the scheduled tokens
computed, and for every sequence that samples append a token, charge it and retire it at its
max_tokens.
"""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from serving.engine.block_manager import BlockManager
from serving.engine.config import EngineConfig
from serving.engine.scheduler import Scheduler
from serving.engine.sequence import Sequence
from serving.engine.types import SamplingParams

_arrivals = itertools.count()


def make_seq(tenant: str, prompt_len: int, out: int, weight: float = 1.0) -> Sequence:
    return Sequence(
        request_id=f"{tenant}-{next(_arrivals)}",
        index=0,
        prompt_token_ids=[7 + (i % 50) for i in range(prompt_len)],
        params=SamplingParams(max_tokens=out, temperature=0.0),
        tenant=tenant,
        weight=weight,
        priority=0,
        cache_salt=f"{tenant}-{next(_arrivals)}",  # no prefix sharing between requests
        arrival=next(_arrivals),
    )


def step(sched: Scheduler, served: Counter) -> list:
    batch = sched.schedule()
    for item in batch:
        seq = item.seq
        samples = item.samples
        seq.num_computed += item.num_tokens
        sched.bm.register_full_blocks(seq)
        if samples:
            seq.token_ids.append(1)
            sched.charge(seq, output_tokens=1)
            served[seq.tenant] += 1
            if seq.num_output_tokens >= seq.params.max_tokens:
                sched.finish(seq, "length")
    return batch


def scheduler(**kw) -> Scheduler:
    kw.setdefault("max_num_seqs", 4)
    kw.setdefault("max_num_batched_tokens", 64)
    return Scheduler(BlockManager(num_blocks=4096, block_size=16), EngineConfig(**kw))


def test_tenants_are_served_in_proportion_to_their_weights():
    sched = scheduler()
    for _ in range(60):
        sched.add(make_seq("A", 16, 16, weight=2.0))
        sched.add(make_seq("B", 16, 16, weight=1.0))
    served: Counter = Counter()
    for _ in range(300):  # both stay backlogged throughout
        step(sched, served)
    assert sched.num_waiting > 0
    ratio = served["A"] / served["B"]
    assert 1.7 <= ratio <= 2.3, served


def test_equal_weights_share_equally_however_much_one_tenant_sends():
    sched = scheduler()
    for _ in range(200):
        sched.add(make_seq("flood", 16, 16))
    for _ in range(20):
        sched.add(make_seq("light", 16, 16))
    served: Counter = Counter()
    for _ in range(150):
        step(sched, served)
    assert 0.8 <= served["flood"] / served["light"] <= 1.25, served


def test_an_idle_tenant_banks_no_credit():
    sched = scheduler()
    for _ in range(40):
        sched.add(make_seq("A", 16, 16))
    served: Counter = Counter()
    for _ in range(100):  # A alone for a while
        step(sched, served)
    for _ in range(40):
        sched.add(make_seq("B", 16, 16))
    served.clear()
    for _ in range(100):
        step(sched, served)
    # B arrives at A's level: it is not owed A's earlier service, so they share evenly.
    assert served["A"] > 0 and 0.6 <= served["B"] / served["A"] <= 1.6, served


def test_a_tenant_returning_to_an_idle_worker_banks_no_credit():
    sched = scheduler()
    served: Counter = Counter()
    for _ in range(8):
        sched.add(make_seq("A", 16, 16))
    while sched.has_work():  # A alone, then the worker goes idle
        step(sched, served)
    level = sched.counters["A"]
    assert level > 0
    # B comes back first, to an idle worker: it is lifted to the level A's busy period
    # reached (VTC), not left at 0 with A's whole run as credit.
    for _ in range(40):
        sched.add(make_seq("B", 16, 16))
    assert sched.counters["B"] == pytest.approx(level)
    for _ in range(40):
        sched.add(make_seq("A", 16, 16))
    served.clear()
    for _ in range(60):
        step(sched, served)
    assert sched.num_waiting > 0
    assert served["A"] > 0 and 0.6 <= served["B"] / served["A"] <= 1.6, served


def test_a_prompt_recomputed_after_preemption_is_charged_once():
    # Room for about one sequence's blocks: the newer one is preempted and recomputed.
    sched = Scheduler(
        BlockManager(num_blocks=6, block_size=16),
        EngineConfig(max_num_seqs=4, max_num_batched_tokens=64),
    )
    seqs = [make_seq("A", 40, 24), make_seq("B", 40, 24)]
    for seq in seqs:
        sched.add(seq)
    served: Counter = Counter()
    for _ in range(400):
        if not sched.has_work():
            break
        step(sched, served)
    assert not sched.has_work()
    assert sched.preemptions > 0
    # Each tenant pays its prompt once and its outputs (2 each), however often recomputed.
    for seq in seqs:
        assert seq.num_output_tokens == 24
        assert sched.counters[seq.tenant] == pytest.approx(40 * 1.0 + 24 * 2.0), seq.tenant
    assert sched.prompt_charged == {}


def test_a_light_tenants_prompt_is_not_held_behind_a_floods_long_prefills():
    sched = scheduler(max_num_seqs=8, max_num_batched_tokens=128)
    for _ in range(4):
        sched.add(make_seq("flood", 2000, 8))
    served: Counter = Counter()
    for _ in range(3):  # the flood's long prompts are being prefilled in chunks
        step(sched, served)
    assert any(s.num_tokens - s.num_computed > 1 for s in sched.running)
    light = make_seq("light", 40, 8)
    sched.add(light)
    batch = step(sched, served)
    chunk = {item.seq.request_id: item.num_tokens for item in batch}
    assert chunk.get(light.request_id) == 40, chunk  # its whole prompt, this very step
    assert sum(chunk.values()) <= 128


def test_decodes_of_running_sequences_always_go_first():
    sched = scheduler(max_num_seqs=8, max_num_batched_tokens=32)
    short = [make_seq("A", 8, 50) for _ in range(4)]
    for s in short:
        sched.add(s)
    served: Counter = Counter()
    step(sched, served)  # all four prefilled and sampled once
    for _ in range(3):
        sched.add(make_seq("B", 500, 4))
    batch = step(sched, served)
    decodes = [item for item in batch if item.seq in short]
    assert len(decodes) == 4 and all(item.num_tokens == 1 for item in decodes)
    assert sum(item.num_tokens for item in batch) == 32


def test_prefill_beside_decodes_can_be_capped():
    sched = scheduler(max_num_seqs=8, max_num_batched_tokens=256)
    sched.max_prefill_tokens_while_decoding = 16
    running = [make_seq("A", 8, 50) for _ in range(2)]
    for s in running:
        sched.add(s)
    served: Counter = Counter()
    step(sched, served)  # both prefilled (no decodes yet: the whole budget)
    sched.add(make_seq("B", 300, 4))
    batch = step(sched, served)
    prefill = sum(item.num_tokens for item in batch if item.seq not in running)
    assert prefill == 16 and len(batch) == 3
    sched.max_prefill_tokens_while_decoding = None
    batch = step(sched, served)
    assert sum(item.num_tokens for item in batch if item.seq not in running) == 256 - 2


def test_isolation_bounds_other_tenants_tokens_per_step_and_rotates_them():
    sched = scheduler(max_num_seqs=32, max_num_batched_tokens=256, isolation_tokens=3)
    served: Counter = Counter()
    flood = [make_seq("A", 20, 200) for _ in range(12)]
    for seq in flood:
        sched.add(seq)
    while any(s.num_computed < s.num_prompt_tokens for s in flood):
        step(sched, served)  # A alone: no cap, every sequence runs and decodes each step
    batch = step(sched, served)
    assert sum(item.num_tokens for item in batch) == 12
    light = make_seq("B", 40, 30)
    sched.add(light)
    b_steps = led_by_b = 0
    while not light.is_finished:
        b_leads = sched.counters["B"] <= sched.counters["A"]
        batch = step(sched, served)
        b_steps += 1
        a_tokens = sum(item.num_tokens for item in batch if item.seq.tenant == "A")
        if b_leads:  # B is the least served: A shares 3 tokens of the step
            led_by_b += 1
            assert a_tokens <= 3
        else:  # A is owed service (B's prompt cost 40): A has the step, B still rides in it
            assert a_tokens == 12
        assert any(item.seq is light for item in batch)  # B is in every step until done
    # B needed one step for its prompt and one per further output token: it never waited.
    assert b_steps == 30
    assert led_by_b > b_steps // 2
    # A's sequences took turns while B led: each was carried in the meantime.
    assert all(seq.num_output_tokens > 2 for seq in flood)
    # With B gone, A has the whole batch again.
    batch = step(sched, served)
    assert sum(item.num_tokens for item in batch) == 12


def test_isolation_is_off_for_a_single_tenant():
    sched = scheduler(max_num_seqs=32, max_num_batched_tokens=256, isolation_tokens=1)
    served: Counter = Counter()
    seqs = [make_seq("A", 20, 10) for _ in range(8)]
    for seq in seqs:
        sched.add(seq)
    first = step(sched, served)
    assert sum(item.num_tokens for item in first) == 160  # every prompt in one step


def test_isolation_settings_are_checked():
    with pytest.raises(ValueError, match="isolation_tokens"):
        scheduler(isolation_tokens=-1)
    with pytest.raises(ValueError, match="isolation_prefill_tokens"):
        scheduler(isolation_tokens=0, isolation_prefill_tokens=0)


def test_strict_isolation_gives_each_tenant_steps_of_its_own():
    """isolation_tokens=0: a step serves only the lead, and the lead alternates as the counter
    says, so the light tenant's stream never shares a step and the flood still gets its share."""
    sched = scheduler(max_num_seqs=32, max_num_batched_tokens=256, isolation_tokens=0)
    served: Counter = Counter()
    flood = [make_seq("A", 20, 400) for _ in range(10)]
    for seq in flood:
        sched.add(seq)
    while any(s.num_computed < s.num_prompt_tokens for s in flood):
        step(sched, served)
    light = make_seq("B", 20, 60)
    sched.add(light)
    served.clear()
    while not light.is_finished:
        batch = step(sched, served)
        assert len({item.seq.tenant for item in batch}) == 1
    assert served["B"] == 60
    assert 0.7 < served["A"] * 2 / (20 + 60 * 2) < 1.5  # A's share of counter units ~ B's


def test_isolation_falls_back_to_a_plain_step_when_the_lead_cannot_run():
    """A lead whose prompt has no blocks does not empty the step: the others run."""
    sched = Scheduler(
        BlockManager(num_blocks=8, block_size=16),
        EngineConfig(max_num_seqs=8, max_num_batched_tokens=256, isolation_tokens=0),
    )
    served: Counter = Counter()
    a = make_seq("A", 20, 200)
    sched.add(a)
    step(sched, served)
    big = make_seq("B", 200, 4)  # 13 blocks: never fits while A holds its own
    sched.add(big)
    assert sched._isolated_tenant(sched._active_tenants(), set()) == "B"
    batch = step(sched, served)
    assert [item.seq for item in batch] == [a]


def test_isolation_caps_a_busy_leads_prompt_chunks_beside_other_tenants_streams():
    sched = scheduler(
        max_num_seqs=32, max_num_batched_tokens=256, isolation_tokens=4, isolation_prefill_tokens=8
    )
    served: Counter = Counter()
    a_running = [make_seq("A", 20, 200) for _ in range(4)]
    b = make_seq("B", 20, 200)
    for seq in [*a_running, b]:
        sched.add(seq)
    while any(s.num_computed < s.num_prompt_tokens for s in [*a_running, b]):
        step(sched, served)
    long_prompt = make_seq("A", 200, 10)
    sched.add(long_prompt)
    sched.counters["B"] = sched.counters["A"] + 1000  # B is ahead: A leads
    batch = step(sched, served)
    kinds = Counter((item.seq.tenant, item.num_tokens) for item in batch)
    assert kinds[("A", 1)] == 4  # A's decodes are not capped
    assert kinds[("B", 1)] == 1  # B's stream rides in A's step
    # A's new prompt gets the lead's prefill cap, not the 251 tokens left in the budget.
    assert next(item.num_tokens for item in batch if item.seq is long_prompt) == 8


def test_isolation_keeps_steps_short_while_a_finished_tenants_next_request_is_on_its_way():
    sched = scheduler(
        max_num_seqs=32, max_num_batched_tokens=256, isolation_tokens=0, isolation_prefill_tokens=8
    )
    served: Counter = Counter()
    a = make_seq("A", 20, 300)
    b = make_seq("B", 20, 3)
    sched.add(a)
    sched.add(b)
    while not b.is_finished:
        step(sched, served)
    for seq in [make_seq("A", 300, 4) for _ in range(2)]:
        sched.add(seq)
    sizes = [sum(item.num_tokens for item in step(sched, served)) for _ in range(3)]
    # B's client may be about to send its next request: A's prompts come in capped chunks
    # for ISOLATION_LINGER_STEPS steps, then A has the whole budget.
    assert sizes[:2] == [1 + 8, 1 + 8]
    assert sizes[2] == 256
