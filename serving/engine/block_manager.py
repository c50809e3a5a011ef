"""Allocation of KV blocks, with prefix sharing.

Every full block is keyed by a cryptographic digest chained over the whole prefix before it:
``key(block i) = blake2b(key(block i-1) + token ids of block i)``, and the chain starts from a
digest of the sequence's cache salt. Two sequences share a block only if everything before it
is the same and they have the same salt (the worker salts by tenant, so tenants share nothing
unless they chose a shared pool): keys cannot be collided by crafting prompts, and one
tenant's time to first token says nothing about another's prompts. A block's key is computed
once, when the block is full. Blocks are reference counted; a block whose count drops to
zero keeps its contents and key and goes to the end of the free list, so it can be found
again until it is reused, least recently freed first.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict

from serving.engine.sequence import Sequence

KEY_BYTES = 32


def salt_root(salt: str | None) -> bytes:
    """The chain's start for a cache salt (no salt is a salt of its own)."""
    tag = b"\x00" if salt is None else b"\x01" + salt.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(tag, digest_size=KEY_BYTES, person=b"sy-prefix-root").digest()


def chain_key(parent: bytes, tokens: tuple[int, ...] | list[int]) -> bytes:
    """The key of a full block whose prefix before it has key ``parent``."""
    h = hashlib.blake2b(parent, digest_size=KEY_BYTES, person=b"sy-prefix-block")
    h.update(array("I", tokens).tobytes())
    return h.digest()


def block_key(seq: Sequence, i: int, block_size: int) -> bytes:
    """The chained key of full block ``i`` of ``seq`` (memoised on the sequence: its tokens
    only ever grow, so each key is computed once)."""
    keys = seq.block_keys
    while len(keys) <= i:
        n = len(keys)
        parent = keys[-1] if keys else salt_root(seq.cache_salt)
        keys.append(chain_key(parent, seq.token_ids[n * block_size : (n + 1) * block_size]))
    return keys[i]


class Block:
    __slots__ = ("block_id", "ref_count", "hash", "token_ids")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_count = 0
        self.hash: bytes | None = None  # the block's chained key once it is full
        self.token_ids: tuple[int, ...] = ()


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.block_size = block_size
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self.hash_to_block: dict[bytes, int] = {}
        self.prefix_queries = 0  # prompt blocks looked up
        self.prefix_hits = 0  # of which found in the cache

    @property
    def num_free(self) -> int:
        return len(self.free)

    @property
    def num_used(self) -> int:
        return len(self.blocks) - len(self.free)

    def blocks_needed(self, seq: Sequence, num_tokens: int) -> int:
        """Extra blocks ``seq`` needs to hold ``num_tokens`` tokens in total."""
        need = (num_tokens + self.block_size - 1) // self.block_size
        return max(0, need - len(seq.block_table))

    def _take_free(self) -> int:
        block_id, _ = self.free.popitem(last=False)
        block = self.blocks[block_id]
        if block.hash is not None and self.hash_to_block.get(block.hash) == block_id:
            del self.hash_to_block[block.hash]
        block.hash = None
        block.token_ids = ()
        block.ref_count = 1
        return block_id

    def match_prefix(self, seq: Sequence) -> None:
        """Map every cached full block of the sequence's tokens (at least one token is left to
        compute, so the step yields logits). Sets ``num_computed`` accordingly."""
        bs = self.block_size
        max_blocks = (seq.num_tokens - 1) // bs
        for i in range(max_blocks):
            tokens = tuple(seq.token_ids[i * bs : (i + 1) * bs])
            h = block_key(seq, i, bs)
            if not seq.was_admitted:
                self.prefix_queries += 1
            block_id = self.hash_to_block.get(h)
            if block_id is None or self.blocks[block_id].token_ids != tokens:
                break
            block = self.blocks[block_id]
            if block.ref_count == 0:
                del self.free[block_id]
            block.ref_count += 1
            seq.block_table.append(block_id)
            seq.block_hashes.append(h)
            if not seq.was_admitted:
                self.prefix_hits += 1
        seq.num_computed = len(seq.block_table) * bs
        if not seq.was_admitted:
            seq.num_cached_tokens = seq.num_computed

    def allocate(self, seq: Sequence, num_tokens: int) -> bool:
        """Give ``seq`` blocks for ``num_tokens`` tokens in total; False if there are too few."""
        need = self.blocks_needed(seq, num_tokens)
        if need > len(self.free):
            return False
        for _ in range(need):
            seq.block_table.append(self._take_free())
        return True

    def register_full_blocks(self, seq: Sequence) -> None:
        """Key the blocks that became full and computed, so later requests can share them."""
        bs = self.block_size
        full = seq.num_computed // bs
        for i in range(len(seq.block_hashes), full):
            tokens = tuple(seq.token_ids[i * bs : (i + 1) * bs])
            h = block_key(seq, i, bs)
            block = self.blocks[seq.block_table[i]]
            block.hash = h
            block.token_ids = tokens
            self.hash_to_block.setdefault(h, block.block_id)
            seq.block_hashes.append(h)

    def free_sequence(self, seq: Sequence) -> None:
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                if block.hash is None:
                    self.free[block_id] = None
                    self.free.move_to_end(block_id, last=False)  # nothing to keep: reuse first
                else:
                    self.free[block_id] = None
        seq.block_table = []
        seq.block_hashes = []
        seq.num_computed = 0
