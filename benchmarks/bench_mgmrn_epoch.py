#!/usr/bin/env python
"""Mg-MRN `maps` mode: time per training epoch on the embedded default, and peak memory.

Trains on the validation fold's train images (the sweep's first fit) with the synthetic defaults,
evaluation switched off, in a project where `dvc repro` has prepared data and features.

    python benchmarks/bench_mgmrn_epoch.py [--epochs 2] [--variant levels1]
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--variant", default=None, help="an ablation variant, e.g. levels1 or update-joint")
    ap.add_argument("--dataset", default="synthetic")
    args = ap.parse_args(argv)

    import numpy as np

    from zsl_bench.data.dataset import load_dataset
    from zsl_bench.evaluator import Evaluator
    from zsl_bench.features import FeatureStore
    from zsl_bench.method import FitContext, TrainData
    from zsl_bench.paths import ProjectPaths
    from zsl_bench.protocol import validation_phase
    from zsl_bench.registry import get_method
    from zsl_bench.runtime import limit_threads

    limit_threads()
    paths = ProjectPaths.here()
    dataset = load_dataset(paths.prepared(args.dataset))
    store = FeatureStore(paths.features(args.dataset))
    cls = get_method("mgmrn" + (f".{args.variant}" if args.variant else ""))
    evaluator = Evaluator(dataset, store, cls, seed=0, search=False, progress=False)
    phase = validation_phase(dataset, 1)
    train = TrainData(x=evaluator.inputs(phase.train_rows),
                      y=np.searchsorted(phase.train_classes, dataset.labels[phase.train_rows]),
                      semantics=evaluator.semantics(phase.train_classes))
    epoch_ends = []
    hparams = {**evaluator.configs[0], "epochs": args.epochs}
    method = cls(hparams, evaluator.task)
    ctx = FitContext(seed=0, device="cpu", progress=False, _on_checkpoint=lambda e: epoch_ends.append(time.time()),
                     _unseen=None, _declared_unseen=False)
    start = time.time()
    method.fit(train, ctx)
    per_epoch = np.diff([start] + epoch_ends)
    print(json.dumps({"method": cls.name, "images": len(train.y), "epochs": args.epochs,
                      "batches_per_epoch": int(np.ceil(len(train.y) / (hparams["ways"] * hparams["shots"]))),
                      "seconds_per_epoch": [round(float(t), 2) for t in per_epoch],
                      "parameters": int(sum(p.numel() for p in method.net.parameters())),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
