"""Run-time settings every run shares, whatever its method: seed streams, devices, thread counts, the
process group of a torchrun job."""
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


def usable_cores() -> int:
    """The cores this process may run on (not the host's, which torch and OpenBLAS see in a container)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def thread_count() -> int:
    """ZSL_BENCH_THREADS when set, else the usable cores, shared with the other processes torchrun started
    on this machine (on a busy 2-core machine, more threads than cores made one SAE fit 7× slower)."""
    if os.environ.get(THREADS_ENV):
        return max(1, int(os.environ[THREADS_ENV]))
    return max(1, usable_cores() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def loader_workers() -> int:
    """Image-decoding processes for a training DataLoader: one per usable core, at most 8."""
    return min(8, usable_cores())


def init_distributed() -> None:
    """Join the process group when started by `torchrun` (WORLD_SIZE > 1): NCCL with one GPU per process
    (LOCAL_RANK), gloo on CPU. Idempotent; nothing without torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def limit_threads(n: int | None = None) -> int:
    """The one thread rule of every computing stage: torch's intra-op pool and the BLAS/OpenMP pools numpy
    and scipy use get `n` (default `thread_count()`) threads, for the rest of the process. Returns n."""
    import scipy.linalg  # noqa: F401  scipy ships its own OpenBLAS, loaded on first import: load it now, or a
    import torch         # method importing scipy later (SAE) would run its first fit outside the limit
    from threadpoolctl import threadpool_limits

    n = n or thread_count()
    torch.set_num_threads(n)
    threadpool_limits(n)   # applies now and stays (the returned handle would only restore it)
    return n
