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

``q8_0_linear`` (``csrc/quant_gemm.cpp``) multiplies float32 activations with GGUF Q8_0 weights
as stored (int8 codes, a float32 scale per block of 32); ``serving/engine/quant.py`` uses it for
Q8_0 tensors (the default model's embedding table and tied LM head). ``csrc/layer_ops.cpp``
fuses the RMSNorm (with the residual add before it) and the SwiGLU around the bfloat16-input
products, each in place of five to eight torch ops per layer.

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

SOURCES = [
    Path(__file__).parent / "csrc" / "paged_attention.cpp",
    Path(__file__).parent / "csrc" / "quant_gemm.cpp",
    Path(__file__).parent / "csrc" / "layer_ops.cpp",
]
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
        b"".join(s.read_bytes() for s in SOURCES)
        + _cpu_flags().encode()
        + torch.__version__.encode()
    ).hexdigest()[:12]
    name = f"switchyard_kernels_{digest}"
    built = _built_library(cpp_extension, name)
    if built is not None:
        # Built before (the name pins sources, CPU and torch): load it as it is. Going through
        # cpp_extension.load again would rerun ninja, which rebuilds everything whenever
        # another process wrote the build file with a different command line (seen with
        # several test sessions sharing the cache: minutes of compiling inside a test).
        torch.ops.load_library(str(built))
    else:
        cpp_extension.load(
            name=name,
            sources=[str(s) for s in SOURCES],
            extra_cflags=["-O3", "-march=native", "-fopenmp", "-std=c++17"],
            extra_ldflags=["-fopenmp"],
            is_python_module=False,
            verbose=False,
        )
    ops = torch.ops.switchyard
    return SimpleNamespace(
        paged_decode_attention=ops.paged_decode_attention,
        rope_and_cache=ops.rope_and_cache,
        q8_0_linear=ops.q8_0_linear,
        rms_norm=ops.rms_norm,
        add_rms_norm=ops.add_rms_norm,
        silu_mul=ops.silu_mul,
    )


def _built_library(cpp_extension, name: str) -> Path | None:
    """The extension's shared library if a finished build left it (no build in progress, whose
    lock file torch keeps beside it), else ``None``."""
    try:
        build_dir = Path(cpp_extension._get_build_directory(name, False))
    except Exception:  # noqa: BLE001 - a private helper; without it, build as usual
        return None
    library = build_dir / f"{name}.so"
    if library.is_file() and not (build_dir / "lock").exists():
        return library
    return None


def native_ops() -> SimpleNamespace | None:
    """The compiled ops (``paged_decode_attention``, ``rope_and_cache``, ``q8_0_linear``,
    ``rms_norm``, ``add_rms_norm``, ``silu_mul``), or ``None`` where they are unavailable."""
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


def physical_cores() -> int:
    """Physical cores this process may run on: the distinct (package, core) pairs of the CPUs
    in its affinity mask, capped by a cgroup CPU quota (containers); hyperthread siblings count
    once, since two threads on one core only contend for its vector units."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topo / "physical_package_id").read_text(), (topo / "core_id").read_text()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    count = len(cores) or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return count
