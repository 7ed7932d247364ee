#!/usr/bin/env python
"""The GPU check, as one prepared script (also runs, tiny, on a CPU: `--smoke`).

1. Mg-MRN image mode through the shared loop (zsl_bench/training.py): ResNet-101 (random init), 448 px,
   the official batch (8 ways × 2 shots = 16 images), one batch = three sequential updates (one per
   branch). Step time and peak GPU memory under precision fp32 and bf16 (autocast).
2. TransZero training step at B = 50, 2048 × 14 × 14, 312 attributes, 200 classes (CUB config).
3. Training-image throughput at 448 px: the DataLoader (transforms v2, per-image seeds) with 0 and N
   workers against in-process loading (benchmarks/bench_image_loader.py).
4. Data parallelism: the Mg-MRN image step on every visible GPU with torchrun (NCCL; gloo on CPU), the
   global batch of 16 split across the processes; step time per process count.
5. Resume after a kill: a child process trains the Mg-MRN image step through the loop, checkpoints after
   step 2 and is SIGKILLed; a fresh process resumes from the file and trains to step 4; its final state
   is compared with an uninterrupted run's (largest absolute difference; 0 where kernels are deterministic).

    python benchmarks/gpu_check.py                 # on the GPU machine (about 3–5 minutes on one H100)
    python benchmarks/gpu_check.py --smoke         # resnet10t, 64 px, head width 1/32, 1 step: checks the script
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from bench_transzero_step import cub_net, cub_training_step, timed   # benchmarks/ is the script's folder

HERE = Path(__file__).resolve().parent


def mgmrn_image(device, arch: str, size: int, precision: str, seed: int = 0, width: float = 1.0):
    """(net, loop, one-batch update, stream) of Mg-MRN image mode through the shared loop."""
    from zsl_bench_methods.mgmrn.model import MgMRNHead
    from zsl_bench.torch_methods import level_backbone
    from zsl_bench.method import FitContext, TrainSettings
    from zsl_bench.training import BatchStream, TrainLoop

    torch.manual_seed(seed)
    backbone = level_backbone(arch, pretrained=False)
    head = MgMRNHead(backbone.channels, np.random.default_rng(0).normal(size=(312, 300)), width=width)
    net = torch.nn.ModuleDict({"backbone": backbone, "head": head}).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=5e-4, momentum=0.9, weight_decay=1e-5)
    ctx = FitContext(seed=seed, device=str(device), progress=False, _on_checkpoint=lambda label: None, _unseen=None,
                     _declared_unseen=False, settings=TrainSettings(precision=precision))
    loop = TrainLoop(ctx, net, opt, device=device)
    att = F.normalize(torch.rand(150, 312, generator=torch.Generator().manual_seed(1)), dim=1).to(device)
    images = torch.randn(16, 3, size, size, generator=torch.Generator().manual_seed(2)).to(device)
    labels = torch.arange(8, device=device).repeat_interleave(2)

    def update(idx, _=None):
        x, y = images[idx], labels[idx]
        for k in head.branches:   # three sequential updates, as the official train.py
            def loss_of(part, k=k):
                p = head(backbone(x[part]), only=k)[0][k].float()
                logits = 20 * F.normalize(p, dim=1) @ att.T
                return F.cross_entropy(logits, y[part]) + 0.1 * ((F.normalize(p, dim=1) - att[y[part]]) ** 2).mean()
            loop.step(opt, loss_of, len(x))

    stream = BatchStream(lambda rng: [rng.permutation(16)], np.random.default_rng(seed))
    return net, loop, ctx, update, stream


def mgmrn_steps(device, arch: str, size: int, steps: int, precision: str, width: float) -> dict:
    net, loop, _, update, _ = mgmrn_image(device, arch, size, precision, width=width)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def batch():
        idx, _ = loop.shard(np.arange(16))
        update(idx)

    times = timed(batch, steps, device)
    out = {"batch_s_median": round(statistics.median(times), 4), "batches": len(times),
           "parameters_M": round(sum(p.numel() for p in net.parameters()) / 1e6, 1)}
    if device.type == "cuda":
        out["peak_gpu_memory_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def transzero_steps(device, steps: int, batch: int = 50) -> dict:
    times = timed(cub_training_step(cub_net(device), batch, device), steps, device)
    return {"step_s_median": round(statistics.median(times), 4), "steps": len(times)}


def image_throughput(size: int, images: int, workers: int) -> dict:
    out = subprocess.run([sys.executable, str(HERE / "bench_image_loader.py"), "--images", str(images),
                          "--size", str(size), "--workers", str(workers), "--repeats", "2"],
                         capture_output=True, text=True, timeout=900)
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {"error": out.stderr[-2000:]}


# --- data parallelism (this script re-entered under torchrun) -------------------------------------------

def ddp_worker(args) -> None:
    from zsl_bench.runtime import init_distributed
    from zsl_bench.training import Distributed

    init_distributed()
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    _, loop, _, update, _ = mgmrn_image(device, args.arch, args.size, args.precision, width=args.width)

    def batch():
        idx, _ = loop.shard(np.arange(16))
        update(idx)

    times = timed(batch, args.steps, device)
    if Distributed.current().is_main:
        print(json.dumps({"processes": Distributed.current().world, "batch_s_median": round(statistics.median(times), 4),
                          "per_process_images": 16 // Distributed.current().world}))


def data_parallel(args, device) -> dict:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    counts = [1, torch.cuda.device_count()] if device.type == "cuda" else [1, 2]
    out = {}
    for n in sorted(set(c for c in counts if c >= 1)):
        cmd = [torchrun, "--standalone", "--nproc-per-node", str(n), str(Path(__file__).resolve()), "--ddp-worker",
               "--arch", args.arch, "--size", str(args.size), "--steps", str(args.steps), "--precision", args.precision_ddp,
               "--width", str(args.width)]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "ZSL_BENCH_THREADS": "1"}
                             if device.type == "cpu" else None)
        out[f"{n}_processes"] = (json.loads(run.stdout.strip().splitlines()[-1]) if run.returncode == 0
                                 else {"error": run.stderr[-2000:]})
    return out


# --- resume after a kill ------------------------------------------------------------------------------------

def resume_child(args) -> None:
    """Train steps 1–4 with checkpoints after 2 and 4; after checkpoint 2 save the loop and, with --kill,
    SIGKILL this process. With --resume-from, start from that file. Writes the final state to --out."""
    device = torch.device(args.device)
    net, loop, ctx, update, stream = mgmrn_image(device, args.arch, args.size, args.precision, width=args.width)

    def on_checkpoint(label):
        if label == 1 and args.snapshot and not args.resume_from:
            torch.save(ctx.snapshot(), args.snapshot)
            if args.kill:
                os.kill(os.getpid(), signal.SIGKILL)

    ctx._on_checkpoint = on_checkpoint
    if args.resume_from:
        ctx.resume_state = torch.load(args.resume_from, weights_only=False)
    loop.run(stream, update, {2: 1, 4: 2})
    torch.save({k: v.cpu() for k, v in net.state_dict().items()}, args.out)


def resume_after_kill(args, device) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = [sys.executable, str(Path(__file__).resolve()), "--resume-child", "--device", str(device), "--arch",
                args.arch, "--size", str(args.size), "--precision", "fp32", "--width", str(args.width)]
        whole = subprocess.run(base + ["--out", str(tmp / "whole.pt")], capture_output=True, text=True, timeout=900)
        killed = subprocess.run(base + ["--snapshot", str(tmp / "snap.pt"), "--kill", "--out", str(tmp / "x.pt")],
                                capture_output=True, text=True, timeout=900)
        resumed = subprocess.run(base + ["--resume-from", str(tmp / "snap.pt"), "--out", str(tmp / "resumed.pt")],
                                 capture_output=True, text=True, timeout=900)
        if whole.returncode or resumed.returncode:
            return {"error": (whole.stderr + resumed.stderr)[-2000:]}
        a, b = torch.load(tmp / "whole.pt"), torch.load(tmp / "resumed.pt")
        diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())
        return {"killed_returncode": killed.returncode, "snapshot_MB": round((tmp / "snap.pt").stat().st_size / 2**20, 1),
                "largest_state_difference": diff, "bit_identical": diff == 0.0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--arch", default="resnet101")
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--width", type=float, default=1.0, help="Mg-MRN head width (1.0: the paper's 2048 channels)")
    ap.add_argument("--smoke", action="store_true", help="resnet10t, 64 px, head width 1/32, 1 step, TransZero batch 2, 32 images: checks the script")
    ap.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    ap.add_argument("--precision-ddp", default=None, help="precision of the data-parallel check (default: auto)")
    for flag in ("--ddp-worker", "--resume-child", "--kill"):
        ap.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    for opt in ("--snapshot", "--resume-from", "--out"):
        ap.add_argument(opt, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.smoke:
        args.arch, args.size, args.steps, args.width = "resnet10t", 64, 1, 1 / 32
    sys.path.insert(0, str(HERE))
    if args.ddp_worker:
        ddp_worker(args)
        return 0
    if args.resume_child:
        resume_child(args)
        return 0
    from zsl_bench.training import resolve_precision

    device = torch.device(args.device)
    args.precision_ddp = args.precision_ddp or resolve_precision("auto", str(device))
    result = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "torch": torch.__version__,
              "gpus": torch.cuda.device_count(),
              "mgmrn_image": {"arch": args.arch, "size": args.size, "batch": "8 ways x 2 shots, 3 updates"}}
    for precision in ("fp32", "bf16"):
        result["mgmrn_image"][precision] = mgmrn_steps(device, args.arch, args.size, args.steps, precision, args.width)
    result["transzero_B50_2048x14x14"] = transzero_steps(device, args.steps, 2 if args.smoke else 50)
    result["image_loader"] = image_throughput(448, 32 if args.smoke else 256, min(8, os.cpu_count() or 1))
    result["data_parallel"] = {"precision": args.precision_ddp, **data_parallel(args, device)}
    result["resume_after_kill"] = resume_after_kill(args, device)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
