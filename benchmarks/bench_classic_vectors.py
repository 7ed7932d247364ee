#!/usr/bin/env python
"""The classic baselines on CUB-sized vectors: wall time of one whole run each (validation search over the
method's grid, refit on trainval, test), one thread, as the train stage runs them on the xlsa17 release.

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
    from tests.real_layouts import release_from_metadata
    from zsl_bench.backbone import BackboneSpec
    from zsl_bench.data import cub
    from zsl_bench.data.dataset import load_dataset
    from zsl_bench.data.xlsa17 import last_two_components, prepare_from_release, xlsa17_folder
    from zsl_bench.evaluator import Evaluator
    from zsl_bench.features import FeatureStore, import_res101
    from zsl_bench.registry import get_method
    from zsl_bench.runtime import limit_threads

    limit_threads()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        release = xlsa17_folder(tmp / "raw", "CUB")
        release.mkdir(parents=True)
        for name, data in release_from_metadata(args.metadata, "CUB", "/p1/p2/p3/MSc/", feature_dim=args.dim,
                                                noise=3.0).files.items():
            (release / name).write_bytes(data)
        d = load_dataset(prepare_from_release(tmp / "raw", tmp / "prepared", "CUB", "CUB", cub.SIZES,
                                              last_two_components, image_root=tmp / "images", attribute_names=None))
        spec = BackboneSpec(source="xlsa17_res101").applicable()
        store = FeatureStore(import_res101(d, release / "res101.mat", tmp / "features",
                                           {"spec": spec, "arch": spec["arch"], "pretraining_data": "imagenet-1k",
                                            "trained_on": None}))
        print(f"| method | configurations searched | wall time (s) | T1 (random features) |\n|---|---|---|---|")
        for method in args.methods:
            start = time.time()
            out = Evaluator(d, store, get_method(method), seed=0, progress=False).run()
            print(f"| {method} | {len(out.configs)} | {time.time() - start:.0f} | "
                  f"{100 * out.selection['val']['metrics']['T1']:.1f} |", flush=True)
    print(f"\n{len(d.labels)} images ({len(d.splits['trainval'])} trainval), {args.dim}-d, {args.threads} thread(s), "
          f"{os.cpu_count()} cores on this machine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
