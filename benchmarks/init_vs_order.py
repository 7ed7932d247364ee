#!/usr/bin/env python
"""Initialisation or data order? Splits a torch method's training noise on the embedded default.

A fit draws two things from its seed: the network's initial weights (and dropout: torch's stream, seeded by
`torch_methods.torch_generator`) and the batch order (`np.random.default_rng(ctx.seed)`). Here the two are
drawn from separate seeds, I (init) × O (order) on a K × K grid, every other input fixed (request seed 0,
defaults only), through the real runner in scratch folders. A two-way layout without replication gives

    init     std of the true per-init means    sqrt(max(0, (MS_init − MS_resid) / K))
    order    std of the true per-order means   sqrt(max(0, (MS_order − MS_resid) / K))
    resid    what neither explains alone       sqrt(MS_resid) (their interaction, and everything else)
    total    the plain std over all K² runs

in points of val-selected T1 and H (and of `last`: final checkpoint, no selection). The split holds only for
methods that draw both from the fit seed in these two ways (the map methods of the attention family do;
the check below fails loudly for one that does not).

    python benchmarks/init_vs_order.py --method mgmrn [--k 3] [--workers 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import importlib
import itertools
import json
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _run(method: str, init: int, order: int, scratch: str) -> dict:
    """One run with the fit's init stream from `init` and its batch order from `order` (in a worker)."""
    from zsl_bench.paths import ProjectPaths
    from zsl_bench.records import RunRecord
    from zsl_bench.registry import get_method
    from zsl_bench.runner import RunRequest, execute
    from zsl_bench.runtime import limit_threads, seed_hash

    limit_threads(1)
    module = importlib.import_module(get_method(method).fit.__module__)   # where fit draws its two streams
    real_generator, real_np = module.torch_generator, module.np

    class _Random:   # np.random as the method module sees it, with default_rng drawing the order stream
        def __getattr__(self, name):
            return getattr(real_np.random, name)

        @staticmethod
        def default_rng(seed=None):
            return real_np.random.default_rng(seed_hash(seed, "order", order))

    class _Numpy:
        random = _Random()

        def __getattr__(self, name):
            return getattr(real_np, name)

    module.torch_generator = lambda seed: real_generator(seed_hash(seed, "init", init))
    module.np = _Numpy()
    request = RunRequest(dataset="synthetic", backbone="resnet10t", method=method, seed=0, search="none", device="cpu")
    folder = execute(request, ProjectPaths(ROOT), progress=False, slot=Path(scratch) / f"i{init}o{order}")
    record = RunRecord.read(folder)
    return {"init": init, "order": order,
            **{f"{p}_{k}": record.metrics(p)[k] for p in ("val", "last") for k in ("T1", "H")}}


def split(values: np.ndarray) -> dict[str, float]:
    """K × K (init × order) → the std parts described in the module docstring."""
    k = values.shape[0]
    grand = values.mean()
    ms_init = k * ((values.mean(1) - grand) ** 2).sum() / (k - 1)
    ms_order = k * ((values.mean(0) - grand) ** 2).sum() / (k - 1)
    resid = values - values.mean(1, keepdims=True) - values.mean(0, keepdims=True) + grand
    ms_resid = (resid ** 2).sum() / ((k - 1) ** 2)
    return {"init": float(np.sqrt(max(0.0, (ms_init - ms_resid) / k))),
            "order": float(np.sqrt(max(0.0, (ms_order - ms_resid) / k))),
            "resid": float(np.sqrt(ms_resid)), "total": float(values.std(ddof=1)), "mean": float(grand)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="mgmrn", help="a torch method of the train stage (default mgmrn)")
    ap.add_argument("--k", type=int, default=3, help="init seeds = order seeds = K (K² runs; default 3)")
    ap.add_argument("--workers", type=int, default=2, help="runs at once, one thread each (default 2)")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args(argv)
    if args.k < 2:
        ap.error("--k must be at least 2")
    scratch = tempfile.mkdtemp(prefix="init_vs_order_")
    start = time.perf_counter()
    try:
        with ProcessPoolExecutor(args.workers) as pool:
            cells = list(pool.map(_run, *zip(*[(args.method, i, o, scratch)
                                               for i, o in itertools.product(range(args.k), repeat=2)])))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    grid = {key: np.array([[next(c[key] for c in cells if c["init"] == i and c["order"] == o)
                            for o in range(args.k)] for i in range(args.k)])
            for key in ("val_T1", "val_H", "last_T1", "last_H")}
    if all(np.ptp(g, axis=1).max() == 0 for g in grid.values()) or all(np.ptp(g, axis=0).max() == 0
                                                                       for g in grid.values()):
        print(f"{args.method}: one of the two seeds changed nothing; it does not draw init and order as assumed",
              file=sys.stderr)
        return 1
    parts = {key: split(g) for key, g in grid.items()}
    print(f"{args.method} on the embedded default, {args.k} init × {args.k} order seeds "
          f"({time.perf_counter() - start:.0f} s); std in points")
    print("quantity | mean | init | order | resid | total")
    print("--- | --- | --- | --- | --- | ---")
    for key, p in parts.items():
        print(f"{key} | {p['mean']:.1f} | {p['init']:.1f} | {p['order']:.1f} | {p['resid']:.1f} | {p['total']:.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"method": args.method, "k": args.k, "cells": cells, "parts": parts},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
