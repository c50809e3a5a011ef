"""Native CPU kernels for the engine, compiled on first use with the machine's C++ compiler.

``paged_decode_attention`` reads each sequence's K and V rows straight from the paged pool
through its block table, instead of gathering a padded copy for SDPA: at 32 streams of ~500
tokens the gather alone copied about a gigabyte per step (docs/engine.md, "Where the time
goes"). The kernel is built once per machine (``-O3 -march=native``; the build directory's
name carries a hash of the source, the CPU's flags and torch's version) with
``torch.utils.cpp_extension`` and cached under ``TORCH_EXTENSIONS_DIR`` (torch's default,
``~/.cache/torch_extensions``).

When it cannot be built (no compiler, no ninja) or ``SWITCHYARD_ENGINE_KERNELS=0`` is set,
:func:`decode_attention_kernel` returns ``None``, a warning says why, and the model uses its
gather + SDPA path: the same numbers, more memory traffic. CUDA always uses that path.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "csrc" / "paged_attention.cpp"
_lock = threading.Lock()
_loaded: dict[str, Callable | None] = {}


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return ""


def _build() -> Callable:
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
    return torch.ops.switchyard.paged_decode_attention


def decode_attention_kernel() -> Callable | None:
    """The compiled ``paged_decode_attention`` op, or ``None`` where it is unavailable."""
    with _lock:
        if "decode" not in _loaded:
            if os.environ.get("SWITCHYARD_ENGINE_KERNELS", "1").lower() in ("0", "false", "no"):
                _loaded["decode"] = None
            else:
                try:
                    _loaded["decode"] = _build()
                except Exception as exc:  # noqa: BLE001 - any build failure means "fall back"
                    log.warning(
                        "Native decode attention unavailable (%s); using gather + SDPA.",
                        str(exc).strip().splitlines()[-1] if str(exc).strip() else exc,
                    )
                    _loaded["decode"] = None
        return _loaded["decode"]
