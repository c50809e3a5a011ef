"""A Llama-architecture transformer in PyTorch that reads and writes a paged KV cache.

The model sees one flat batch of tokens per step (decode tokens and prefill chunks of many
sequences together); linear layers run over the whole batch at once. Decode attention on the
CPU reads the paged pool in place through the block tables (the native kernel in
``serving/engine/kernels.py``); elsewhere, or without a compiler, decode tokens are attended in
a few padded SDPA calls over gathered K/V. Each prefill chunk gets its own causal SDPA call.
The model knows nothing about scheduling: the model runner hands it slot indices and tables.

Weights come from GGUF, where Q and K rows are laid out for RoPE on interleaved pairs
(2i, 2i+1); rotary embeddings here rotate those pairs. On the CPU they stay in the file's
block quantization by default (``serving/engine/quant.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from serving.engine.gguf_loader import LlamaConfig
from serving.engine.kernels import native_ops
from serving.engine.quant import (
    BlockTensor,
    Linear,
    Q8Linear,
    SwitchLinear,
    as_float32,
    make_linear,
    resolve_format,
)

MAX_DECODE_GROUPS = 4
# Under ``hybrid`` weights, steps of this many rows or more use the dense bfloat16 copy
# (``python -m benchmarks.engine.gemm_rows``: where the int4 products stop being cheaper).
HYBRID_ROWS = 16


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
    """The model's weights and forward pass.

    ``weight_format`` (see ``serving/engine/quant.py``): ``quantized`` keeps the GGUF's own
    block quantization on the CPU (int4 products for Q4_0/Q4_1, the native Q8_0 kernel for the
    embedding table and LM head), ``hybrid`` adds a bfloat16 copy used by steps of
    ``hybrid_rows`` rows or more, ``bfloat16`` and ``float32`` dequantize every weight to that
    dtype; ``auto`` is ``quantized`` on a CPU with native bfloat16 and ``float32`` on other
    CPUs. On CUDA every weight is dense in ``dtype``. Whatever the weights, the residual
    stream, norms, rotary embedding and attention run in ``dtype`` (float32 on the CPU); only
    the matrix products take bfloat16 activations when their weights are not float32.
    """

    def __init__(
        self,
        cfg: LlamaConfig,
        weights: dict[str, np.ndarray | BlockTensor],
        device: torch.device,
        dtype,
        weight_format: str = "auto",
        hybrid_rows: int = HYBRID_ROWS,
    ) -> None:
        self.cfg = cfg
        self.device = device
        self.dtype = dtype
        self.ops = native_ops() if device.type == "cpu" else None
        fmt = resolve_format(weight_format, device)
        self.weight_format = fmt
        q8_op = self.ops.q8_0_linear if self.ops is not None else None

        def t(name: str) -> torch.Tensor:
            array = np.array(as_float32(weights[name]))  # a copy: the file is mapped read-only
            return torch.from_numpy(array).to(device=device, dtype=dtype)

        def lin(w: np.ndarray | BlockTensor) -> Linear:
            return make_linear(
                w, fmt, device=device, dtype=dtype, q8_op=q8_op, hybrid_rows=hybrid_rows
            )

        def fused(*names: str) -> Linear:
            parts = [weights[n] for n in names]
            if all(isinstance(p, BlockTensor) for p in parts):
                joined = BlockTensor.concat(parts)
                if joined is not None:
                    return lin(joined)
            return lin(np.concatenate([as_float32(p) for p in parts]))

        self.layers = []
        for i in range(cfg.n_layers):
            p = f"blk.{i}."
            self.layers.append(
                {
                    "attn_norm": t(p + "attn_norm.weight"),
                    "wqkv": fused(p + "attn_q.weight", p + "attn_k.weight", p + "attn_v.weight"),
                    "wo": lin(weights[p + "attn_output.weight"]),
                    "ffn_norm": t(p + "ffn_norm.weight"),
                    "w_gate_up": fused(p + "ffn_gate.weight", p + "ffn_up.weight"),
                    "w_down": lin(weights[p + "ffn_down.weight"]),
                }
            )
        self.norm = t("output_norm.weight")
        embed = weights["token_embd.weight"]
        self.lm_head = lin(embed if cfg.tied_embeddings else weights["output.weight"])
        # Embedding lookups read the Q8_0 rows where the head keeps them, else a dense table.
        head = self.lm_head.small if isinstance(self.lm_head, SwitchLinear) else self.lm_head
        if cfg.tied_embeddings and isinstance(head, Q8Linear):
            self._embed_q8: Q8Linear | None = head
            self.embed = None
        else:
            self._embed_q8 = None
            self.embed = t("token_embd.weight")
        half = cfg.head_dim // 2
        inv_freq = 1.0 / (cfg.rope_base ** (torch.arange(0, half, dtype=torch.float64) / half))
        pos = torch.arange(cfg.context_length, dtype=torch.float64)
        angles = torch.outer(pos, inv_freq)
        self.cos = angles.cos().to(device=device, dtype=dtype)
        self.sin = angles.sin().to(device=device, dtype=dtype)
        # The dtype the products take: bfloat16 unless every weight is float32 (CPU).
        self.act_dtype = dtype if fmt == "float32" or device.type != "cpu" else torch.bfloat16
        self.q_size = cfg.n_heads * cfg.head_dim
        self.kv_size = cfg.n_kv_heads * cfg.head_dim
        self.scale = cfg.head_dim**-0.5

    def linears(self) -> list[Linear]:
        """Every weight matrix of a step's products (the LM head last)."""
        names = ("wqkv", "wo", "w_gate_up", "w_down")
        return [w[n] for w in self.layers for n in names] + [self.lm_head]

    def weight_bytes(self) -> int:
        """Bytes held by the weights (products, norms, embedding table)."""
        total = sum(lin.nbytes for lin in self.linears())
        total += sum(w[n].numel() * w[n].element_size()
                     for w in self.layers for n in ("attn_norm", "ffn_norm"))  # fmt: skip
        if self.embed is not None:
            total += self.embed.numel() * self.embed.element_size()
        return total

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self._embed_q8 is not None:
            return self._embed_q8.rows(input_ids).to(self.dtype)
        return self.embed[input_ids]

    def _rms(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        # Accumulated in float32 whatever the residual's dtype (a no-op cast on the CPU).
        xf = x.float()
        var = xf.pow(2).mean(-1, keepdim=True)
        return (xf * torch.rsqrt(var + self.cfg.norm_eps)).to(x.dtype) * w

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        # x: (T, H, hd) with rotary pairs (2i, 2i+1); cos/sin: (T, 1, hd/2)
        x2 = x.unflatten(-1, (-1, 2))
        x0, x1 = x2[..., 0], x2[..., 1]
        return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)

    def _attention(
        self, layer: int, q: torch.Tensor, kv: KVCache, meta: AttentionMetadata
    ) -> torch.Tensor:
        cfg = self.cfg
        k_pool, v_pool = kv.k[layer], kv.v[layer]
        if meta.decode_tables is not None:
            t = meta.decode_tables
            bd = t.context_lens.shape[0]
            decoded = self.ops.paged_decode_attention(
                q[:bd], k_pool, v_pool, t.block_tables, t.context_lens, kv.block_size, self.scale
            )
            if bd == q.shape[0] and not meta.prefills and not meta.decode_groups:
                return decoded  # a decode-only step: nothing else to place
            out = torch.empty_like(q)  # (T, Hq, hd)
            out[:bd] = decoded
        else:
            out = torch.empty_like(q)
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

    def _norm(
        self, x: torch.Tensor, add: torch.Tensor | None, w: torch.Tensor, out_dtype: torch.dtype
    ) -> torch.Tensor:
        """``x += add`` (in place, when given), then RMSNorm(x) * w in ``out_dtype``."""
        ops = self.ops
        if ops is not None and x.dtype == torch.float32:
            bf16 = out_dtype == torch.bfloat16
            if add is None:
                return ops.rms_norm(x, w, self.cfg.norm_eps, bf16)
            return ops.add_rms_norm(x, add.contiguous(), w, self.cfg.norm_eps, bf16)
        if add is not None:
            x.add_(add)
        return self._rms(x, w).to(out_dtype)

    def _swiglu(self, gate_up: torch.Tensor) -> torch.Tensor:
        """silu(gate) * up of the fused gate/up product, rounded once to its dtype."""
        if self.ops is not None and gate_up.dtype in (torch.float32, torch.bfloat16):
            return self.ops.silu_mul(gate_up)
        if gate_up.dtype == self.dtype:
            gate, up = gate_up.chunk(2, dim=-1)
            return F.silu(gate) * up
        gate, up = gate_up.float().chunk(2, dim=-1)
        return (F.silu(gate) * up).to(gate_up.dtype)

    @torch.inference_mode()
    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        meta: AttentionMetadata,
        kv: KVCache,
    ) -> torch.Tensor:
        """Hidden states (T, dim) in ``dtype`` after the final norm; K/V of every token are
        written."""
        cfg = self.cfg
        act = self.act_dtype
        x = self.embed_tokens(input_ids)  # the residual stream, updated in place
        if self.ops is None:
            cos = self.cos[positions].unsqueeze(1)
            sin = self.sin[positions].unsqueeze(1)
        T = input_ids.shape[0]
        h = self._norm(x, None, self.layers[0]["attn_norm"], act)
        for i, w in enumerate(self.layers):
            qkv = w["wqkv"](h).to(self.dtype)
            if self.ops is not None:
                q = self.ops.rope_and_cache(
                    qkv, self.cos, self.sin, positions, meta.slot_mapping, kv.k[i], kv.v[i],
                    cfg.n_heads,
                )  # fmt: skip
            else:
                q = qkv[:, : self.q_size].view(T, cfg.n_heads, cfg.head_dim)
                k = qkv[:, self.q_size : self.q_size + self.kv_size].view(
                    T, cfg.n_kv_heads, cfg.head_dim
                )
                v = qkv[:, self.q_size + self.kv_size :].view(T, cfg.n_kv_heads, cfg.head_dim)
                q = self._rope(q, cos, sin)
                kv.k[i][meta.slot_mapping] = self._rope(k, cos, sin).to(kv.dtype)
                kv.v[i][meta.slot_mapping] = v.to(kv.dtype)
            attn = self._attention(i, q, kv, meta)
            h = self._norm(x, w["wo"](attn.reshape(T, self.q_size)), w["ffn_norm"], act)
            down = w["w_down"](self._swiglu(w["w_gate_up"](h)))
            if i + 1 < len(self.layers):
                h = self._norm(x, down, self.layers[i + 1]["attn_norm"], act)
            else:
                h = self._norm(x, down, self.norm, self.dtype)
        return h

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden).float()
