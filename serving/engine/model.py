"""A Llama-architecture transformer in PyTorch that reads and writes a paged KV cache.

The model sees one flat batch of tokens per step (decode tokens and prefill chunks of many
sequences together); linear layers run over the whole batch at once. Decode attention on the
CPU reads the paged pool in place through the block tables (the native kernel in
``serving/engine/kernels.py``); elsewhere, or without a compiler, decode tokens are attended in
a few padded SDPA calls over gathered K/V. Each prefill chunk gets its own causal SDPA call.
The model knows nothing about scheduling: the model runner hands it slot indices and tables.

Weights come from GGUF, where Q and K rows are laid out for RoPE on interleaved pairs
(2i, 2i+1); rotary embeddings here rotate those pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from serving.engine.gguf_loader import LlamaConfig
from serving.engine.kernels import native_ops

MAX_DECODE_GROUPS = 4


@dataclass
class PrefillChunk:
    """One sequence's prefill chunk inside the flat batch."""

    start: int  # first row in the flat batch
    end: int  # one past the last row
    ctx_slots: torch.Tensor  # (ctx_len,) KV slots of positions 0..ctx_len-1 (chunk included)
    q_positions: torch.Tensor  # (end-start,) positions of the chunk's tokens


@dataclass
class DecodeGroup:
    """Decode tokens of sequences with similar context lengths, attended in one padded call."""

    rows: torch.Tensor  # (Bd,) rows of these decode tokens in the flat batch
    slots: torch.Tensor  # (Bd, Lmax) KV slots to read, padded
    mask: torch.Tensor  # (Bd, 1, 1, Lmax) True where a slot is real


@dataclass
class DecodeTables:
    """Every decode token (rows 0..B-1 of the flat batch) for the in-place kernel."""

    block_tables: torch.Tensor  # (B, max_blocks) int32, padded with 0
    context_lens: torch.Tensor  # (B,) int32, the decode token included


@dataclass
class AttentionMetadata:
    slot_mapping: torch.Tensor  # (T,) where each token's K/V is written
    decode_tables: DecodeTables | None = None  # set when the native kernel runs decode
    decode_groups: list[DecodeGroup] = field(default_factory=list)
    prefills: list[PrefillChunk] = field(default_factory=list)


class KVCache:
    """The paged KV pool: ``num_blocks * block_size`` slots per layer for K and for V."""

    def __init__(self, cfg: LlamaConfig, num_blocks: int, block_size: int, device, dtype) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.dtype = dtype
        slots = num_blocks * block_size
        self.k = torch.zeros(
            cfg.n_layers, slots, cfg.n_kv_heads, cfg.head_dim, device=device, dtype=dtype
        )
        self.v = torch.zeros_like(self.k)

    @staticmethod
    def bytes_per_token(cfg: LlamaConfig, dtype: torch.dtype) -> int:
        elem = torch.tensor([], dtype=dtype).element_size()
        return 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * elem


