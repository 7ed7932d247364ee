#!/usr/bin/env python
"""The shared training loop (zsl_bench/training.py) against the loops it replaced, and what a checkpoint costs.

For TransZero and Mg-MRN `maps` mode, on random inputs of the embedded default's shapes (layer4 512 × 3 × 3;
layer2/3/4 128 × 12 × 12, 256 × 6 × 6, 512 × 3 × 3) with the synthetic profiles:
- `shared`: `method.fit` as it runs now (TrainLoop: stream, shard, autocast context, micro-batch split);
- `plain`: the per-batch code of the loops before the shared one, written out (same draws, same updates);
both from the same seed, alternated `--repeats` times; the final states are checked to be bit-identical.
`checkpoint`: one journal snapshot of the loop's state (model, optimizer, scheduler, streams, RNGs) written
with torch.save and read back, as a resumable run does at every evaluation.

    python benchmarks/bench_training_loop.py [--images 600] [--epochs 3] [--repeats 5]
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
import warnings

import numpy as np
import torch


class Arrays:
    """The MapView interface over in-memory arrays."""

    def __init__(self, *arrays):
        self.arrays = arrays

    def __len__(self):
        return len(self.arrays[0])

    def read(self, idx):
        return [a[idx] for a in self.arrays]


def problem(name: str, n: int, epochs: int):
    from zsl_bench.method import ClassSemantics, Task, TrainData
    from zsl_bench.registry import get_method

    rng = np.random.default_rng(0)
    shapes = [(512, 3, 3)] if name == "transzero" else [(128, 12, 12), (256, 6, 6), (512, 3, 3)]
    n_att, seen, unseen = 64, 30, 10
    att = rng.uniform(0, 1, (seen + unseen, n_att))
    sem = lambda ids: ClassSemantics(class_ids=ids, att=att[ids] / np.linalg.norm(att[ids], axis=1, keepdims=True),
                                     original=att[ids] * 100)
    task = Task(dataset="synthetic", attribute_names=tuple(f"a{i}" for i in range(n_att)),
                input_kind="map" if name == "transzero" else "maps", input_shape=shapes[-1], input_shapes=tuple(shapes),
                attribute_embeddings={"minilm": rng.normal(size=(n_att, 32))})
    train = TrainData(x=Arrays(*[rng.normal(size=(n, *s)).astype(np.float32) for s in shapes]),
                      y=np.arange(n) % seen, semantics=sem(np.arange(seen)))
    cls = get_method(name)
    hp = {**cls.default_hparams("synthetic"), "epochs": epochs}
    return cls, hp, task, train, sem(np.arange(seen, seen + unseen))


def context(unseen, on_checkpoint=lambda e: None):
    from zsl_bench.method import FitContext

    return FitContext(seed=0, device="cpu", progress=False, _on_checkpoint=on_checkpoint, _unseen=unseen,
                      _declared_unseen=True)


def plain_transzero(method, train, ctx) -> None:
    """AllClassMapMethod.fit before the shared loop."""
    rng, targets, opt = method.start_fit(train, ctx)
    for epoch in range(1, method.hparams["epochs"] + 1):
        method.net.train()
        for idx in method.batches(train.y, rng):
            loss = method.loss(method.tensor(train.x.read(idx)[0]), torch.as_tensor(train.y[idx]), targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        ctx.evaluate(epoch)


def plain_mgmrn(method, train, ctx) -> None:
    """MgMRN.fit (maps mode, sequential update) before the shared loop."""
    from zsl_bench.torch_methods import class_balanced_batches, make_optimizer, torch_generator

    hp = method.hparams
    torch_generator(ctx.seed)
    rng = np.random.default_rng(ctx.seed)
    method.net = method.build_net()
    seen_att = method.tensor(method.class_matrix(train.semantics))
    opt = make_optimizer(hp["optimizer"], method.net.parameters(), hp["lr"], hp["weight_decay"], hp["momentum"])
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=hp["lr_step"], gamma=hp["lr_gamma"])
    per_epoch = hp["batches_per_epoch"] or int(np.ceil(len(train.y) / (hp["ways"] * hp["shots"])))
    for epoch in range(1, hp["epochs"] + 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            sched.step()
        method.net.train()
        for idx in class_balanced_batches(train.y, per_epoch, hp["ways"], hp["shots"], rng):
            y = torch.as_tensor(train.y[idx])
            batch = method.inputs(train.x, idx)
            for k in method.net["head"].branches:
                scores, _ = method.net["head"](method.features(batch), only=k)
                loss = method.losses(scores, y, seen_att)[k]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        ctx.evaluate(epoch)


PLAIN = {"transzero": plain_transzero, "mgmrn": plain_mgmrn}


def compare(name: str, n: int, epochs: int, repeats: int) -> dict:
    cls, hp, task, train, unseen = problem(name, n, epochs)
    times = {"shared": [], "plain": []}
    states = {}
    for _ in range(repeats):
        for kind in ("plain", "shared"):   # alternated: drifts of a busy machine hit both
            method = cls(dict(hp), task)
            fit = (lambda m, t, c: type(m).fit(m, t, c)) if kind == "shared" else PLAIN[name]
            start = time.perf_counter()
            fit(method, train, context(unseen))
            times[kind].append(time.perf_counter() - start)
            states[kind] = method.state_dict()
    identical = all(torch.equal(states["plain"][k], states["shared"][k]) for k in states["plain"])
    shared, plain = statistics.median(times["shared"]), statistics.median(times["plain"])
    return {"images": n, "epochs": epochs, "repeats": repeats, "plain_s": round(plain, 3), "shared_s": round(shared, 3),
            "overhead_pct": round(100 * (shared / plain - 1), 2), "states_bit_identical": identical,
            "checkpoint": checkpoint_cost(cls, hp, task, train, unseen)}


def checkpoint_cost(cls, hp, task, train, unseen) -> dict:
    """Save and load one snapshot of the loop after its first epoch."""
    snapshot = {}
    method = cls({**hp, "epochs": 1}, task)
    ctx = context(unseen, lambda e: snapshot.update(state=ctx.snapshot()))
    start = time.perf_counter()
    method.fit(train, ctx)
    epoch_s = time.perf_counter() - start
    buffer = io.BytesIO()
    t = time.perf_counter()
    torch.save(snapshot["state"], buffer)
    save_s = time.perf_counter() - t
    buffer.seek(0)
    t = time.perf_counter()
    torch.load(buffer, weights_only=False)
    load_s = time.perf_counter() - t
    return {"bytes": buffer.getbuffer().nbytes, "save_s": round(save_s, 4), "load_s": round(load_s, 4),
            "epoch_s": round(epoch_s, 3), "save_pct_of_epoch": round(100 * save_s / epoch_s, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    from zsl_bench.runtime import limit_threads

    result = {"threads": limit_threads()}
    for name in ("transzero", "mgmrn"):
        result[name] = compare(name, args.images, args.epochs, args.repeats)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
