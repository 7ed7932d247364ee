#!/usr/bin/env python
"""The GPU check, as one prepared script (also runs, tiny, on a CPU: `--smoke`).

1. Every image-mode method (ResNet-101 or ViT-B/16 fine-tuned end to end, CUB's shapes, its official batch),
   through its own plugin code and the shared loop (bench_attention_family.method_step), in fp32 and bf16:
   - its training step, and in the same process on the same batch its backbone's own step: the timm model's
     forward, backward and an SGD step, as many times as the method's update runs the backbone (counted by
     a hook on the model's first layer); the ratio method / backbone is the figure of merit (goal ≤ 1.3);
   - the same two with the standard layout tuning: channels-last network and images, cuDNN autotuning;
   - peak GPU memory at the official batch and at half of it (what `zsl-bench plan`'s memory advice fits).
   Each (method, precision, tuning) runs in its own process.
2. Feature extraction: `zsl-bench extract`'s code (feature_extraction.extract on the GPU) against a plain
   timm inference loop (a DataLoader with worker processes, pinned memory) on the same images, decoding
   included: ResNet-101 at 448 px with layer4 maps, ViT-B/16 at 224 px; images/s and the ratio (goal ≥ 0.9).
   Images: the embedded default's generator at CUB's sizes (375–500 px PNGs).
3. Training-image throughput at 448 px (bench_image_loader.py): the DataLoader with 0 and N workers.

    python benchmarks/gpu_check.py              # on one GPU (under 8 minutes on an H100)
    python benchmarks/gpu_check.py --smoke      # tiny backbones and images, one step: checks the script here
    python benchmarks/gpu_check.py --ddp --resume   # also: torchrun data parallelism, resume after a kill

Writes benchmarks/results/gpu_check_<device kind>.json (the device named; `record_step_times.py` turns it
into the method folders' step_times.json) and prints a markdown table.
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
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_attention_family import IMAGE_METHODS, method_step   # noqa: E402  (benchmarks/ is the script's folder)
from bench_transzero_step import timed   # noqa: E402

SHAPES = "CUB: 312 attributes, 150 seen classes; images 448 px (APN, PSVMA 224 px); random init"


# --- 1. image-mode methods against their backbones ----------------------------------------------------------

def _autocast(device, precision: str):
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def backbone_of(m):
    """The timm model inside a method's network (ModuleDict or a module with a `backbone`)."""
    return m.net.backbone.net


def count_passes(m, step) -> int:
    """How many times one method step runs the backbone: calls of the timm model's first layer."""
    first = next(backbone_of(m).children())
    calls = []
    handle = first.register_forward_hook(lambda *_: calls.append(1))
    try:
        step()
    finally:
        handle.remove()
    return len(calls)


