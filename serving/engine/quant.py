"""GGUF block-quantized weights, kept as the file stores them, and the products that read them.

A GGUF tensor of type Q4_0, Q4_1 or Q8_0 is a sequence of blocks of 32 weights along a row:

- Q4_0: a float16 scale ``d`` and 16 bytes of 4-bit codes, ``w = d * (q - 8)``;
- Q4_1: a float16 scale ``d`` and minimum ``m`` and 16 bytes of codes, ``w = d * q + m``;
- Q8_0: a float16 scale ``d`` and 32 signed bytes, ``w = d * q``.

Within a block's 16 code bytes, the low nibbles hold weights 0-15 and the high nibbles 16-31.

:class:`BlockTensor` keeps those bytes. The engine's linear layers (``make_linear``) multiply
with them directly:

- Q4_0 and Q4_1 become torch's int4 weight-only CPU GEMM (``_weight_int4pack_mm_for_cpu``): a
  block of 32 is a group of 32 with a scale and a zero point, ``w = (q - 8) * scale + zero``, so
  Q4_1 maps with ``scale = d`` and ``zero = m + 8d``, Q4_0 with ``zero = 0``; the only loss is
  that torch keeps scales and zeros in bfloat16 (the activations' dtype);
- Q8_0 goes through the engine's native kernel (``q8_0_linear`` in ``csrc/quant_gemm.cpp``),
  which reads the int8 codes and float scales as stored and multiplies float32 activations;
  without the native kernels it is a dense bfloat16 product.

Any other tensor type is dequantized (``gguf``) and multiplied densely in bfloat16.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

QK = 32  # weights per block
BLOCK_BYTES = {
    GGMLQuantizationType.Q4_0: 18,
    GGMLQuantizationType.Q4_1: 20,
    GGMLQuantizationType.Q8_0: 34,
}
KEPT_TYPES = frozenset(BLOCK_BYTES)


@dataclass(frozen=True)
class BlockTensor:
    """A 2-D weight as the GGUF file stores it: ``raw`` holds one row of blocks per output
    feature (``shape`` = (out_features, in_features), as the engine's weights are laid out)."""

    qtype: GGMLQuantizationType
    shape: tuple[int, int]
    raw: np.ndarray  # (out_features, bytes per row), uint8

    def __post_init__(self) -> None:
        n, k = self.shape
        if self.qtype not in BLOCK_BYTES or k % QK:
            raise ValueError(f"not a kept block type: {self.qtype.name} {self.shape}")
        if self.raw.shape != (n, k // QK * BLOCK_BYTES[self.qtype]):
            raise ValueError(f"{self.qtype.name} bytes {self.raw.shape} do not fit {self.shape}")

    @property
    def nbytes(self) -> int:
        return int(self.raw.nbytes)

    def dequantize(self) -> np.ndarray:
        """float32 (out_features, in_features), exactly as ``gguf`` dequantizes the file."""
        return dequantize(self.raw, self.qtype).reshape(self.shape).astype(np.float32, copy=False)

    def blocks(self) -> np.ndarray:
        n, k = self.shape
        return np.ascontiguousarray(self.raw).reshape(n, k // QK, BLOCK_BYTES[self.qtype])

    @staticmethod
    def concat(parts: list[BlockTensor]) -> BlockTensor | None:
        """Row-wise concatenation (fused projections), or ``None`` if the parts differ in type
        or width."""
        first = parts[0]
        if any(p.qtype != first.qtype or p.shape[1] != first.shape[1] for p in parts):
            return None
        rows = sum(p.shape[0] for p in parts)
        raw = np.concatenate([np.asarray(p.raw) for p in parts])
        return BlockTensor(first.qtype, (rows, first.shape[1]), raw)


def unpack_q4(t: BlockTensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q4_0 / Q4_1 codes (N, K) uint8 in 0..15, scales (N, K/32) and minimums (N, K/32) as
    float32, with ``w = scale * q + minimum`` (Q4_0: minimum = -8 scale)."""
    b = t.blocks()
    n, nb, _ = b.shape
    d = b[:, :, 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    if t.qtype == GGMLQuantizationType.Q4_1:
        m = b[:, :, 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
        qs = b[:, :, 4:20]
    elif t.qtype == GGMLQuantizationType.Q4_0:
        m = -8.0 * d
        qs = b[:, :, 2:18]
    else:
        raise ValueError(f"{t.qtype.name} is not a 4-bit block type")
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)  # low nibbles: 0-15, high: 16-31
    return q.reshape(n, nb * QK), d, m


def unpack_q8_0(t: BlockTensor) -> tuple[np.ndarray, np.ndarray]:
    """Q8_0 codes (N, K) int8 and scales (N, K/32) float32, ``w = scale * q``."""
    if t.qtype != GGMLQuantizationType.Q8_0:
        raise ValueError(f"{t.qtype.name} is not Q8_0")
    b = t.blocks()
    n, nb, _ = b.shape
    d = b[:, :, 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    q = b[:, :, 2:34].copy().view(np.int8)
    return q.reshape(n, nb * QK), d


def as_float32(w: np.ndarray | BlockTensor) -> np.ndarray:
    return w.dequantize() if isinstance(w, BlockTensor) else np.asarray(w, dtype=np.float32)


# ---- linear layers ------------------------------------------------------------------------


class Linear:
    """``y = x @ W.T`` for a flat batch of rows. ``x`` may be float32 or bfloat16; the result is
    in ``out_dtype`` of the implementation (callers add it to a float32 residual or cast)."""

    out_features: int
    in_features: int
    kind: str

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def nbytes(self) -> int:
        raise NotImplementedError

    def dense(self) -> torch.Tensor:
        """The weights as a float32 (out, in) tensor (for tests and the reference path)."""
        raise NotImplementedError


class DenseLinear(Linear):
    """A dense product in the weight's own dtype (float32 or bfloat16)."""

    def __init__(self, weight: torch.Tensor) -> None:
        self.weight = weight.contiguous()
        self.out_features, self.in_features = self.weight.shape
        self.kind = f"dense {str(self.weight.dtype).removeprefix('torch.')}"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(self.weight.dtype), self.weight)

    @property
    def nbytes(self) -> int:
        return self.weight.numel() * self.weight.element_size()

    def dense(self) -> torch.Tensor:
        return self.weight.float()


def int4_pack(t: BlockTensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_0/Q4_1 blocks as torch's CPU int4 pack and its (K/32, N, 2) bfloat16 scales and
    zeros: ``w = (q - 8) * scale + zero`` with ``scale = d``, ``zero = m + 8d``."""
    q, d, m = unpack_q4(t)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(
        torch.from_numpy(q.astype(np.int32)), 2
    )
    zeros = m + 8.0 * d
    sz = torch.from_numpy(np.stack([d.T, zeros.T], axis=-1)).to(torch.bfloat16).contiguous()
    return packed, sz


class Int4Linear(Linear):
    """Q4_0 / Q4_1 weights through torch's int4 weight-only CPU GEMM (bfloat16 activations;
    each output row is computed the same way whatever the number of rows)."""

    kind = "int4"

    def __init__(self, t: BlockTensor) -> None:
        self.out_features, self.in_features = t.shape
        self.packed, self.scales_zeros = int4_pack(t)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int4pack_mm_for_cpu(
            x.to(torch.bfloat16), self.packed, QK, self.scales_zeros
        )

    @property
    def nbytes(self) -> int:
        return self.packed.numel() + 2 * self.scales_zeros.numel()

    def dense(self) -> torch.Tensor:
        """The weights as the kernel sees them (rounded to bfloat16 by its output)."""
        eye = torch.eye(self.in_features, dtype=torch.bfloat16)
        return self(eye).float().T.contiguous()

    def weights(self, t: BlockTensor) -> torch.Tensor:
        """The weights the kernel multiplies with, ``(q - 8) * scale + zero`` in float32,
        from ``t``, the blocks this layer was made from."""
        codes = torch.from_numpy(unpack_q4(t)[0]).float()
        scale = self.scales_zeros[..., 0].float().T.repeat_interleave(QK, 1)
        zero = self.scales_zeros[..., 1].float().T.repeat_interleave(QK, 1)
        return (codes - 8) * scale + zero


class Q8Linear(Linear):
    """Q8_0 weights through the native ``q8_0_linear`` kernel: int8 codes and float32 block
    scales as stored, float32 activations and accumulation."""

    kind = "q8_0"

    def __init__(self, t: BlockTensor, op) -> None:
        self.out_features, self.in_features = t.shape
        q, d = unpack_q8_0(t)
        self.q = torch.from_numpy(q)
        self.d = torch.from_numpy(d)
        self.op = op

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x.float().contiguous(), self.q, self.d)

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Dequantized rows ``ids`` (an embedding lookup), float32."""
        q = self.q[ids].view(ids.shape[0], -1, QK).float()
        return (q * self.d[ids].unsqueeze(-1)).view(ids.shape[0], -1)

    @property
    def nbytes(self) -> int:
        return self.q.numel() + 4 * self.d.numel()

    def dense(self) -> torch.Tensor:
        return self.rows(torch.arange(self.out_features))


class SwitchLinear(Linear):
    """Two implementations of one weight: ``small`` for steps of fewer than ``threshold``
    rows, ``large`` from there on."""

    def __init__(self, small: Linear, large: Linear, threshold: int) -> None:
        self.small, self.large, self.threshold = small, large, threshold
        self.out_features, self.in_features = small.out_features, small.in_features
        self.kind = f"{small.kind} below {threshold} rows, else {large.kind}"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (self.small if x.shape[0] < self.threshold else self.large)(x)

    @property
    def nbytes(self) -> int:
        return self.small.nbytes + self.large.nbytes

    def dense(self) -> torch.Tensor:
        return self.small.dense()


WEIGHT_FORMATS = ("auto", "quantized", "hybrid", "bfloat16", "float32")


def make_linear(
    w: np.ndarray | BlockTensor,
    fmt: str,
    *,
    device: torch.device,
    dtype: torch.dtype,
    q8_op=None,
    hybrid_rows: int = 16,
) -> Linear:
    """The linear layer for weight ``w`` in format ``fmt`` (a resolved format, not ``auto``).

    ``float32`` / ``bfloat16``: dense in that dtype (on CUDA: in ``dtype``); ``quantized``: the
    file's blocks (int4 for Q4_0/Q4_1, the native kernel for Q8_0), bfloat16 for other types;
    ``hybrid``: as ``quantized``, plus a bfloat16 copy of each int4 weight for steps of
    ``hybrid_rows`` rows or more."""
    if device.type != "cpu" or fmt in ("float32", "bfloat16"):
        wdtype = dtype if device.type != "cpu" else getattr(torch, fmt)
        dense = torch.from_numpy(as_float32(w)).to(device=device, dtype=wdtype)
        return DenseLinear(dense)
    if fmt not in ("quantized", "hybrid"):
        raise ValueError(f"unknown weight format {fmt!r}")
    small: Linear | None = None
    if isinstance(w, BlockTensor):
        if w.qtype in (GGMLQuantizationType.Q4_0, GGMLQuantizationType.Q4_1):
            small = Int4Linear(w)
        elif w.qtype == GGMLQuantizationType.Q8_0 and q8_op is not None:
            small = Q8Linear(w, q8_op)
    if small is None:
        return DenseLinear(torch.from_numpy(as_float32(w)).to(torch.bfloat16))
    if fmt == "hybrid" and isinstance(small, Int4Linear):
        # The copy holds the weights the int4 kernel multiplies with (its bfloat16 scales and
        # zero points), rounded to bfloat16: the two paths part by output rounding only, not
        # by a different set of weights. The Q8_0 head stays exact: no copy.
        copy = DenseLinear(small.weights(w).to(torch.bfloat16))
        return SwitchLinear(small, copy, hybrid_rows)
    return small


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX-512 BF16 or AMX), per /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_format(fmt: str, device: torch.device) -> str:
    """``auto``: the ``SWITCHYARD_ENGINE_WEIGHTS`` environment variable when set, else on a
    CPU the file's own blocks where bfloat16 is native and float32 elsewhere; on CUDA, dense
    in the model's dtype (reported as ``bfloat16``)."""
    if fmt == "auto":
        fmt = os.environ.get("SWITCHYARD_ENGINE_WEIGHTS", "auto") or "auto"
    if fmt not in WEIGHT_FORMATS:
        raise ValueError(f"weight format must be one of {', '.join(WEIGHT_FORMATS)}, not {fmt!r}")
    if device.type != "cpu":
        return "bfloat16" if fmt == "auto" else fmt
    if fmt == "auto":
        return "quantized" if cpu_has_native_bf16() else "float32"
    return fmt
