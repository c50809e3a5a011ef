"""Native CPU kernels for the engine, compiled on first use with the machine's C++ compiler.

``paged_decode_attention`` reads each sequence's K and V rows straight from the paged pool
through its block table, instead of gathering a padded copy for SDPA: at 32 streams of ~500
tokens the gather alone copied about a gigabyte per step (docs/engine.md, "Where the time
goes"). The kernel is built once per machine (``-O3 -march=native``; the build directory's
name carries a hash of the source, the CPU's flags and torch's version) with
``torch.utils.cpp_extension`` and cached under ``TORCH_EXTENSIONS_DIR`` (torch's default,
``~/.cache/torch_extensions``).

``rope_and_cache`` applies the rotary embedding to Q and K and writes K and V into the pool in
one pass, in place of about twenty small torch ops per layer.

When they cannot be built (no compiler, no ninja) or ``SWITCHYARD_ENGINE_KERNELS=0`` is set,
:func:`native_ops` returns ``None``, a warning says why, and the model uses plain torch ops
(gather + SDPA for decode): the same numbers, more memory traffic. CUDA always uses those.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path
from types import SimpleNamespace

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "csrc" / "paged_attention.cpp"
_lock = threading.Lock()
_loaded: dict[str, SimpleNamespace | None] = {}


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return ""


def _build() -> SimpleNamespace:
    from torch.utils import cpp_extension

    digest = hashlib.sha256(
        SOURCE.read_bytes() + _cpu_flags().encode() + torch.__version__.encode()
    ).hexdigest()[:12]
    cpp_extension.load(
        name=f"switchyard_kernels_{digest}",
        sources=[str(SOURCE)],
        extra_cflags=["-O3", "-march=native", "-fopenmp", "-std=c++17"],
        extra_ldflags=["-fopenmp"],
        is_python_module=False,
        verbose=False,
    )
    ops = torch.ops.switchyard
    return SimpleNamespace(
        paged_decode_attention=ops.paged_decode_attention, rope_and_cache=ops.rope_and_cache
    )


def native_ops() -> SimpleNamespace | None:
    """The compiled ops (``paged_decode_attention``, ``rope_and_cache``), or ``None`` where
    they are unavailable."""
    with _lock:
        if "ops" not in _loaded:
            if os.environ.get("SWITCHYARD_ENGINE_KERNELS", "1").lower() in ("0", "false", "no"):
                _loaded["ops"] = None
            else:
                try:
                    _loaded["ops"] = _build()
                except Exception as exc:  # noqa: BLE001 - any build failure means "fall back"
                    text = str(exc).strip()
                    log.warning(
                        "Native engine kernels unavailable (%s); using plain torch ops.",
                        text.splitlines()[-1] if text else type(exc).__name__,
                    )
                    _loaded["ops"] = None
        return _loaded["ops"]
