#!/usr/bin/env python
"""Extraction throughput of `zsl_bench.features.extract` against a plain timm loop.

Same backbone, same images, same batch size and input size, same image decoding; the plain loop keeps
the features in memory, zsl-bench streams them to the store (with progress and resume bookkeeping).
Runs alternate to share the machine's state fairly; reports the median of `--repeats`.

    python benchmarks/bench_extract_throughput.py            # in a project after `dvc repro`
    python benchmarks/bench_extract_throughput.py --dataset synthetic --batch-size 128 --repeats 3 [--levels layer4]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def plain_loop(dataset, model, size: int, batch_size: int):
    import numpy as np
    import torch

    from zsl_bench.images import load_batch_for_backbone

    out = []
    with torch.inference_mode():
        for lo in range(0, len(dataset.labels), batch_size):
            rows = range(lo, min(lo + batch_size, len(dataset.labels)))
            out.append(model(load_batch_for_backbone([dataset.image_path(r) for r in rows], size)).numpy())
    return np.concatenate(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--levels", nargs="*", default=[])
    args = ap.parse_args(argv)

    from zsl_bench.backbone import load_backbone
    from zsl_bench.data.dataset import load_dataset
    from zsl_bench.feature_extraction import extract
    from zsl_bench.features import ExtractSpec
    from zsl_bench.paths import ProjectPaths
    from zsl_bench.runtime import limit_threads

    limit_threads()
    paths = ProjectPaths.here()
    dataset = load_dataset(paths.prepared(args.dataset))
    model, info = load_backbone(paths.backbone(args.dataset, "resnet10t"))
    size = info["spec"]["input_size"]
    n = len(dataset.labels)
    plain_loop(dataset, model, size, args.batch_size)  # warm-up: page cache, allocator, oneDNN kernels
    times = {"plain": [], "zsl-bench": []}
    for _ in range(args.repeats):
        t = time.perf_counter()
        plain_loop(dataset, model, size, args.batch_size)
        times["plain"].append(time.perf_counter() - t)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            extract(dataset, paths.backbone(args.dataset, "resnet10t"), Path(tmp) / "store",
                    ExtractSpec(levels=tuple(args.levels), batch_size=args.batch_size), progress=False)
            times["zsl-bench"].append(time.perf_counter() - t)
    rate = {k: n / statistics.median(v) for k, v in times.items()}
    print(json.dumps({"images": n, "arch": info["arch"], "input_size": size, "batch_size": args.batch_size,
                      "levels": args.levels, "images_per_s": {k: round(v, 1) for k, v in rate.items()},
                      "ratio_zsl_bench_over_plain": round(rate["zsl-bench"] / rate["plain"], 3),
                      "seconds": {k: [round(x, 2) for x in v] for k, v in times.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
