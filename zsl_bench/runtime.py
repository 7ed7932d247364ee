"""Run-time settings every run shares, whatever its method: seed streams, devices, thread counts."""
from __future__ import annotations

import hashlib
import os

from zsl_bench.io import canonical_json


def seed_hash(*parts) -> int:
    """A 31-bit seed from any JSON-able parts (DomainBed's `seed_hash`): adding a hyperparameter or a
    phase never changes the stream of another."""
    return int(hashlib.sha256(canonical_json(parts).encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(seed)


def resolve_device(requested: str = "auto") -> str:
    """'auto' → cuda when there is one, else cpu."""
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


THREADS_ENV = "ZSL_BENCH_THREADS"   # overrides the thread count (regress sets 1: numbers independent of cores)


def limit_threads() -> None:
    """Use the cores we have, not the ones torch guesses (containers report the host's), unless
    ZSL_BENCH_THREADS says how many threads to use."""
    import torch

    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, int(os.environ.get(THREADS_ENV) or n)))
