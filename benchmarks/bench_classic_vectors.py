#!/usr/bin/env python
"""The classic baselines on CUB-sized vectors: wall time of one whole run each (validation search over the
method's grid on every validation fold `train.folds: auto` uses — all three on a real dataset —, refit on
trainval, test), one thread, as the train stage runs them on the xlsa17 release.

The dataset is CUB's real split (../shared/zsl-metadata/CUB: att_splits.mat, class lists, per-image index)
with random 2048-d features carrying the class signal in place of res101.mat: same sizes, same work, so the
times are what the release gives; the accuracies are not (they are printed only to show the runs are
real). Prints a markdown table (README, "Release-only quick start").

    python benchmarks/bench_classic_vectors.py [--methods eszsl sae ale] [--dim 2048] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=["eszsl", "sae", "ale"])
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--metadata", type=Path, default=REPO.parent / "shared" / "zsl-metadata" / "CUB")
    args = ap.parse_args(argv)
    if not args.metadata.is_dir():
        print(f"{args.metadata}: CUB's split files are needed (att_splits.mat, class lists, res101_index.csv)",
              file=sys.stderr)
        return 2
    os.environ["ZSL_BENCH_THREADS"] = str(args.threads)
    sys.path.insert(0, str(REPO))
    from tests.real_layouts import cub_vector_fixture
    from zsl_bench.evaluator import Evaluator
    from zsl_bench.protocol import resolve_folds
    from zsl_bench.registry import get_method
    from zsl_bench.runtime import limit_threads

    limit_threads()
    with tempfile.TemporaryDirectory() as tmp:
        d, store = cub_vector_fixture(args.metadata, Path(tmp), feature_dim=args.dim)
        folds = resolve_folds("auto", d, store.index.get("backbone_spec") or {})   # what a real run uses
        print(f"| method | configurations searched | wall time (s) | T1 | H (random features) |\n|---|---|---|---|---|")
        for method in args.methods:
            start = time.time()
            out = Evaluator(d, store, get_method(method), seed=0, folds=folds, progress=False).run()
            m = out.selection["val"]["metrics"]
            print(f"| {method} | {len(out.configs)} | {time.time() - start:.0f} | {100 * m['T1']:.1f} | "
                  f"{100 * m['H']:.1f} |", flush=True)
    print(f"\n{len(d.labels)} images ({len(d.splits['trainval'])} trainval), {args.dim}-d, validation folds "
          f"{', '.join(map(str, folds))}, {args.threads} thread(s), "
          f"{os.cpu_count()} cores on this machine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
