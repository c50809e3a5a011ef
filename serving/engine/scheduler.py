"""Continuous batching with chunked prefill, preemption and per-tenant fairness.

Each step shares one token budget between decode tokens (one per running sequence) and
prefill chunks: running decodes first, then unfinished prefills, then new sequences admitted
from the waiting queue while blocks, sequence slots and budget allow. When blocks run out the
newest running sequence is preempted (its blocks freed, recomputed later).

Waiting sequences are picked across tenants by a virtual token counter (VTC, "Fairness in
Serving Large Language Models", OSDI 2024): each tenant's counter grows by the tokens it is
served divided by its weight (input tokens count 1, output tokens 2), and the tenant with the
smallest counter goes next. A tenant that arrives idle is lifted to the smallest counter of
the busy tenants, or, when the worker is idle, to the level the last busy period reached
(VTC's rule), so idleness does not bank credit. A prompt is charged once: when a preempted
sequence's prompt is computed again, the recomputation is free. Within a tenant, higher
``priority`` first, then arrival order.

The prefill part of each step is shared by the same counter: unfinished prefills of running
sequences and admissions from the waiting queue compete for the budget in order of their
tenant's counter (charged as the step is built), so a flooding tenant's long prompts do not
hold back a light tenant's new request for several steps. On a tie a newcomer goes before
running prefills, and the tenant with fewer running sequences first.

Optional latency isolation (``isolation_tokens``) for hardware where a step's time grows with
every token in it (CPUs): while two or more tenants are active, the least-served tenant (the
lead) gets the step and every other tenant shares a small token allowance (0: none), their
running sequences taking turns in it (least recently served first); a lead that already has
sequences running beside other tenants' has its prompt chunks capped
(``isolation_prefill_tokens``; its decodes are not), so catching up on its share never means
one long prefill step in the middle of another tenant's stream. The counter still decides who
leads, so each tenant gets its weighted share, in steps of its own instead of in every step.
Off by default: it trades the heavy tenant's throughput for the light one's latency while both
are busy.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass

from serving.engine.block_manager import BlockManager
from serving.engine.config import EngineConfig
from serving.engine.sequence import SeqStatus, Sequence

INPUT_COST = 1.0
OUTPUT_COST = 2.0
# Steps a tenant whose last sequence finished still counts as present for latency isolation.
ISOLATION_LINGER_STEPS = 2


@dataclass
class ScheduledSeq:
    seq: Sequence
    num_tokens: int  # tokens computed this step

    @property
    def samples(self) -> bool:
        """This step reaches the end of the sequence's tokens, so it yields a new token."""
        return self.seq.num_computed + self.num_tokens == self.seq.num_tokens


