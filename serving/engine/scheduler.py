"""Continuous batching with chunked prefill, preemption and per-tenant fairness.

Each step shares one token budget between decode tokens (one per running sequence) and
prefill chunks: running decodes first, then unfinished prefills, then new sequences admitted
from the waiting queue while blocks, sequence slots and budget allow. When blocks run out the
newest running sequence is preempted (its blocks freed, recomputed later).

Waiting sequences are picked across tenants by a virtual token counter (VTC, "Fairness in
Serving Large Language Models", OSDI 2024): each tenant's counter grows by the tokens it is
served divided by its weight (input tokens count 1, output tokens 2), and the tenant with the
smallest counter goes next. A tenant that arrives idle is lifted to the smallest counter of
the busy tenants, so idleness does not bank credit. Within a tenant, higher ``priority``
first, then arrival order.

The prefill part of each step is shared by the same counter: unfinished prefills of running
sequences and admissions from the waiting queue compete for the budget in order of their
tenant's counter (charged as the step is built), so a flooding tenant's long prompts do not
hold back a light tenant's new request for several steps. On a tie a newcomer goes before
running prefills, and the tenant with fewer running sequences first.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass

from serving.engine.block_manager import BlockManager
from serving.engine.sequence import SeqStatus, Sequence

INPUT_COST = 1.0
OUTPUT_COST = 2.0


@dataclass
class ScheduledSeq:
    seq: Sequence
    num_tokens: int  # tokens computed this step

    @property
    def samples(self) -> bool:
        """This step reaches the end of the sequence's tokens, so it yields a new token."""
        return self.seq.num_computed + self.num_tokens == self.seq.num_tokens


