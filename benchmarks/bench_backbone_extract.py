#!/usr/bin/env python
"""Extraction throughput (images/s) of real-size backbones of the axis, zsl-bench's extraction against a plain
inference loop of the same model on the same images: ResNet-101 at 448 px (layer2–4 kept), DINOv2 ViT-B/14
with registers at 448 px (three blocks' tokens kept) and CLIP ViT-B/16's open_clip image tower at 224 px
(three blocks kept). Weights are random (the architecture sets the cost; nothing is downloaded): each model is
saved once and loaded through `weights_file`, as an offline user would. zsl-bench writes every kept level to
the float16 store (streamed, resumable); the plain loop computes the pooled vector only and keeps it in
memory, so the gap is what keeping the maps costs.

    python benchmarks/bench_backbone_extract.py --images 32 --batch-size 8          # CPU, a minute or two
    python benchmarks/bench_backbone_extract.py --images 512 --batch-size 64 --json benchmarks/results/x.json
                                                                                     # on a GPU machine
Images come from the prepared embedded default (`dvc repro` first), repeated to `--images`.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

BACKBONES = {   # name → (BackboneSpec fields, ExtractSpec levels, input size)
    "resnet101@448": ({"arch": "resnet101.tv_in1k"}, ("layer2", "layer3", "layer4"), 448),
    "dinov2-vitb14@448": ({"arch": "vit_base_patch14_reg4_dinov2.lvd142m"}, ("blocks.5", "blocks.8", "blocks.11"), 448),
    "clip-vitb16@224": ({"arch": "ViT-B-16", "library": "open_clip", "pretrained_tag": "openai"},
                        ("resblocks.5", "resblocks.8", "resblocks.11"), 224),
}


def random_weights(spec, folder: Path) -> Path:
    """The model of `spec` with random weights, saved where `weights_file` can point."""
    import torch

    if spec.library == "open_clip":
        import open_clip

        model = open_clip.create_model(spec.arch, pretrained=None)
    else:
        from zsl_bench.backbone import create_timm_model

        model = create_timm_model(spec, pretrained=False)
    path = folder / f"{spec.arch}.pt"
    torch.save(model.state_dict(), path)
    return path


class Repeated:
    """The dataset's images repeated to n rows (a stand-in for a real dataset's size)."""

    def __init__(self, dataset, n: int):
        self.dataset, self.n = dataset, n
        import numpy as np

        self.labels = np.resize(dataset.labels, n)

    def image_path(self, row: int):
        return self.dataset.image_path(row % len(self.dataset.labels))

    def fingerprint(self) -> str:
        return f"{self.dataset.fingerprint()}x{self.n}"

    name, xlsa17_dir = "synthetic", None


def plain_loop(model, images: Repeated, size: int, batch_size: int, device, norm) -> float:
    import torch

    from zsl_bench.images import load_batch_for_backbone

    start = time.perf_counter()
    with torch.inference_mode():
        for lo in range(0, images.n, batch_size):
            x = load_batch_for_backbone([images.image_path(r) for r in range(lo, min(lo + batch_size, images.n))],
                                        size, "none", *norm).to(device)
            model(x).cpu()
    return images.n / (time.perf_counter() - start)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--only", nargs="*", choices=list(BACKBONES), help="some backbones (default: all)")
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args(argv)

    import torch

    from zsl_bench.backbone import BackboneSpec, describe_untrained, load_backbone
    from zsl_bench.data.dataset import load_dataset
    from zsl_bench.feature_extraction import extract, input_statistics
    from zsl_bench.features import ExtractSpec
    from zsl_bench.paths import ProjectPaths
    from zsl_bench.runtime import limit_threads

    limit_threads()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    images = Repeated(load_dataset(ProjectPaths.here().prepared("synthetic")), args.images)
    out = {"device": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu",
           "threads": torch.get_num_threads(), "images": args.images, "batch_size": args.batch_size, "backbones": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in args.only or BACKBONES:
            fields, levels, size = BACKBONES[name]
            spec = BackboneSpec(**fields, source="pretrained", input_size=size)
            spec = replace(spec, weights_file=str(random_weights(spec, tmp)))
            folder = describe_untrained(spec, tmp / name / "backbone")
            model, info = load_backbone(folder)
            model = model.to(device)
            norm = input_statistics(model, info)
            plain_loop(model, Repeated(images.dataset, args.batch_size), size, args.batch_size, device, norm)  # warm-up
            plain = plain_loop(model, images, size, args.batch_size, device, norm)
            start = time.perf_counter()
            if device == "cuda":   # extraction runs the model where load_backbone put it: on the CPU here
                print(f"{name}: zsl-bench extraction runs on the CPU (feature_extraction has no device option); "
                      "timed as it is", file=sys.stderr)
            extract(images, folder, tmp / name / "store",
                    ExtractSpec(levels=levels, input_size=size, batch_size=args.batch_size, vectors="backbone"),
                    progress=False)
            ours = images.n / (time.perf_counter() - start)
            out["backbones"][name] = {"plain_images_per_s": round(plain, 2), "zsl_bench_images_per_s": round(ours, 2),
                                      "levels": list(levels), "input_size": size}
            print(f"{name:20s} plain {plain:8.2f} img/s   zsl-bench (3 levels to disk) {ours:8.2f} img/s")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