class Scheduler:
    def __init__(self, block_manager: BlockManager, config: EngineConfig) -> None:
        """``config``: the step budget, fairness and isolation settings (validated there);
        they are copied onto the scheduler, where tests and benchmarks may change them."""
        self.bm = block_manager
        self.max_num_seqs = config.max_num_seqs
        self.max_num_batched_tokens = config.max_num_batched_tokens
        # Prefill tokens a step may carry beside running decodes (None: the whole budget).
        # Smaller bounds the time between tokens of running streams (as Sarathi-Serve's
        # token budget does) at some cost to prompt throughput.
        self.max_prefill_tokens_while_decoding = config.max_prefill_tokens_while_decoding
        # Latency isolation (None: off). While two or more tenants are active, the
        # least-served one (by the counter below) gets the whole step and all the others
        # share this many tokens of it. On a CPU, where a step's time grows with every token
        # in it, that keeps a light tenant's steps almost as short as when it is alone, at
        # the cost of the heavy tenant's throughput while the light one is busy.
        self.isolation_tokens = config.isolation_tokens
        # Under isolation, the prompt tokens a lead that is already in service may take in a
        # step that other tenants' streams share (so the lead's catching up never means one
        # long prefill step in the middle of their streams).
        self.isolation_prefill_tokens = config.isolation_prefill_tokens
        self.steps = 0
        self.last_finished: dict[str, int] = {}  # tenant -> the step its last sequence ended
        self.waiting: dict[str, list[tuple[int, int, int, Sequence]]] = {}
        self.running: list[Sequence] = []
        self.counters: dict[str, float] = {}
        # The counter level of the busy tenants, kept while the worker is idle: a tenant that
        # arrives at an idle worker is lifted to it (VTC lifts to the last level, not to 0).
        self.floor = 0.0
        # Prompt tokens already charged per sequence, so a prompt recomputed after a
        # preemption is not charged a second time.
        self.prompt_charged: dict[int, int] = {}
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
            self.counters[seq.tenant] = max(self.counters.get(seq.tenant, 0.0), self._level(active))
        self._push(seq, front=False)

    def _level(self, active: set[str]) -> float:
        """The counter a tenant arriving now is lifted to: the smallest of the busy tenants'
        counters, or, with none busy, the level the last busy period reached."""
        if active:
            self.floor = max(self.floor, min(self.counters.get(t, 0.0) for t in active))
        return self.floor

    def _charge_prompt(self, item: ScheduledSeq) -> None:
        """Charge the prompt tokens of this step that were never charged before (a prompt
        recomputed after a preemption was charged the first time)."""
        seq = item.seq
        end = min(seq.num_computed + item.num_tokens, seq.num_prompt_tokens)
        charged = self.prompt_charged.get(seq.seq_id, 0)
        start = max(charged, seq.num_computed)  # tokens from a cached prefix cost nothing
        if end > start:
            self.charge(seq, input_tokens=end - start)
        self.prompt_charged[seq.seq_id] = max(charged, end)

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

    def _lingering(self, active: set[str]) -> set[str]:
        """Tenants with nothing queued whose last sequence finished a step or two ago: a
        client that sends its next request as the last one ends is still "here"."""
        for t in [
            t for t, s in self.last_finished.items() if self.steps - s > ISOLATION_LINGER_STEPS
        ]:
            del self.last_finished[t]
        return set(self.last_finished) - active

    def _isolated_tenant(self, present: set[str], lingering: set[str]) -> str | None:
        """The least-served tenant this step can serve, when latency isolation applies (two
        or more tenants active or just finished); ``None`` otherwise."""
        if self.isolation_tokens is None or not present or len(present | lingering) < 2:
            return None
        servable = {s.tenant for s in self.running}
        if len(self.running) < self.max_num_seqs:  # a waiting tenant can be admitted
            servable |= {t for t, q in self.waiting.items() if q}
        in_service = Counter(s.tenant for s in self.running)
        return min(
            servable, key=lambda t: (self.counters.get(t, 0.0), in_service[t], t), default=None
        )

    def schedule(self) -> list[ScheduledSeq]:
        self.steps += 1
        present = self._active_tenants()
        lingering = self._lingering(present) if self.isolation_tokens is not None else set()
        lead = self._isolated_tenant(present, lingering)
        scheduled = self._schedule(lead, bool(lingering))
        if not scheduled and lead is not None:
            # The lead could not use the step (no blocks for its prompt): a plain step.
            scheduled = self._schedule(None, False)
        for item in scheduled:
            item.seq.last_step = self.steps
            self._charge_prompt(item)
        self._level(self._active_tenants())
        return scheduled

    def _schedule(self, lead: str | None, lingering: bool) -> list[ScheduledSeq]:
        budget = self.max_num_batched_tokens
        scheduled: list[ScheduledSeq] = []
        others = self.isolation_tokens if lead is not None else budget  # tokens for non-lead
        lead_prefill = budget  # the lead tenant's prefill tokens left this step

        def allowance(tenant: str) -> int:
            if lead is None:
                return budget
            return min(budget, lead_prefill if tenant == lead else others)

        # 1. Decodes of running sequences, oldest first (under isolation: the lead tenant's,
        #    then the others' least recently served first).
        order = (
            sorted(self.running, key=lambda s: s.arrival)
            if lead is None
            else sorted(self.running, key=lambda s: (s.tenant != lead, s.last_step, s.arrival))
        )
        for seq in order:
            if seq not in self.running or seq.num_tokens - seq.num_computed != 1:
                continue
            if allowance(seq.tenant) < 1:
                continue
            if self._reserve(seq, seq.num_tokens, scheduled):
                scheduled.append(ScheduledSeq(seq, 1))
                budget -= 1
                if seq.tenant != lead:
                    others -= 1
        if scheduled and self.max_prefill_tokens_while_decoding is not None:
            budget = min(budget, self.max_prefill_tokens_while_decoding)
        if lead is not None:
            tenants_running = {s.tenant for s in self.running}
            if lead in tenants_running and (len(tenants_running) > 1 or lingering):
                # A lead that is already in service shares the step with the others' running
                # streams (or with one whose next request is on its way): its prompt chunks
                # are capped, so the others' tokens are not held behind long prefills. A lead
                # with nothing running yet (a light tenant's new request) gets its prompt in
                # at once.
                lead_prefill = self.isolation_prefill_tokens
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
            pending = [s for s in pending if s in self.running and allowance(s.tenant) > 0]
            running_next = min(pending, key=lambda s: (level(s.tenant), s.arrival), default=None)
            waiting_next = None
            if len(self.running) < self.max_num_seqs:
                candidates = [t for t, q in self.waiting.items() if q and allowance(t) > 0]
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
                n = min(seq.num_tokens - seq.num_computed, allowance(seq.tenant))
                if not self._reserve(seq, seq.num_computed + n, scheduled):
                    continue
            else:
                seq = self.waiting[waiting_next][0][3]
                self.bm.match_prefix(seq)
                seq.was_admitted = True
                n = min(seq.num_tokens - seq.num_computed, allowance(seq.tenant))
                if not self.bm.allocate(seq, seq.num_computed + n):
                    self.bm.free_sequence(seq)
                    if running_next is None:
                        break
                    # No room for a newcomer: keep serving the running prefills.
                    seq = running_next
                    pending.remove(seq)
                    n = min(seq.num_tokens - seq.num_computed, allowance(seq.tenant))
                    if not self._reserve(seq, seq.num_computed + n, scheduled):
                        continue
                else:
                    heapq.heappop(self.waiting[waiting_next])
                    seq.status = SeqStatus.RUNNING
                    self.running.append(seq)
            scheduled.append(ScheduledSeq(seq, n))
            budget -= n
            if lead is not None and seq.tenant != lead:
                others -= n
            elif lead is not None:
                lead_prefill -= n
            served[seq.tenant] = served.get(seq.tenant, 0.0) + n * INPUT_COST / seq.weight
        return scheduled

    def finish(self, seq: Sequence, reason: str) -> None:
        seq.status = SeqStatus.FINISHED
        seq.finish_reason = reason
        if self.isolation_tokens is not None:
            self.last_finished[seq.tenant] = self.steps
        self.prompt_charged.pop(seq.seq_id, None)
        if seq in self.running:
            self.running.remove(seq)
        else:
            queue = self.waiting.get(seq.tenant, [])
            kept = [item for item in queue if item[3] is not seq]
            if len(kept) != len(queue):
                heapq.heapify(kept)
                self.waiting[seq.tenant] = kept
        self.bm.free_sequence(seq)
        if not self._active_tenants():  # the worker goes idle at this tenant's level
            self.floor = max(self.floor, self.counters.get(seq.tenant, 0.0))