def backbone_step(model, x, precision: str, passes: int):
    """The backbone alone: forward, a loss of its features, backward, an SGD step with momentum, `passes` times;
    the layers the method freezes stay frozen (their requires_grad is kept)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)

    def step():
        for _ in range(passes):
            with _autocast(x.device, precision):
                out = model.forward_features(x)
            out.float().mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return step


def one_method(args) -> dict:
    """In this process, for each precision: the method's step, its backbone's, and peak memory (see the module
    docstring); → {precision: measurements}."""
    from zsl_bench.runtime import limit_threads

    limit_threads()
    device = torch.device(args.device)
    if args.tuned and device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return {precision: _measure(args, device, precision) for precision in ("fp32", "bf16")}


def _measure(args, device, precision: str) -> dict:
    import copy
    import gc

    cuda = device.type == "cuda"

    def release():
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    release()
    step, batch, m, x = method_step(args.one, device, precision, args.smoke, channels_last=args.tuned)
    passes = count_passes(m, step)   # also the warm-up step
    times = timed(step, args.steps, device)
    out = {"step_s_median": round(statistics.median(times), 4), "steps": len(times), "batch": batch,
           "precision": precision, "backbone_passes_per_step": passes}
    if cuda:
        out["peak_gpu_memory_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    model = copy.deepcopy(backbone_of(m))
    b_times = timed(backbone_step(model, x, precision, passes), args.steps, device)
    out["backbone_step_s_median"] = round(statistics.median(b_times), 4)
    out["ratio_method_over_backbone"] = round(out["step_s_median"] / out["backbone_step_s_median"], 3)
    del step, m, x, model
    if cuda and not args.tuned and batch >= 2:   # memory at half the batch: the memory model's second point
        release()
        half, *_ = method_step(args.one, device, precision, args.smoke, batch=batch // 2)
        half()
        torch.cuda.synchronize()
        out["peak_gpu_memory_half_batch_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        del half
    return out


def image_methods(args, device) -> tuple[dict, dict]:
    """({"<method> <precision>": plain}, {"<method> <precision>": tuned}), one process per method and tuning."""
    plain, tuned = {}, {}
    for name in IMAGE_METHODS:
        for is_tuned, into in ((False, plain), (True, tuned)):
            cmd = [sys.executable, __file__, "--one", name, "--device", str(device), "--steps", str(args.steps),
                   *(["--tuned"] if is_tuned else []), *(["--smoke"] if args.smoke else [])]
            run = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE, timeout=600)
            got = (json.loads(run.stdout.strip().splitlines()[-1]) if run.returncode == 0
                   else {p: {"error": run.stderr[-1500:]} for p in ("fp32", "bf16")})
            for precision, measured in got.items():
                into[f"{name} {precision}"] = measured
            print(f"{name}{' channels-last' if is_tuned else ''}: {got}", file=sys.stderr, flush=True)
    return plain, tuned


# --- 2. feature extraction against a plain timm loop -----------------------------------------------------------

class _Images(torch.utils.data.Dataset):
    def __init__(self, paths, size):
        self.paths, self.size = paths, size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            return torch.from_numpy(np.array(im.convert("RGB").resize((self.size, self.size),
                                                                       Image.Resampling.BILINEAR))).permute(2, 0, 1)


def plain_loop(model, paths, size: int, levels: list[int], device, batch_size: int, workers: int) -> None:
    """What a user writes: a DataLoader decoding in worker processes into pinned uint8 batches, the model in
    inference mode, the pooled vectors (and the maps) copied back to the host."""
    from zsl_bench.images import normalise

    loader = torch.utils.data.DataLoader(_Images(paths, size), batch_size=batch_size, num_workers=workers,
                                         pin_memory=device.type == "cuda", persistent_workers=False)
    with torch.inference_mode():
        for batch in loader:
            x = normalise(batch.to(device, non_blocking=True))
            if levels:
                final, maps = model.forward_intermediates(x, indices=levels)
                [m.cpu() for m in maps]
            else:
                final = model.forward_features(x)
            model.forward_head(final).cpu().numpy()


def extraction(args, device, workdir: Path) -> dict:
    """images/s of feature_extraction.extract and of the plain loop, on the same images and model."""
    import timm

    from zsl_bench.backbone import BackboneSpec, describe_untrained, load_backbone
    from zsl_bench.data import synthetic
    from zsl_bench.data.dataset import load_dataset
    from zsl_bench.feature_extraction import extract
    from zsl_bench.features import ExtractSpec

    per_class = 2 if args.smoke else 40   # 28 classes: about 1,000 images
    sizes = (48, 56) if args.smoke else (375, 500)
    started = time.time()
    synthetic.prepare_source(workdir / "raw", workdir / "prepared", {
        "seed": 3, "n_classes": 28, "n_unseen": 5, "images_per_class": per_class, "min_size": sizes[0],
        "max_size": sizes[1], "family_size": 4}, progress=False)
    dataset = load_dataset(workdir / "prepared")
    paths = [dataset.image_path(r) for r in range(len(dataset.labels))]
    out = {"images": len(paths), "image_sizes_px": list(sizes), "format": "PNG (the generator's)",
           "generation_s": round(time.time() - started, 1)}
    workers = min(16, os.cpu_count() or 1)
    cases = ((("resnet10t", 64, "layer4"), ("vit_tiny_patch16_224", 32, None)) if args.smoke else
             (("resnet101", 448, "layer4"), ("vit_base_patch16_224", 224, None)))
    for arch, size, level in cases:
        weights = workdir / f"{arch}.pth"
        torch.save(timm.create_model(arch, pretrained=False, num_classes=1000).state_dict(), weights)
        folder = describe_untrained(BackboneSpec(arch=arch, source="pretrained", weights_file=str(weights),
                                                 pretraining_data="imagenet-1k", input_size=size), workdir / arch)
        spec = ExtractSpec(levels=(level,) if level else (), batch_size=64)
        model = load_backbone(folder)[0].to(device)
        indices = [[f["module"] for f in model.feature_info].index(level)] if level else []
        rates = {"zsl-bench extract": [], "plain timm loop": []}
        for repeat in range(3):   # the first of each is a warm-up (page cache, cuDNN autotuning, workers)
            t = time.perf_counter()
            extract(dataset, folder, workdir / f"store-{arch}", spec, progress=False, device=str(device))
            rates["zsl-bench extract"].append(len(paths) / (time.perf_counter() - t))
            t = time.perf_counter()
            plain_loop(model, paths, size, indices, device, 64, workers)
            if device.type == "cuda":
                torch.cuda.synchronize()
            rates["plain timm loop"].append(len(paths) / (time.perf_counter() - t))
        best = {k: round(statistics.median(v[1:]), 1) for k, v in rates.items()}
        out[f"{arch} {size}px{' +' + level if level else ''}"] = {
            "images_per_s": best, "ratio_extract_over_plain": round(best["zsl-bench extract"] / best["plain timm loop"], 3),
            "plain_loop_workers": workers}
        print(f"extraction {arch}: {out[f'{arch} {size}px' + (' +' + level if level else '')]}", file=sys.stderr, flush=True)
    return out


def image_throughput(size: int, images: int, workers: int) -> dict:
    out = subprocess.run([sys.executable, str(HERE / "bench_image_loader.py"), "--images", str(images),
                          "--size", str(size), "--workers", str(workers), "--repeats", "2"],
                         capture_output=True, text=True, timeout=900)
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {"error": out.stderr[-2000:]}


# --- optional: data parallelism and resume (this script re-entered under torchrun / as a child) ---------------

def _mgmrn_loop(device, args):
    """(net, loop, ctx, update, stream) of Mg-MRN image mode through the shared loop, batch 16."""
    import torch.nn.functional as F

    from zsl_bench.method import FitContext, TrainSettings
    from zsl_bench.torch_methods import level_backbone
    from zsl_bench.training import BatchStream, TrainLoop
    from zsl_bench_methods.mgmrn.model import MgMRNHead

    arch, size, width = ("resnet10t", 64, 1 / 32) if args.smoke else ("resnet101", 448, 1.0)
    torch.manual_seed(0)
    backbone = level_backbone(arch, pretrained=False)
    head = MgMRNHead(backbone.channels, np.random.default_rng(0).normal(size=(312, 300)), width=width)
    net = torch.nn.ModuleDict({"backbone": backbone, "head": head}).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=5e-4, momentum=0.9, weight_decay=1e-5)
    ctx = FitContext(seed=0, device=str(device), progress=False, _on_checkpoint=lambda label: None, _unseen=None,
                     _declared_unseen=False, settings=TrainSettings(precision=args.precision))
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

    return net, loop, ctx, update, BatchStream(lambda rng: [rng.permutation(16)], np.random.default_rng(0))


def ddp_worker(args) -> None:
    from zsl_bench.runtime import init_distributed
    from zsl_bench.training import Distributed

    init_distributed()
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    _, loop, _, update, _ = _mgmrn_loop(device, args)
    times = timed(lambda: update(loop.shard(np.arange(16))[0]), args.steps, device)
    if Distributed.current().is_main:
        print(json.dumps({"processes": Distributed.current().world, "batch_s_median": round(statistics.median(times), 4),
                          "per_process_images": 16 // Distributed.current().world}))


def data_parallel(args, device) -> dict:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    counts = sorted({1, torch.cuda.device_count()} if device.type == "cuda" else {1, 2})
    out = {}
    for n in counts:
        cmd = [torchrun, "--standalone", "--nproc-per-node", str(n), __file__, "--ddp-worker", "--steps", str(args.steps),
               "--precision", args.precision, *(["--smoke"] if args.smoke else [])]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                             env={**os.environ, "ZSL_BENCH_THREADS": "1"} if device.type == "cpu" else None)
        out[f"{n}_processes"] = (json.loads(run.stdout.strip().splitlines()[-1]) if run.returncode == 0
                                 else {"error": run.stderr[-2000:]})
    return out


def resume_child(args) -> None:
    """Steps 1–4 with checkpoints after 2 and 4; at checkpoint 1 save the loop and, with --kill, SIGKILL this
    process; with --resume-from, start from that file. Writes the final state to --out."""
    net, loop, ctx, update, stream = _mgmrn_loop(torch.device(args.device), args)

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
        base = [sys.executable, __file__, "--resume-child", "--device", str(device), "--precision", "fp32",
                *(["--smoke"] if args.smoke else [])]
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


# --- the report -------------------------------------------------------------------------------------------------

def table(result: dict) -> str:
    """The markdown table the README shows."""
    rows = ["| method | precision | step (s) | backbone alone (s) | ratio | bf16 gain: method / backbone | "
            "channels-last: step / ratio | peak memory (GiB), batch and half |", "|---|---|---|---|---|---|---|---|"]
    for label, m in result["results"].items():
        name, precision = label.rsplit(" ", 1)
        if "error" in m:
            rows.append(f"| {name} | {precision} | failed: {m['error'].strip().splitlines()[-1][:80]} | | | | | |")
            continue
        fp32 = result["results"].get(f"{name} fp32", {})
        gain = (f"{fp32['step_s_median'] / m['step_s_median']:.2f}× / "
                f"{fp32['backbone_step_s_median'] / m['backbone_step_s_median']:.2f}×"
                if precision != "fp32" and "step_s_median" in fp32 else "")
        t = result["channels_last"].get(label, {})
        tuned = f"{t['step_s_median']} / {t['ratio_method_over_backbone']}" if "step_s_median" in t else "—"
        memory = (f"{m['peak_gpu_memory_GiB']} at {m['batch']}, {m.get('peak_gpu_memory_half_batch_GiB', '—')}"
                  if "peak_gpu_memory_GiB" in m else "— (CPU)")
        rows.append(f"| {name} | {precision} | {m['step_s_median']} | {m['backbone_step_s_median']} "
                    f"(× {m['backbone_passes_per_step']}) | {m['ratio_method_over_backbone']} | {gain} | {tuned} | {memory} |")
    loader = result.get("image_loader_448px") or {}
    consumed = [m["batch"] / m["step_s_median"] for m in result["results"].values() if "step_s_median" in m]
    rate = next((v for k, v in loader.items() if k.startswith("dataloader_") and k != "dataloader_0_workers_img_s"), None)
    if consumed and rate:   # the loader must keep up with the fastest step's appetite
        rows.append(f"\ntraining images at 448 px: the DataLoader gives {rate} images/s; the hungriest step above "
                    f"consumes {max(consumed):.0f} images/s")
    for case, e in result["extraction"].items():
        if isinstance(e, dict) and "images_per_s" in e:
            rows.append(f"\nextraction {case}: {e['images_per_s']} images/s, ratio {e['ratio_extract_over_plain']}")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per measurement, after one warm-up")
    ap.add_argument("--smoke", action="store_true", help="tiny backbones, 64 px, 12 attributes, one step, "
                    "~60 images to extract: checks the script on a CPU")
    ap.add_argument("--ddp", action="store_true", help="also: Mg-MRN's image step under torchrun on 1 and all GPUs")
    ap.add_argument("--resume", action="store_true", help="also: a run killed after a checkpoint resumes bit for bit")
    ap.add_argument("--out", type=Path, help="where the JSON goes (default: benchmarks/results/gpu_check_<kind>.json; "
                    "with --smoke: not written)")
    ap.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    for flag in ("--tuned", "--ddp-worker", "--resume-child", "--kill"):
        ap.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    for opt in ("--snapshot", "--resume-from"):
        ap.add_argument(opt, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.smoke:
        args.steps = 1
    if args.one:
        print(json.dumps(one_method(args)))
        return 0
    if args.ddp_worker:
        ddp_worker(args)
        return 0
    if args.resume_child:
        args.out = args.out and str(args.out)
        resume_child(args)
        return 0
    from zsl_bench.plan import device_kind

    device = torch.device(args.device)
    started = time.time()
    result = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
              "device_kind": device_kind(str(device)), "torch": torch.__version__, "smoke": args.smoke,
              "shapes": SHAPES if not args.smoke else "smoke: tiny backbones, 64 px, 12 attributes"}
    result["results"], result["channels_last"] = image_methods(args, device)
    with tempfile.TemporaryDirectory() as tmp:
        result["extraction"] = extraction(args, device, Path(tmp))
    result["image_loader_448px"] = image_throughput(448, 32 if args.smoke else 256, min(8, os.cpu_count() or 1))
    if args.ddp:
        result["data_parallel"] = data_parallel(args, device)
    if args.resume:
        result["resume_after_kill"] = resume_after_kill(args, device)
    result["wall_s"] = round(time.time() - started, 1)
    out = args.out or (None if args.smoke else HERE / "results" / f"gpu_check_{result['device_kind']}.json")
    if out:
        Path(out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {out}", file=sys.stderr)
    print(table(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
