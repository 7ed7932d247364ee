#!/usr/bin/env python
"""Peak resident memory of a training loader reading a map store for one epoch.

Builds a store of N × 2048 × 7 × 7 float16 maps (default N = 37,322: AWA2's size, 7.5 GB) in a
scratch folder, then, each in a fresh process, reads one shuffled epoch in batches of 64:
- `FeatureStore.batches` (positioned reads, what zsl-bench's methods use);
- for contrast, fancy indexing into `np.load(..., mmap_mode="r")`.
It repeats the first with a store an eighth the size, to show the peak does not grow with the store.

    python benchmarks/bench_map_store_memory.py [--images 37322] [--scratch /tmp/zslb-bench] [--keep]

Prints one JSON line per measurement (peak RSS in MB, wall seconds, GB read).
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def build_store(folder: Path, n: int, chunk: int = 512) -> Path:
    from zsl_bench.features import NpyRows
    from zsl_bench.io import write_json

    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "index.json").is_file():
        return folder
    shape = (n, 2048, 7, 7)
    rows = NpyRows.create(folder / "layer4.npy", shape, np.float16)
    block = np.random.default_rng(0).random((chunk, *shape[1:]), dtype=np.float32).astype(np.float16)
    for lo in range(0, n, chunk):
        rows.write(lo, block[: min(chunk, n - lo)])
    write_json(folder / "index.json", {
        "dataset": "benchmark", "dataset_fingerprint": "-", "backbone": {}, "backbone_spec": {}, "input_size": 224,
        "arrays": {"layer4": {"file": "layer4.npy", "format": "npy", "shape": list(shape), "dtype": "float16",
                              "sha256": "-"}}})
    return folder


def read_epoch(folder: str, mode: str) -> dict:
    from zsl_bench.features import FeatureStore

    store = FeatureStore(Path(folder))
    n = store.shape("layer4")[0]
    start, total = time.time(), 0.0
    if mode == "store":
        for _, block in store.batches(np.arange(n), 64, name="layer4", seed=0):
            total += float(block[:, 0, 0, 0].sum())
    else:
        arr = store.array("layer4")
        order = np.random.default_rng(0).permutation(n)
        for lo in range(0, n, 64):
            block = np.asarray(arr[np.sort(order[lo:lo + 64])], dtype=np.float32)
            total += float(block[:, 0, 0, 0].sum())
    return {"mode": mode, "images": n, "store_gb": round(n * 2048 * 49 * 2 / 1e9, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "wall_s": round(time.time() - start, 1), "checksum": total}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=37322)
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/zslb-bench"))
    ap.add_argument("--keep", action="store_true", help="keep the generated stores")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(read_epoch(*args.child)))
        return 0
    try:
        plan = [(args.images, "store"), (args.images, "mmap"), (max(64, args.images // 8), "store")]
        for n, mode in plan:
            folder = build_store(args.scratch / f"store-{n}", n)
            out = subprocess.run([sys.executable, __file__, "--child", str(folder), mode], capture_output=True,
                                 text=True, check=True)
            print(out.stdout.strip(), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(args.scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
