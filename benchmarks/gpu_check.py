#!/usr/bin/env python
"""The GPU check of the region-methods issue, as one prepared script (also runs, tiny, on a CPU).

1. Mg-MRN image mode: ResNet-101 (random init), 448 px, the official batch (8 ways × 2 shots = 16 images),
   one batch = three sequential updates (one per branch). Step time and peak GPU memory, fp32 and bf16
   autocast.
2. TransZero training step at B = 50, 2048 × 14 × 14, 312 attributes, 200 classes (CUB config).

    python benchmarks/gpu_check.py                                  # on the GPU machine
    python benchmarks/gpu_check.py --device cpu --arch resnet10t --size 64 --steps 1   # a CPU smoke test
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys

import numpy as np
import torch
import torch.nn.functional as F
from bench_transzero_step import cub_net, cub_training_step, timed   # benchmarks/ is the script's folder


def mgmrn_steps(device, arch: str, size: int, steps: int, dtype) -> dict:
    from methods.mgmrn.model import MgMRNHead
    from zsl_bench.blocks import level_backbone

    torch.manual_seed(0)
    backbone = level_backbone(arch, pretrained=False)
    head = MgMRNHead(backbone.channels, np.random.default_rng(0).normal(size=(312, 300)), width=1.0)
    net = torch.nn.ModuleDict({"backbone": backbone, "head": head}).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=5e-4, momentum=0.9, weight_decay=1e-5)
    att = F.normalize(torch.rand(150, 312, device=device), dim=1)
    images = torch.randn(16, 3, size, size, device=device)
    y = torch.arange(8, device=device).repeat_interleave(2)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def batch():
        for k in head.branches:   # three sequential updates, as the official train.py
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                scores, _ = head(backbone(images), only=k)
                p = scores[k].float()
                logits = 20 * F.normalize(p, dim=1) @ att.T
                loss = F.cross_entropy(logits, y) + 0.1 * ((F.normalize(p, dim=1) - att[y]) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    times = timed(batch, steps, device)
    out = {"batch_s_median": round(statistics.median(times), 4), "batches": len(times),
           "parameters_M": round(sum(p.numel() for p in net.parameters()) / 1e6, 1)}
    if device.type == "cuda":
        out["peak_gpu_memory_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def transzero_steps(device, steps: int) -> dict:
    times = timed(cub_training_step(cub_net(device), 50, device), steps, device)
    return {"step_s_median": round(statistics.median(times), 4), "steps": len(times)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--arch", default="resnet101")
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    result = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "torch": torch.__version__,
              "mgmrn_image": {"arch": args.arch, "size": args.size, "batch": "8 ways x 2 shots, 3 updates"}}
    for name, dtype in (("fp32", torch.float32), ("bf16_autocast", torch.bfloat16)):
        result["mgmrn_image"][name] = mgmrn_steps(device, args.arch, args.size, args.steps, dtype)
    result["transzero_B50_2048x14x14"] = transzero_steps(device, args.steps)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
