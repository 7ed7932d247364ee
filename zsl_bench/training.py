"""Shared training plumbing: seed streams, devices, thread counts."""
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


# --- helpers for torch methods ----------------------------------------------------------------------

def torch_generator(seed: int):
    """Seed torch's global stream (dropout, init) and return a generator for data order."""
    import torch

    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def epoch_batches(n: int, batch_size: int, rng) -> list:
    """One epoch of shuffled index batches (every sample once)."""
    import numpy as np

    order = rng.permutation(n)
    return [order[lo:lo + batch_size] for lo in range(0, n, batch_size)]


def class_balanced_batches(labels, n_batches: int, classes_per_batch: int, shots: int, rng) -> list:
    """Episodes of `classes_per_batch` distinct classes × `shots` images each (TransZero's balanced
    sampler for SUN/AWA2 is shots = 1; Mg-MRN's ways × shots sampler is the general case)."""
    import numpy as np

    labels = np.asarray(labels)
    by_class = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
    classes = np.array(sorted(by_class))
    ways = min(classes_per_batch, len(classes))
    batches = []
    for _ in range(n_batches):
        chosen = rng.choice(classes, ways, replace=False)
        batches.append(np.concatenate([rng.choice(by_class[c], shots, replace=len(by_class[c]) < shots)
                                       for c in chosen]))
    return batches


def score_in_batches(x, score_batch, batch_size: int = 256):
    """Run `score_batch(blocks) -> np.ndarray` over a MapView (or an array) and stack the results."""
    import numpy as np

    if hasattr(x, "batches"):
        return np.concatenate([score_batch(blocks) for _, blocks in x.batches(batch_size)])
    return np.concatenate([score_batch([x[lo:lo + batch_size]]) for lo in range(0, len(x), batch_size)])


def make_optimizer(name: str, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.0):
    import torch

    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay, momentum=momentum)
    raise ValueError(f"unknown optimizer {name!r} (adam, sgd, rmsprop)")
