#!/usr/bin/env python
"""Training-step time and peak memory of the attention family at the official CUB shapes, each method
through its own plugin code (`fit`'s loss, the shared `TrainLoop`): 312 attributes (300-d word vectors),
150 seen + 50 unseen classes, random init, random inputs; each method's official batch.

- `maps` (frozen maps, CPU or GPU): rezsl, gemzsl, apn, msdn beside transzero, dazle and mgmrn.
  layer4 maps 2048 × 14 × 14 (448 px; Mg-MRN also reads layer2 512 × 56 × 56 and layer3 1024 × 28 × 28).
- `image` (the GPU check): rezsl, gemzsl (448 px), apn (224 px, conv1/layer1 frozen) and mgmrn (448 px)
  with ResNet-101 fine-tuned end to end, fp32 and bf16 autocast.

Each method runs in its own process (peak memory = that process's max RSS on CPU, torch's peak allocation
on a GPU). Prints one JSON object; medians of `--steps` steps after one warm-up step.

    python benchmarks/bench_attention_family.py                          # maps mode, this CPU (~10 min on 2 cores)
    python benchmarks/bench_attention_family.py --mode image --device cuda   # the GPU check
    python benchmarks/bench_attention_family.py --smoke                  # tiny shapes: checks the script
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MAPS_METHODS = ("rezsl", "gemzsl", "apn", "msdn", "transzero", "dazle", "mgmrn")
IMAGE_METHODS = ("rezsl.image", "gemzsl.image", "apn.image", "mgmrn.image", "psvma.image")
BATCH = {"rezsl": 32, "gemzsl": 32, "apn": 64, "msdn": 50, "transzero": 50, "dazle": 50, "mgmrn": 16,
         "psvma": 32}   # official batches (PSVMA: 16 ways × 2 shots)


def load_method(name: str):
    """The plugin class; from pyproject.toml's entry points when the package is not installed (a bare
    checkout on a GPU machine, run with PYTHONPATH at the repository root)."""
    import importlib
    import tomllib

    from zsl_bench.io import ConfigError
    from zsl_bench.registry import get_method, register_method

    try:
        return get_method(name)
    except ConfigError:
        points = tomllib.loads((HERE.parent / "pyproject.toml").read_text())["project"]["entry-points"]
        module, attr = points["zsl_bench.methods"][name.split(".")[0]].split(":")
        register_method(name.split(".")[0])(getattr(importlib.import_module(module), attr))
        return get_method(name)


def method_step(name: str, device, precision: str, smoke: bool, batch: int | None = None, channels_last: bool = False):
    """(one training step as a function of nothing, its batch size, the method object, its input batch) for
    the method `name`, at its official batch or `batch`; `channels_last`: the network and the images in
    that memory format (image mode)."""
    import torch

    from zsl_bench.map_families import AllClassMapMethod, AllClassTargets, OneMapMethod
    from zsl_bench.method import ClassSemantics, FitContext, Task, TrainSettings
    from zsl_bench.training import TrainLoop

    cls = load_method(name)
    n_attr, seen, unseen = (312, 150, 50) if not smoke else (12, 6, 3)
    side, c4 = (14, 2048) if not smoke else (3, 64)
    shapes = ((c4 // 4, side * 4, side * 4), (c4 // 2, side * 2, side * 2), (c4, side, side))
    rng = np.random.default_rng(0)
    task = Task(dataset="CUB" if not smoke else "smoke", attribute_names=tuple(f"type{i % 28}::v{i}" for i in range(n_attr)),
                input_kind=cls.input_kind, input_shape=shapes[-1] if cls.input_kind != "image" else (3,),
                input_shapes=shapes, attribute_embeddings={"w2v": rng.normal(size=(n_attr, 300))})
    hp = cls.default_hparams("CUB")
    if cls.input_kind == "image":
        hp.update(pretrained=False)
        if smoke:   # the embedded default's small backbone of the same family (resnet10t, a tiny ViT)
            hp.update(backbone=cls.default_hparams("synthetic")["backbone"], image_size=64)
    if smoke and name.startswith("mgmrn"):
        hp.update(width=1 / 32)
    if smoke and "groups" in hp:   # PSVMA's attribute groups: at most one per attribute
        hp.update(groups=4)
    m = cls(hp, task, device=str(device))
    torch.manual_seed(0)
    m.net = m.build_net().to(device)
    batch = batch or (BATCH[name.split(".")[0]] if not smoke else 6)
    original = rng.uniform(0, 1, (seen + unseen, n_attr))
    semantics = ClassSemantics(np.arange(seen + unseen), original / np.linalg.norm(original, axis=1, keepdims=True),
                               original * 100)
    y = torch.as_tensor(rng.integers(0, seen, batch), device=device)
    ctx = FitContext(seed=0, device=str(device), progress=False, _on_checkpoint=lambda _: None,
                     _unseen=None, _declared_unseen=False, settings=TrainSettings(precision=precision))
    if cls.input_kind == "image":
        x = torch.randn(batch, 3, hp["image_size"], hp["image_size"], device=device)
        if channels_last:
            m.net.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
    elif cls.input_kind == "maps":
        x = {k + 1: torch.rand(batch, *s, device=device) for k, s in enumerate(shapes)}
    else:
        x = torch.rand(batch, *shapes[-1], device=device)

    if isinstance(m, OneMapMethod):
        opt = m.optimizer()
        m.epoch_start(1, opt)
        m.batch_total = batch
        seen_att = m.tensor(m.class_matrix(semantics)[:seen])
        if cls.uses_unseen_semantics:   # PSVMA's bias loss reads the unseen classes' vectors (its fit sets them)
            m.unseen_att = m.tensor(m.class_matrix(semantics)[seen:])
        loop = TrainLoop(ctx, m.net, opt, device=device)
        return (lambda: loop.step(opt, lambda part: m.loss(m.forward(x[part]), y[part], seen_att), batch)), batch, m, x
    if isinstance(m, AllClassMapMethod):
        sem = lambda rows: ClassSemantics(semantics.class_ids[rows], semantics.att[rows], semantics.original[rows])  # noqa: E731
        targets = AllClassTargets.build(m, sem(slice(0, seen)), sem(slice(seen, None)), hp["logit_offset"])
        from zsl_bench.torch_methods import make_optimizer

        opt = make_optimizer(hp["optimizer"], [p for p in m.net.parameters() if p.requires_grad], hp["lr"],
                             hp["weight_decay"], hp["momentum"])
        loop = TrainLoop(ctx, m.net, opt, device=device)
        return (lambda: loop.step(opt, lambda part: m.loss(x[part], y[part], targets), batch)), batch, m, x
    # Mg-MRN: its official update, one step per branch on a fresh forward
    from zsl_bench.torch_methods import make_optimizer

    opt = make_optimizer(hp["optimizer"], m.net.parameters(), hp["lr"], hp["weight_decay"], hp["momentum"])
    loop = TrainLoop(ctx, m.net, opt, device=device)
    seen_att = m.tensor(m.class_matrix(semantics)[:seen])

    def step():
        for k in m.net["head"].branches:
            loop.step(opt, lambda part, k=k: m.losses(m.net["head"](m.features(m.part(x, part)), only=k)[0],
                                                      y[part], seen_att)[k], batch)
    return step, batch, m, x


def one(args) -> dict:
    import torch

    from bench_transzero_step import timed
    from zsl_bench.runtime import limit_threads

    limit_threads()
    device = torch.device(args.device)
    step, batch, _, _ = method_step(args.one, device, args.precision, args.smoke)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = timed(step, args.steps, device)
    out = {"step_s_median": round(statistics.median(times), 4), "steps": len(times), "batch": batch,
           "precision": args.precision}
    if device.type == "cuda":
        out["peak_gpu_memory_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    else:
        out["peak_rss_MiB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("maps", "image"), default="maps")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--precision", nargs="+", default=None, help="fp32 bf16 (default: fp32; image mode on cuda: both)")
    ap.add_argument("--methods", nargs="+", default=None)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, one step: checks the script")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        args.precision = args.precision[0]
        print(json.dumps(one(args)))
        return
    methods = args.methods or (IMAGE_METHODS if args.mode == "image" else MAPS_METHODS)
    precisions = args.precision or (["fp32", "bf16"] if args.mode == "image" and args.device == "cuda" else ["fp32"])
    results = {}
    for name in methods:
        for precision in precisions:
            cmd = [sys.executable, __file__, "--one", name, "--device", args.device, "--steps",
                   str(1 if args.smoke else args.steps), "--precision", precision, *(["--smoke"] if args.smoke else [])]
            run = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE)
            results[f"{name} {precision}"] = (json.loads(run.stdout.strip().splitlines()[-1]) if run.returncode == 0
                                              else {"error": run.stderr[-1500:]})
            print(f"{name} {precision}: {results[f'{name} {precision}']}", file=sys.stderr, flush=True)
    print(json.dumps({"mode": args.mode, "device": args.device, "results": results}, indent=1))


if __name__ == "__main__":
    main()
