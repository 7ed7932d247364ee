#!/usr/bin/env python
"""Training-image throughput at 448 px: the DataLoader path (zsl_bench/images.py `ImageLoader`, transforms v2,
per-image seeds) with 0 and N worker processes, against the in-process loading it replaced (PIL resize,
numpy crop and flip, one image after another in the training process).

Images: JPEGs of CUB's typical size (500 × 375, quality 90) written to a temporary folder, smooth colour
fields with noise (random pixels would make JPEG decoding unrealistically slow). Batches of 16 (Mg-MRN's
8 ways × 2 shots), GEM-ZSL's training transform (torch_methods.resize_crop_transform): short side to 512, random 448 crop, random flip.

    python benchmarks/bench_image_loader.py [--images 96] [--workers 2] [--size 448] [--repeats 3]
Prints one JSON object (images per second, median over repeats).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_images(folder: Path, n: int, width: int = 500, height: int = 375) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    paths = []
    for i in range(n):
        base = np.stack([np.sin(xx / rng.uniform(20, 80) + c) * np.cos(yy / rng.uniform(20, 80)) for c in range(3)], -1)
        img = np.clip(127 + 100 * base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        paths.append(folder / f"{i:04d}.jpg")
        Image.fromarray(img).save(paths[-1], quality=90)
    return paths


def in_process_batches(paths: list[Path], batches: list, size: int, seed: int):
    """The loading before the DataLoader: each image decoded, resized (short side to size·8/7), cropped and
    flipped with numpy in the training process, then normalised."""
    import torch
    from PIL import Image

    from zsl_bench.images import to_normalised_tensor

    rng = np.random.default_rng(seed)
    big = int(size * 8 / 7)
    for positions in batches:
        out = []
        for p in positions:
            with Image.open(paths[p]) as im:
                im = im.convert("RGB")
                w, h = im.size
                scale = big / min(w, h)
                img = np.asarray(im.resize((max(big, round(w * scale)), max(big, round(h * scale))),
                                           Image.Resampling.BILINEAR))
            top = int(rng.integers(0, img.shape[0] - size + 1))
            left = int(rng.integers(0, img.shape[1] - size + 1))
            crop = img[top:top + size, left:left + size]
            out.append(crop[:, ::-1] if rng.uniform() < 0.5 else crop)
        yield to_normalised_tensor(torch.as_tensor(np.ascontiguousarray(np.stack(out))))


class Paths:
    """The part of an ImageView that ImageLoader reads."""

    def __init__(self, paths):
        self._paths = paths

    def paths(self, positions=None):
        return self._paths


def rate(make_iterator, n_images: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for batch in make_iterator():
            assert batch.shape[1] == 3
        times.append(time.perf_counter() - start)
    return n_images / statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args(argv)
    from zsl_bench.images import ImageLoader
    from zsl_bench.torch_methods import resize_crop_transform
    from zsl_bench.runtime import limit_threads, usable_cores

    limit_threads()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(Path(tmp), args.images)
        order = np.random.default_rng(1).permutation(args.images)
        batches = [order[i:i + args.batch] for i in range(0, args.images, args.batch)]
        parts = [(step, b, 0) for step, b in enumerate(batches, 1)]
        result = {"images": args.images, "size": args.size, "batch": args.batch, "cores": usable_cores(),
                  "in_process_img_s": round(rate(lambda: in_process_batches(paths, batches, args.size, 0),
                                                 args.images, args.repeats), 1)}
        for workers in sorted({0, args.workers}):
            loader = ImageLoader(Paths(paths), resize_crop_transform(args.size, train=True), seed=0, workers=workers)
            result[f"dataloader_{workers}_workers_img_s"] = round(rate(lambda: loader(parts), args.images,
                                                                       args.repeats), 1)
        result["speedup_vs_in_process"] = round(result[f"dataloader_{args.workers}_workers_img_s"]
                                                / result["in_process_img_s"], 2)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
