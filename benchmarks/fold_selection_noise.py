#!/usr/bin/env python
"""Selection noise with one validation fold against three: the std over seeds of the `val` numbers.

Builds a dataset in the xlsa17 layout from the real split files in ../shared/zsl-metadata/<DS> (class
lists, att_splits.mat, per-image index) with random features carrying the class signal (the fixture the
tests use: tests/real_layouts.py), imports them as the feature store (pretrained-style, so all three folds
are free of leakage), then runs a seed-dependent method with `folds = (1,)` and `folds = (1, 2, 3)` for
each seed and prints mean ± std over seeds of the val-selected H and T1 and the oracle H. Usage:

    python benchmarks/fold_selection_noise.py --dataset CUB --method ale --seeds 0 1 2 3 4

Prints a markdown table; minutes on 2 cores (one fit per configuration per fold per seed).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARED = REPO.parent / "shared" / "zsl-metadata"


def build(name: str, tmp: Path, feature_dim: int, noise: float):
    from tests.real_layouts import release_from_metadata
    from tests.test_real_metadata import SIZES, STORED_PREFIX, STRIP
    from zsl_bench.backbone import BackboneSpec
    from zsl_bench.data.dataset import load_dataset
    from zsl_bench.data.xlsa17 import prepare_from_release, xlsa17_folder
    from zsl_bench.features import FeatureStore
    from zsl_bench.feature_import import import_res101

    release = xlsa17_folder(tmp / "raw", name)
    release.mkdir(parents=True)
    for fname, data in release_from_metadata(SHARED / name, name, STORED_PREFIX[name],
                                             feature_dim=feature_dim, noise=noise).files.items():
        (release / fname).write_bytes(data)
    out = prepare_from_release(tmp / "raw", tmp / "prepared", name, name, SIZES[name], STRIP[name],
                               image_root=tmp / "raw" / "images", attribute_names=None)
    d = load_dataset(out)
    spec = BackboneSpec(arch="resnet101", source="xlsa17_res101")
    info = {"spec": spec.applicable(), "arch": "resnet101", "pretraining_data": "imagenet-1k", "trained_on": None}
    return d, FeatureStore(import_res101(d, release / "res101.mat", tmp / "features", info))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="CUB", choices=("CUB", "SUN", "AWA2"))
    ap.add_argument("--method", default="ale")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--feature-dim", type=int, default=128)
    ap.add_argument("--noise", type=float, default=1.0, help="feature noise (std) around the class signal: higher, harder")
    ap.add_argument("--search", default="grid", help="grid, none or random:N (none: only epoch and γ are selected)")
    args = ap.parse_args(argv)
    if not (SHARED / args.dataset).is_dir():
        print(f"needs the real split files in {SHARED / args.dataset}", file=sys.stderr)
        return 2
    from zsl_bench.evaluator import Evaluator
    from zsl_bench.metrics import mean_std
    from zsl_bench.registry import get_method
    from zsl_bench.runtime import limit_threads

    limit_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        d, store = build(args.dataset, Path(tmp), args.feature_dim, args.noise)
        rows = []
        for folds in ((1,), (1, 2, 3)):
            start = time.time()
            picks = []
            for seed in args.seeds:
                out = Evaluator(d, store, get_method(args.method), seed=seed, folds=folds, search=args.search,
                                progress=False).run()
                picks.append(out.selection)
                v = out.selection["val"]
                print(f"folds {folds} seed {seed}: val H {100 * v['metrics']['H']:.2f} (config {v['config_id']}, "
                      f"epoch {v['epoch']})", file=sys.stderr)
            cell = lambda p, k: "{:.2f} ± {:.2f}".format(*mean_std([100 * s[p]["metrics"][k] for s in picks])[:2])  # noqa: E731
            configs = len({(s["val"]["config_id"], s["val"]["epoch"]) for s in picks})
            rows.append(f"| {', '.join(map(str, folds))} | {cell('val', 'H')} | {cell('val', 'T1')} | "
                        f"{cell('oracle', 'H')} | {configs} | {time.time() - start:.0f} s |")
    print(f"{args.method} on {args.dataset} (real xlsa17 splits, random {args.feature_dim}-d features with class "
          f"signal, noise {args.noise:g}), search {args.search}, seeds {args.seeds}: mean ± std over seeds (ddof = 1), %\n")
    print("| validation folds | val H | val T1 | oracle H | distinct (config, epoch) picks | time |\n|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
