"""Read a llama-architecture GGUF file: hyper-parameters, weights, tokenizer data.

2-D tensors of the block types the engine multiplies directly (Q4_0, Q4_1, Q8_0) are kept as
the file stores them (:class:`serving.engine.quant.BlockTensor`); every other tensor is
dequantized to float32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize

from serving.engine.errors import UnsupportedModelError
from serving.engine.quant import KEPT_TYPES, BlockTensor

SUPPORTED_ARCHITECTURES = {"llama"}
SUPPORTED_TYPES = {
    GGMLQuantizationType.F32,
    GGMLQuantizationType.F16,
    GGMLQuantizationType.BF16,
    GGMLQuantizationType.Q4_0,
    GGMLQuantizationType.Q4_1,
    GGMLQuantizationType.Q5_0,
    GGMLQuantizationType.Q5_1,
    GGMLQuantizationType.Q8_0,
    GGMLQuantizationType.Q2_K,
    GGMLQuantizationType.Q3_K,
    GGMLQuantizationType.Q4_K,
    GGMLQuantizationType.Q5_K,
    GGMLQuantizationType.Q6_K,
}


@dataclass
class LlamaConfig:
    n_layers: int
    dim: int
    ffn_dim: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab_size: int
    norm_eps: float
    rope_base: float
    context_length: int
    tied_embeddings: bool


@dataclass
class TokenizerData:
    model: str
    pre: str
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    bos_id: int | None
    eos_id: int | None
    add_bos: bool
    chat_template: str | None
    extra_eos_ids: list[int] = field(default_factory=list)


@dataclass
class GGUFModel:
    name: str
    config: LlamaConfig
    tokenizer: TokenizerData
    weights: dict[str, np.ndarray | BlockTensor]


def _field(reader: GGUFReader, key: str, default: Any = None) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


def tokenizer_data(get: Callable[..., Any]) -> TokenizerData:
    """The tokenizer fields of a GGUF file, from ``get(key, default)``: a ``GGUFReader``'s
    fields (:func:`load_gguf`) or the header read by :func:`serving.engine.gguf_meta.read_metadata`
    (the gateway's metering tokenizer), so that both build it the same way."""
    eos = get("tokenizer.ggml.eos_token_id")
    return TokenizerData(
        model=get("tokenizer.ggml.model"),
        pre=get("tokenizer.ggml.pre", "default"),
        tokens=list(get("tokenizer.ggml.tokens")),
        token_types=[int(x) for x in get("tokenizer.ggml.token_type", [])],
        merges=list(get("tokenizer.ggml.merges", [])),
        bos_id=get("tokenizer.ggml.bos_token_id"),
        eos_id=None if eos is None else int(eos),
        add_bos=bool(get("tokenizer.ggml.add_bos_token", False)),
        chat_template=get("tokenizer.chat_template"),
    )


def load_gguf(path: str | Path, name: str | None = None, *, keep_blocks: bool = True) -> GGUFModel:
    """Load the file's tensors (rows = output features): Q4_0, Q4_1 and Q8_0 matrices as
    :class:`BlockTensor` (``keep_blocks``), everything else dequantized to float32 arrays."""
    reader = GGUFReader(str(path))
    arch = _field(reader, "general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedModelError(
            f"Unsupported architecture {arch!r} in {path}: this engine runs "
            f"{', '.join(sorted(SUPPORTED_ARCHITECTURES))}."
        )
    a = arch
    n_heads = int(_field(reader, f"{a}.attention.head_count"))
    dim = int(_field(reader, f"{a}.embedding_length"))
    tokens = list(_field(reader, "tokenizer.ggml.tokens"))
    weights: dict[str, np.ndarray | BlockTensor] = {}
    for t in reader.tensors:
        if t.tensor_type not in SUPPORTED_TYPES:
            raise UnsupportedModelError(
                f"Unsupported quantization {t.tensor_type.name} for tensor {t.name} in {path}."
            )
        shape = tuple(int(x) for x in reversed(t.shape))
        if keep_blocks and t.tensor_type in KEPT_TYPES and len(shape) == 2:
            raw = np.asarray(t.data).reshape(shape[0], -1)
            weights[t.name] = BlockTensor(t.tensor_type, shape, raw)
            continue
        arr = dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        weights[t.name] = arr.reshape(shape)
    cfg = LlamaConfig(
        n_layers=int(_field(reader, f"{a}.block_count")),
        dim=dim,
        ffn_dim=int(_field(reader, f"{a}.feed_forward_length")),
        n_heads=n_heads,
        n_kv_heads=int(_field(reader, f"{a}.attention.head_count_kv", n_heads)),
        head_dim=int(_field(reader, f"{a}.rope.dimension_count", dim // n_heads)),
        vocab_size=int(_field(reader, f"{a}.vocab_size", len(tokens))),
        norm_eps=float(_field(reader, f"{a}.attention.layer_norm_rms_epsilon", 1e-5)),
        rope_base=float(_field(reader, f"{a}.rope.freq_base", 10000.0)),
        context_length=int(_field(reader, f"{a}.context_length", 2048)),
        tied_embeddings="output.weight" not in weights,
    )
    tok_model = _field(reader, "tokenizer.ggml.model")
    if tok_model != "gpt2":
        raise UnsupportedModelError(
            f"Unsupported tokenizer {tok_model!r} in {path}: this engine reads byte-level BPE "
            "('gpt2') vocabularies."
        )
    tokenizer = tokenizer_data(lambda key, default=None: _field(reader, key, default))
    return GGUFModel(
        name=name or str(_field(reader, "general.name", Path(path).stem)),
        config=cfg,
        tokenizer=tokenizer,
        weights=weights,
    )
