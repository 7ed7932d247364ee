#!/usr/bin/env python
"""Mg-MRN `maps` mode: time per training epoch on the embedded default, and peak memory.

Trains on the validation fold's train images (the sweep's first fit) with the synthetic defaults,
evaluation switched off, in a project where `dvc repro` has prepared data and features.

With `--against-official`, the same fits alternate with fits computed the release's way
(NingWang2049/Mg-MRN@f27daac): each of the three sequential steps of a batch runs the whole head (every
branch, `train.py:L81-L106`), and the grouping unit builds the [B, K, C, H, W] product it averages
(`grouping.py`); same parameters, same batches, the same updates. Prints the median seconds per epoch of each
and their ratio.

    python benchmarks/bench_mgmrn_epoch.py [--epochs 2] [--variant levels1] [--against-official]
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
    ap.add_argument("--against-official", action="store_true",
                    help="alternate fits with the release's computation pattern and print the ratio")
    ap.add_argument("--rounds", type=int, default=2, help="with --against-official: fits of each, alternating")
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
    store = FeatureStore(paths.features(args.dataset, "resnet10t"))
    cls = get_method("mgmrn" + (f".{args.variant}" if args.variant else ""))
    evaluator = Evaluator(dataset, store, cls, seed=0, search=False, progress=False)
    phase = validation_phase(dataset, 1)
    train = TrainData(x=evaluator.inputs(phase.train_rows),
                      y=np.searchsorted(phase.train_classes, dataset.labels[phase.train_rows]),
                      semantics=evaluator.semantics(phase.train_classes))
    hparams = {**evaluator.configs[0], "epochs": args.epochs}

    def fit_epochs() -> list[float]:
        epoch_ends = []
        method = cls(hparams, evaluator.task)
        ctx = FitContext(seed=0, device="cpu", progress=False, _on_checkpoint=lambda e: epoch_ends.append(time.time()),
                         _unseen=None, _declared_unseen=False)
        start = time.time()
        method.fit(train, ctx)
        fit_epochs.parameters = int(sum(p.numel() for p in method.net.parameters()))
        return [float(t) for t in np.diff([start] + epoch_ends)]

    result = {"method": cls.name, "images": len(train.y), "epochs": args.epochs,
              "batches_per_epoch": int(np.ceil(len(train.y) / (hparams["ways"] * hparams["shots"])))}
    if args.against_official:
        import statistics

        times = {"zsl-bench": [], "official pattern": []}
        for _ in range(args.rounds):
            times["zsl-bench"] += fit_epochs()
            with release_pattern():
                times["official pattern"] += fit_epochs()
        medians = {k: statistics.median(v) for k, v in times.items()}
        result.update({"seconds_per_epoch": {k: [round(t, 2) for t in v] for k, v in times.items()},
                       "median_s": {k: round(v, 2) for k, v in medians.items()},
                       "speedup_vs_official": round(medians["official pattern"] / medians["zsl-bench"], 2)})
    else:
        result["seconds_per_epoch"] = [round(t, 2) for t in fit_epochs()]
    result.update({"parameters": fit_epochs.parameters, "threads": __import__("torch").get_num_threads(),
                   "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)})
    print(json.dumps(result))
    return 0


def release_pattern():
    """A context in which methods/mgmrn computes as the release does (module docstring); restored after."""
    import contextlib

    import torch

    from zsl_bench_methods.mgmrn import model

    def whole_head(self, maps, only=None, kept=None):
        return full_forward(self, maps)   # every branch at every step, as the release's model(x)

    def grouping(self, x):
        if self.mode != "official":
            return own_grouping(self, x)
        b, c, h, w = x.shape
        centers = self.centres.view(1, self.parts, c).expand(b, self.parts, c)
        cx = torch.bmm(centers, x.contiguous().view(b, c, h * w)).view(b, self.parts, h, w)
        x_sq = x.pow(2).sum(1, keepdim=True).expand(-1, self.parts, -1, -1)
        c_sq = centers.pow(2).sum(2)[:, :, None, None].expand(-1, -1, h, w)
        beta = torch.sigmoid(self.smooth)[None, :, None, None].expand(b, -1, h, w)
        assign = torch.softmax((2 * cx - x_sq - c_sq).clamp(max=0.0) / beta, dim=1)
        return (assign.unsqueeze(2) * x.unsqueeze(1)).mean(1)

    full_forward, own_grouping = model.MgMRNHead.forward, model.GroupingUnit.forward

    @contextlib.contextmanager
    def patched():
        model.MgMRNHead.forward, model.GroupingUnit.forward = whole_head, grouping
        try:
            yield
        finally:
            model.MgMRNHead.forward, model.GroupingUnit.forward = full_forward, own_grouping

    return patched()

if __name__ == "__main__":
    sys.exit(main())