class LlamaModel:
    def __init__(
        self, cfg: LlamaConfig, weights: dict[str, np.ndarray], device: torch.device, dtype
    ) -> None:
        self.cfg = cfg
        self.device = device
        self.dtype = dtype

        def t(name: str) -> torch.Tensor:
            return (
                torch.from_numpy(np.array(weights[name]))
                .to(device=device, dtype=dtype)
                .contiguous()
            )

        self.embed = t("token_embd.weight")
        self.layers = []
        for i in range(cfg.n_layers):
            p = f"blk.{i}."
            self.layers.append(
                {
                    "attn_norm": t(p + "attn_norm.weight"),
                    "wqkv": torch.cat(
                        [t(p + "attn_q.weight"), t(p + "attn_k.weight"), t(p + "attn_v.weight")]
                    ).contiguous(),
                    "wo": t(p + "attn_output.weight"),
                    "ffn_norm": t(p + "ffn_norm.weight"),
                    "w_gate_up": torch.cat(
                        [t(p + "ffn_gate.weight"), t(p + "ffn_up.weight")]
                    ).contiguous(),
                    "w_down": t(p + "ffn_down.weight"),
                }
            )
        self.norm = t("output_norm.weight")
        self.lm_head = self.embed if cfg.tied_embeddings else t("output.weight")
        half = cfg.head_dim // 2
        inv_freq = 1.0 / (cfg.rope_base ** (torch.arange(0, half, dtype=torch.float64) / half))
        pos = torch.arange(cfg.context_length, dtype=torch.float64)
        angles = torch.outer(pos, inv_freq)
        self.cos = angles.cos().to(device=device, dtype=dtype)
        self.sin = angles.sin().to(device=device, dtype=dtype)
        self.q_size = cfg.n_heads * cfg.head_dim
        self.kv_size = cfg.n_kv_heads * cfg.head_dim
        self.scale = cfg.head_dim**-0.5
        self.ops = native_ops() if device.type == "cpu" else None

    def _rms(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        var = x.pow(2).mean(-1, keepdim=True)
        return x * torch.rsqrt(var + self.cfg.norm_eps) * w

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        # x: (T, H, hd) with rotary pairs (2i, 2i+1); cos/sin: (T, 1, hd/2)
        x2 = x.unflatten(-1, (-1, 2))
        x0, x1 = x2[..., 0], x2[..., 1]
        return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)

    def _attention(
        self, layer: int, q: torch.Tensor, kv: KVCache, meta: AttentionMetadata
    ) -> torch.Tensor:
        cfg = self.cfg
        out = torch.empty_like(q)  # (T, Hq, hd)
        k_pool, v_pool = kv.k[layer], kv.v[layer]
        if meta.decode_tables is not None:
            t = meta.decode_tables
            bd = t.context_lens.shape[0]
            out[:bd] = self.ops.paged_decode_attention(
                q[:bd], k_pool, v_pool, t.block_tables, t.context_lens, kv.block_size, self.scale
            )
        for group in meta.decode_groups:
            qd = q[group.rows].unsqueeze(2)  # (Bd, Hq, 1, hd)
            kd = k_pool[group.slots].transpose(1, 2).to(q.dtype)  # (Bd, Hkv, L, hd)
            vd = v_pool[group.slots].transpose(1, 2).to(q.dtype)
            od = F.scaled_dot_product_attention(
                qd, kd, vd, attn_mask=group.mask, scale=self.scale, enable_gqa=True
            )
            out[group.rows] = od.squeeze(2)
        for chunk in meta.prefills:
            qp = q[chunk.start : chunk.end].transpose(0, 1).unsqueeze(0)  # (1, Hq, Tq, hd)
            kp = k_pool[chunk.ctx_slots].transpose(0, 1).unsqueeze(0).to(q.dtype)  # (1,Hkv,L,hd)
            vp = v_pool[chunk.ctx_slots].transpose(0, 1).unsqueeze(0).to(q.dtype)
            ctx_pos = torch.arange(kp.shape[2], device=q.device)
            mask = ctx_pos.unsqueeze(0) <= chunk.q_positions.unsqueeze(1)  # (Tq, L)
            op = F.scaled_dot_product_attention(
                qp, kp, vp, attn_mask=mask, scale=self.scale, enable_gqa=True
            )
            out[chunk.start : chunk.end] = op.squeeze(0).transpose(0, 1)
        del cfg
        return out

    @torch.inference_mode()
    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        meta: AttentionMetadata,
        kv: KVCache,
    ) -> torch.Tensor:
        """Hidden states (T, dim) after the final norm; K/V of every token are written."""
        cfg = self.cfg
        x = self.embed[input_ids]
        if self.ops is None:
            cos = self.cos[positions].unsqueeze(1)
            sin = self.sin[positions].unsqueeze(1)
        T = input_ids.shape[0]
        for i, w in enumerate(self.layers):
            h = self._rms(x, w["attn_norm"])
            qkv = F.linear(h, w["wqkv"])
            q = qkv[:, : self.q_size].view(T, cfg.n_heads, cfg.head_dim)
            k = qkv[:, self.q_size : self.q_size + self.kv_size].view(
                T, cfg.n_kv_heads, cfg.head_dim
            )
            v = qkv[:, self.q_size + self.kv_size :].view(T, cfg.n_kv_heads, cfg.head_dim)
            if self.ops is not None:
                q = self.ops.rope_and_cache(
                    qkv, self.cos, self.sin, positions, meta.slot_mapping, kv.k[i], kv.v[i],
                    cfg.n_heads,
                )  # fmt: skip
            else:
                q = self._rope(q, cos, sin)
                kv.k[i][meta.slot_mapping] = self._rope(k, cos, sin).to(kv.dtype)
                kv.v[i][meta.slot_mapping] = v.to(kv.dtype)
            attn = self._attention(i, q, kv, meta)
            x = x + F.linear(attn.reshape(T, self.q_size), w["wo"])
            h = self._rms(x, w["ffn_norm"])
            gate, up = F.linear(h, w["w_gate_up"]).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, w["w_down"])
        return self._rms(x, self.norm)

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.lm_head).float()
