#!/usr/bin/env python
"""The generative family (f-CLSWGAN, TF-VAEGAN) at CUB's sizes: time per generator epoch and per final-classifier
fit, and the wall time of one whole `val` run (validation folds, refit on trainval, test).

The data is CUB's real split (../shared/zsl-metadata/CUB) with random 2048-d features carrying the class
signal in place of res101.mat (`tests/real_layouts.cub_vector_fixture`): 7,057 trainval vectors, 312
attributes, 150 seen + 50 unseen classes; the times are the release's, the accuracies are not (printed only to
show the runs are real). Each method runs its official CUB profile unless `--set` overrides a key.

    python benchmarks/bench_generative.py steps [--methods fclswgan tfvaegan] [--steps N] [--device cpu]
    python benchmarks/bench_generative.py run --methods fclswgan [--epochs 2] [--search none] [--folds 1 2 3]

`steps`: one generator epoch (or its first N loop steps, extrapolated to the whole epoch and labelled so)
followed by one final-classifier fit (`classifier_epochs` epochs of both classifiers on `syn_num` features per
unseen class). `run`: the whole run; with fewer `--epochs` than the profile's, the time is also extrapolated
linearly in the generator epochs (the fixed part, feature loading and the seen-class pretraining, is small).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_set(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        out[key] = json.loads(value)
    return out


def time_steps(d, store, name: str, overrides: dict, steps: int | None, device: str) -> dict:
    """Seconds of the pretraining, one generator epoch (extrapolated from `steps` loop steps if given) and one
    final-classifier fit, for the test phase (trainval → 50 unseen classes)."""
    import numpy as np

    from zsl_bench import protocol
    from zsl_bench.evaluator import Evaluator
    from zsl_bench.method import FitContext, TrainData
    from zsl_bench.registry import get_method

    cls = get_method(name)
    ev = Evaluator(d, store, cls, seed=0, search=False, device=device, progress=False,
                   hparams={**overrides, "epochs": 1})
    hp = ev.configs[0]
    phase = protocol.test_phase(d)
    train = TrainData(x=ev.inputs(phase.train_rows), y=np.searchsorted(phase.train_classes, d.labels[phase.train_rows]),
                      semantics=ev.semantics(phase.train_classes))
    unseen = ev.semantics(phase.candidate_classes[~phase.is_seen_class])
    method = cls(hp, ev.task, device)
    full = method.steps_per_epoch(len(train.y))
    if steps:
        method.steps_per_epoch = lambda n: min(steps, full)
    spans = {}

    def timed(label, fn):
        def wrapper(*a, **k):
            start = time.perf_counter()
            out = fn(*a, **k)
            spans[label] = spans.get(label, 0.0) + time.perf_counter() - start
            return out
        return wrapper

    method.pretrain = timed("pretrain", method.pretrain)
    method.train_classifiers = timed("classifiers", method.train_classifiers)
    ctx = FitContext(seed=0, device=device, progress=False, _on_checkpoint=lambda label: None, _unseen=unseen,
                     _declared_unseen=True)
    start = time.perf_counter()
    method.fit(train, ctx)
    total = time.perf_counter() - start
    ran = min(steps, full) if steps else full
    generator = total - spans.get("pretrain", 0.0) - spans["classifiers"]
    return {"method": name, "pretrain_s": spans.get("pretrain", 0.0), "generator_steps": ran, "steps_per_epoch": full,
            "generator_epoch_s": generator * full / ran, "classifier_fit_s": spans["classifiers"],
            "syn_num": hp["syn_num"], "classifier_epochs": hp["classifier_epochs"], "hp_epochs": cls.profile("CUB")["epochs"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["steps", "run"])
    ap.add_argument("--methods", nargs="+", default=["fclswgan", "tfvaegan"])
    ap.add_argument("--steps", type=int, default=None, help="steps: time only the first N loop steps of the epoch")
    ap.add_argument("--epochs", type=int, default=None, help="run: generator epochs (default: the profile's)")
    ap.add_argument("--search", default="none", help="run: none | grid | random:N")
    ap.add_argument("--folds", type=int, nargs="+", default=[1, 2, 3], help="run: validation folds (GBU: 1 2 3)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON", help="override hyperparameters")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: every usable core)")
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--metadata", type=Path, default=REPO.parent / "shared" / "zsl-metadata" / "CUB")
    args = ap.parse_args(argv)
    if not args.metadata.is_dir():
        print(f"{args.metadata}: CUB's split files are needed (att_splits.mat, class lists, res101_index.csv)",
              file=sys.stderr)
        return 2
    if args.threads:
        os.environ["ZSL_BENCH_THREADS"] = str(args.threads)
    sys.path.insert(0, str(REPO))
    import torch

    from tests.real_layouts import cub_vector_fixture
    from zsl_bench.evaluator import Evaluator
    from zsl_bench.registry import get_method
    from zsl_bench.runtime import limit_threads

    limit_threads()
    overrides = parse_set(args.set)
    with tempfile.TemporaryDirectory() as tmp:
        d, store = cub_vector_fixture(args.metadata, Path(tmp), feature_dim=args.dim)
        where = f"{args.device}, {torch.get_num_threads()} torch thread(s), {os.cpu_count()} cores on this machine"
        if args.what == "steps":
            print("| method | generator epoch (s) | final-classifier fit (s) | pretraining (s) | measured |\n|---|---|---|---|---|")
            for name in args.methods:
                r = time_steps(d, store, name, overrides, args.steps, args.device)
                measured = (f"{r['generator_steps']} of {r['steps_per_epoch']} steps, extrapolated"
                            if r["generator_steps"] < r["steps_per_epoch"] else f"whole epoch ({r['steps_per_epoch']} steps)")
                print(f"| {name} | {r['generator_epoch_s']:.1f} | {r['classifier_fit_s']:.1f} "
                      f"({r['classifier_epochs']} epochs, {r['syn_num']}/class) | {r['pretrain_s']:.1f} | {measured} |",
                      flush=True)
        else:
            print("| method | generator epochs | configurations | folds | wall time (s) | per generator epoch (s) | "
                  "at the profile's epochs (s) | T1 | H |\n|---|---|---|---|---|---|---|---|---|")
            for name in args.methods:
                cls = get_method(name)
                epochs = args.epochs or cls.profile("CUB")["epochs"]
                ev = Evaluator(d, store, cls, seed=0, folds=tuple(args.folds), search=args.search, device=args.device,
                               progress=True, hparams={**overrides, "epochs": epochs})
                start = time.perf_counter()
                out = ev.run()
                wall = time.perf_counter() - start
                fits = len(out.configs) * (len(args.folds) + 1)
                per_epoch = wall / (epochs * fits)
                full = per_epoch * cls.profile("CUB")["epochs"] * fits
                m = out.selection["val"]["metrics"]
                print(f"| {name} | {epochs} | {len(out.configs)} | {', '.join(map(str, args.folds))} + refit | {wall:.0f} | {per_epoch:.1f} | "
                      f"{full:.0f}{'' if epochs == cls.profile('CUB')['epochs'] else ' (extrapolated)'} | "
                      f"{100 * m['T1']:.1f} | {100 * m['H']:.1f} |", flush=True)
        print(f"\n{len(d.labels)} vectors ({len(d.splits['trainval'])} trainval), {args.dim}-d, {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