class Scheduler:
    def __init__(
        self,
        block_manager: BlockManager,
        *,
        max_num_seqs: int = 64,
        max_num_batched_tokens: int = 512,
        max_prefill_tokens_while_decoding: int | None = None,
    ) -> None:
        self.bm = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        # Prefill tokens a step may carry beside running decodes (None: the whole budget).
        # Smaller bounds the time between tokens of running streams (as Sarathi-Serve's
        # token budget does) at some cost to prompt throughput.
        self.max_prefill_tokens_while_decoding = max_prefill_tokens_while_decoding
        self.waiting: dict[str, list[tuple[int, int, int, Sequence]]] = {}
        self.running: list[Sequence] = []
        self.counters: dict[str, float] = {}
        self.preemptions = 0

    # ---- queue ---------------------------------------------------------------------------

    @property
    def num_waiting(self) -> int:
        return sum(len(q) for q in self.waiting.values())

    def has_work(self) -> bool:
        return bool(self.running) or self.num_waiting > 0

    def _active_tenants(self) -> set[str]:
        return {t for t, q in self.waiting.items() if q} | {s.tenant for s in self.running}

    def add(self, seq: Sequence) -> None:
        active = self._active_tenants()
        if seq.tenant not in active:
            floor = min((self.counters.get(t, 0.0) for t in active), default=0.0)
            self.counters[seq.tenant] = max(self.counters.get(seq.tenant, 0.0), floor)
        self._push(seq, front=False)

    def _push(self, seq: Sequence, *, front: bool) -> None:  # noqa: ARG002
        # Arrival order: a preempted sequence goes back ahead of its tenant's newer arrivals.
        seq.status = SeqStatus.WAITING
        heapq.heappush(
            self.waiting.setdefault(seq.tenant, []), (-seq.priority, seq.arrival, seq.seq_id, seq)
        )

    def _next_tenant(self) -> str | None:
        candidates = [t for t, q in self.waiting.items() if q]
        if not candidates:
            return None
        return min(candidates, key=lambda t: (self.counters.get(t, 0.0), t))

    def charge(self, seq: Sequence, *, input_tokens: int = 0, output_tokens: int = 0) -> None:
        cost = input_tokens * INPUT_COST + output_tokens * OUTPUT_COST
        self.counters[seq.tenant] = self.counters.get(seq.tenant, 0.0) + cost / seq.weight

    # ---- one step ------------------------------------------------------------------------

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.bm.free_sequence(seq)
        self.preemptions += 1
        self._push(seq, front=True)

    def _reserve(self, seq: Sequence, total_tokens: int, scheduled: list[ScheduledSeq]) -> bool:
        """Blocks for ``seq`` up to ``total_tokens``, preempting the newest others if needed.
        False if ``seq`` itself had to be preempted."""
        while not self.bm.allocate(seq, total_tokens):
            victims = [s for s in self.running if s is not seq]
            if not victims:
                self._preempt(seq)
                return False
            victim = max(victims, key=lambda s: s.arrival)
            if victim.arrival < seq.arrival:
                self._preempt(seq)
                return False
            for i, item in enumerate(scheduled):
                if item.seq is victim:
                    scheduled.pop(i)
                    break
            self._preempt(victim)
        return True

    def schedule(self) -> list[ScheduledSeq]:
        budget = self.max_num_batched_tokens
        scheduled: list[ScheduledSeq] = []
        # 1. Decodes of running sequences, oldest first.
        for seq in sorted(self.running, key=lambda s: s.arrival):
            if seq not in self.running or seq.num_tokens - seq.num_computed != 1 or budget < 1:
                continue
            if self._reserve(seq, seq.num_tokens, scheduled):
                scheduled.append(ScheduledSeq(seq, 1))
                budget -= 1
        if scheduled and self.max_prefill_tokens_while_decoding is not None:
            budget = min(budget, self.max_prefill_tokens_while_decoding)
        # 2. Prefill chunks, least-served tenant first: unfinished prefills of running
        #    sequences and admissions from the waiting queue compete for what is left.
        served: dict[str, float] = {}  # this step's prefill so far, weighted, by tenant

        def level(tenant: str) -> float:
            return self.counters.get(tenant, 0.0) + served.get(tenant, 0.0)

        pending = sorted(
            (s for s in self.running if s.num_tokens - s.num_computed > 1),
            key=lambda s: s.arrival,
        )
        while budget > 0:
            pending = [s for s in pending if s in self.running]
            running_next = min(pending, key=lambda s: (level(s.tenant), s.arrival), default=None)
            waiting_next = None
            if len(self.running) < self.max_num_seqs:
                candidates = [t for t, q in self.waiting.items() if q]
                in_service = Counter(s.tenant for s in self.running)
                waiting_next = min(
                    candidates, key=lambda t: (level(t), in_service[t], t), default=None
                )
            if running_next is None and waiting_next is None:
                break
            if running_next is not None and (
                waiting_next is None or level(running_next.tenant) < level(waiting_next)
            ):
                seq = running_next
                pending.remove(seq)
                n = min(seq.num_tokens - seq.num_computed, budget)
                if not self._reserve(seq, seq.num_computed + n, scheduled):
                    continue
            else:
                seq = self.waiting[waiting_next][0][3]
                self.bm.match_prefix(seq)
                seq.was_admitted = True
                n = min(seq.num_tokens - seq.num_computed, budget)
                if not self.bm.allocate(seq, seq.num_computed + n):
                    self.bm.free_sequence(seq)
                    if running_next is None:
                        break
                    # No room for a newcomer: keep serving the running prefills.
                    seq = running_next
                    pending.remove(seq)
                    n = min(seq.num_tokens - seq.num_computed, budget)
                    if not self._reserve(seq, seq.num_computed + n, scheduled):
                        continue
                else:
                    heapq.heappop(self.waiting[waiting_next])
                    seq.status = SeqStatus.RUNNING
                    self.running.append(seq)
            scheduled.append(ScheduledSeq(seq, n))
            budget -= n
            served[seq.tenant] = served.get(seq.tenant, 0.0) + n * INPUT_COST / seq.weight
        for item in scheduled:
            prompt_left = max(0, item.seq.num_prompt_tokens - item.seq.num_computed)
            self.charge(item.seq, input_tokens=min(item.num_tokens, prompt_left))
        return scheduled

    def finish(self, seq: Sequence, reason: str) -> None:
        seq.status = SeqStatus.FINISHED
        seq.finish_reason = reason
        if seq in self.running:
            self.running.remove(seq)
        else:
            queue = self.waiting.get(seq.tenant, [])
            kept = [item for item in queue if item[3] is not seq]
            if len(kept) != len(queue):
                heapq.heapify(kept)
                self.waiting[seq.tenant] = kept
        self.bm.free_sequence(seq)
