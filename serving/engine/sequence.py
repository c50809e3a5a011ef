"""A sequence: one choice of one request, with its tokens, block table and progress."""

from __future__ import annotations

import enum
import itertools
from typing import TYPE_CHECKING

import torch

from serving.engine.types import SamplingParams

if TYPE_CHECKING:
    from serving.engine.grammar import Constraint

_ids = itertools.count()


class SeqStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class Sequence:
    def __init__(
        self,
        *,
        request_id: str,
        index: int,
        prompt_token_ids: list[int],
        params: SamplingParams,
        tenant: str,
        weight: float,
        priority: int,
        cache_salt: str | None,
        arrival: int,
    ) -> None:
        self.seq_id = next(_ids)
        self.request_id = request_id
        self.index = index
        self.token_ids: list[int] = list(prompt_token_ids)
        self.num_prompt_tokens = len(prompt_token_ids)
        self.params = params
        self.tenant = tenant
        self.weight = weight
        self.priority = priority
        self.cache_salt = cache_salt
        self.arrival = arrival
        self.status = SeqStatus.WAITING
        self.finish_reason: str | None = None
        self.num_computed = 0  # tokens whose K/V are in the cache
        self.num_cached_tokens = 0  # prompt tokens served from the prefix cache (first admit)
        self.block_table: list[int] = []
        self.block_hashes: list[bytes] = []  # keys of the full blocks registered so far
        self.block_keys: list[bytes] = []  # chained keys of full blocks, computed once each
        self.prompt_done = 0  # prompt tokens computed at least once (for usage on abort)
        self.generator: torch.Generator | None = None
        if params.seed is not None:
            self.generator = torch.Generator()
            self.generator.manual_seed((params.seed + index) & 0xFFFF_FFFF_FFFF_FFFF)
        # The grammar this choice keeps to (params.grammar), set by the engine; None: free.
        self.constraint: Constraint | None = None
        self.was_admitted = False
        self.last_step = -1  # the scheduler step that last carried this sequence

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def is_finished(self) -> bool:
        return self.status == SeqStatus.FINISHED

    def __repr__(self) -> str:
        return (
            f"Sequence({self.request_id}#{self.index}, {self.status.value}, "
            f"computed={self.num_computed}/{self.num_tokens})"
        )
