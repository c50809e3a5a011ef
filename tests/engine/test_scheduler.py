"""The scheduler alone (no model): VTC fairness across tenants, weights, prefill sharing.

Each simulated step does what the engine does around the model: mark the scheduled tokens
computed, and for every sequence that samples append a token, charge it and retire it at its
max_tokens.
"""

from __future__ import annotations

import itertools
from collections import Counter

from serving.engine.block_manager import BlockManager
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
    return Scheduler(BlockManager(num_blocks=4096, block_size=16), **kw)


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
