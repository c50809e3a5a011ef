"""Turns a scheduled step into flat tensors, runs the model once, returns sampling logits."""

from __future__ import annotations

import torch

from serving.engine.model import (
    MAX_DECODE_GROUPS,
    AttentionMetadata,
    DecodeGroup,
    DecodeTables,
    KVCache,
    LlamaModel,
    PrefillChunk,
)
from serving.engine.scheduler import ScheduledSeq


class ModelRunner:
    def __init__(self, model: LlamaModel, kv: KVCache) -> None:
        self.model = model
        self.kv = kv
        self.block_size = kv.block_size
        self.device = model.device
        self._block_offsets = torch.arange(self.block_size, device=self.device)

    def _slots(self, block_table: list[int], start: int, end: int) -> list[int]:
        bs = self.block_size
        return [block_table[p // bs] * bs + p % bs for p in range(start, end)]

    def _decode_group(self, decode: list[ScheduledSeq], members: list[int]) -> DecodeGroup:
        dev = self.device
        items = [decode[i] for i in members]
        bd = len(items)
        ctx = torch.tensor([it.seq.num_computed + 1 for it in items], device=dev)
        max_blocks = max(len(it.seq.block_table) for it in items)
        table = torch.zeros(bd, max_blocks, dtype=torch.long, device=dev)
        for i, it in enumerate(items):
            table[i, : len(it.seq.block_table)] = torch.tensor(it.seq.block_table)
        lmax = int(ctx.max())
        flat = (table.unsqueeze(-1) * self.block_size + self._block_offsets).view(bd, -1)
        valid = torch.arange(lmax, device=dev).unsqueeze(0) < ctx.unsqueeze(1)
        return DecodeGroup(
            rows=torch.tensor(members, device=dev),
            slots=flat[:, :lmax].masked_fill(~valid, 0),
            mask=valid.view(bd, 1, 1, lmax),
        )

    def run(self, batch: list[ScheduledSeq]) -> torch.Tensor:
        """Logits (N, vocab) for the items of ``batch`` that sample, in batch order."""
        dev = self.device
        decode = [it for it in batch if it.num_tokens == 1]
        prefill = [it for it in batch if it.num_tokens > 1]
        order = decode + prefill  # decode rows first: their rows are 0..Bd-1
        input_ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        for it in order:
            s = it.seq
            a, b = s.num_computed, s.num_computed + it.num_tokens
            input_ids.extend(s.token_ids[a:b])
            positions.extend(range(a, b))
            slots.extend(self._slots(s.block_table, a, b))
        meta = AttentionMetadata(slot_mapping=torch.tensor(slots, device=dev))
        if decode and self.model.ops is not None:
            width = max(len(it.seq.block_table) for it in decode)
            meta.decode_tables = DecodeTables(
                block_tables=torch.tensor(
                    [it.seq.block_table + [0] * (width - len(it.seq.block_table)) for it in decode],
                    dtype=torch.int32,
                ),
                context_lens=torch.tensor(
                    [it.seq.num_computed + 1 for it in decode], dtype=torch.int32
                ),
            )
        elif decode:
            # Padding every decode sequence to the longest context wastes gather bandwidth when
            # lengths differ; sort by length and pad within a few groups instead.
            by_len = sorted(range(len(decode)), key=lambda i: decode[i].seq.num_computed)
            n_groups = min(MAX_DECODE_GROUPS, max(1, len(decode) // 8))
            size = -(-len(by_len) // n_groups)
            for g in range(0, len(by_len), size):
                members = by_len[g : g + size]
                meta.decode_groups.append(self._decode_group(decode, members))
        row = len(decode)
        for it in prefill:
            s = it.seq
            end = s.num_computed + it.num_tokens
            meta.prefills.append(
                PrefillChunk(
                    start=row,
                    end=row + it.num_tokens,
                    ctx_slots=torch.tensor(self._slots(s.block_table, 0, end), device=dev),
                    q_positions=torch.arange(s.num_computed, end, device=dev),
                )
            )
            row += it.num_tokens
        hidden = self.model.forward(
            torch.tensor(input_ids, device=dev),
            torch.tensor(positions, device=dev),
            meta,
            self.kv,
        )
        # The last row of each sampling item, in the caller's batch order.
        last_row: dict[int, int] = {}
        row = 0
        for it in order:
            row += it.num_tokens
            last_row[id(it)] = row - 1
        rows = [last_row[id(it)] for it in batch if it.samples]
        if not rows:
            return torch.empty(0, self.model.cfg.vocab_size)
        return self.model.logits(hidden[torch.tensor(rows, device=dev)]).cpu()
