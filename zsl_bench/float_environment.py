"""What decides the last bits of a CPU computation here: the fingerprint `zsl-bench regress` compares before it
trusts an exact comparison.

Two runs of the same code and configuration give byte-identical numbers when these agree: the Python, numpy,
scipy and torch builds, the kernels torch dispatches to (its CPU capability: AVX2, AVX512, …; the
`ATEN_CPU_CAPABILITY` variable can lower it), every BLAS library loaded (numpy's and scipy's own OpenBLAS:
version and the core type whose kernels it picked; `OPENBLAS_CORETYPE` can change it), and the thread count
(how reductions are split). The CPU's model name is kept for the reader but not compared: two models with the
same instruction set and BLAS core type run the same kernels.
"""
from __future__ import annotations

import platform
import sys

from zsl_bench.records import _version   # an installed distribution's version, or None

PACKAGES = ("numpy", "scipy", "torch", "timm")
INFORMATIONAL = ("cpu_model",)   # recorded, never compared


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def blas_libraries() -> list[str]:
    """Every BLAS/LAPACK library this process has loaded, as 'api version core-type' (numpy's and scipy's
    OpenBLAS are separate copies, each picks its kernels at load)."""
    import numpy  # noqa: F401
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_info

    return sorted(f"{lib.get('internal_api')} {lib.get('version')} {lib.get('architecture')}"
                  for lib in threadpool_info() if lib.get("user_api") == "blas")


def fingerprint(threads: int) -> dict:
    """The fingerprint of this process, for computations run with `threads` threads."""
    import torch

    return {"python": sys.version.split()[0], "machine": platform.machine(),
            **{p: _version(p) for p in PACKAGES},
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "blas": blas_libraries(), "threads": int(threads), "cpu_model": cpu_model()}


def differences(recorded: dict, current: dict) -> list[str]:
    """'key: recorded → current' for each compared entry that differs (empty: exact comparison is valid)."""
    keys = sorted((set(recorded) | set(current)) - set(INFORMATIONAL))
    return [f"{k}: {recorded.get(k)} → {current.get(k)}" for k in keys if recorded.get(k) != current.get(k)]
