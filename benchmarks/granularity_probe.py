#!/usr/bin/env python
"""Which backbone map level carries which attribute scale? Linear probes on the synthetic dataset.

The synthetic birds (zsl_bench/data/synthetic_render.py) draw their attributes at three spatial scales:
"whole" (body colour, pattern, silhouette), "mid" (wing, head, tail) and "small" (eye, bill, legs: one or
two layer2 cells at 96 px). Every image shows exactly one value per attribute group, so each group is a multi-class label
with a known ground truth. For each stored map level (layer2 12×12, layer3 6×6, layer4 3×3 at 96 px) and
each group, a linear softmax probe predicts the group's value from the level's map pooled to one vector
(global average ‖ global max over space, standardised with training statistics).

The numbers are held-out probe accuracies: how much of a group's value can be *linearly read* from that
level without any spatial selection. A row that rises from layer2 to layer4 is information the deeper
stages build up; a "small" row that stays near chance at layer4 but not at layer2 is detail lost to the
coarse grid, which is what part-attention methods on layer4 alone cannot recover. `chance` is 1/number of
values; `majority` is the accuracy of always answering the training set's most frequent value (the test
classes' value frequencies are not uniform, so this is the fairer floor). With ~1300 test images one group's
accuracy has a binomial standard error of about 0.013: level differences under ~0.03 are noise.

Split (default `classes`): the probe trains on all images of the dataset's fold-1 train classes (the classes
the synthetic backbone itself was trained on) and is tested on every image of the other classes (fold-1
validation classes and unseen classes). Class-disjoint testing matters: a class shows its dominant value
in ~75 % of its images, so on a random split a probe could score well by recognising the class alone.
`--split random` (70/30 of all images, seeded) is there to compare.

    python benchmarks/granularity_probe.py [--root .] [--split classes|random] [--l2 1e-2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zsl_bench.data.dataset import load_dataset  # noqa: E402
from zsl_bench.features import FeatureStore  # noqa: E402
from zsl_bench.paths import ProjectPaths  # noqa: E402

DATASET = "synthetic"
SCALES = ("whole", "mid", "small")


def image_values(raw: Path, dataset, groups: list[dict], attribute_names: list[str]) -> np.ndarray:
    """N × G value index per (image, group), rows in the dataset's (= the feature store's) order.

    image_attribute_labels.txt is keyed by images.txt ids (generation order); the prepared rows follow the
    directory listing. Rows are matched through the image file name, and every image must show exactly one
    value per group."""
    cub = raw / "CUB_200_2011"
    ids = {rel: int(i) for i, rel in (line.split(maxsplit=1) for line in (cub / "images.txt").read_text().splitlines())}
    missing = [f for f in dataset.image_files if f not in ids]
    if missing or len(ids) != len(dataset.image_files):
        sys.exit(f"{cub / 'images.txt'} lists {len(ids)} images, the prepared dataset {len(dataset.image_files)} "
                 f"({len(missing)} prepared images not in images.txt, first: {missing[:1]}); "
                 "raw and prepared folders are out of step: re-run the prepare stage")
    if attribute_names != dataset.attribute_names:
        sys.exit(f"{raw / 'synthetic.json'}: attribute list differs from the prepared dataset's")
    labels = np.loadtxt(cub / "attributes" / "image_attribute_labels.txt", usecols=(0, 1, 2), dtype=np.int64)
    present = np.zeros((len(ids) + 1, len(attribute_names)), dtype=bool)   # row = images.txt id
    present[labels[:, 0], labels[:, 1] - 1] = labels[:, 2] == 1
    present = present[[ids[f] for f in dataset.image_files]]
    values = np.empty((len(present), len(groups)), dtype=np.int64)
    for g, group in enumerate(groups):
        cols = [attribute_names.index(f"{group['name']}::{v}") for v in group["values"]]
        block = present[:, cols]
        if not (block.sum(axis=1) == 1).all():
            counts = sorted(set(block.sum(axis=1)) - {1})
            sys.exit(f"{group['name']}: some images show {counts} values, not exactly one")
        values[:, g] = block.argmax(axis=1)
    return values


def pooled(store: FeatureStore, level: str) -> np.ndarray:
    """N × 2C: global average pool ‖ global max pool of the level's maps."""
    maps = store.read(np.arange(store.shape(level)[0]), level)
    flat = maps.reshape(len(maps), maps.shape[1], -1)
    return np.concatenate([flat.mean(axis=2), flat.max(axis=2)], axis=1)


def fit_probes(x_train, y_train, sizes, l2: float, max_iter: int) -> tuple[torch.nn.Linear, dict]:
    """All groups' softmax probes as one linear layer with a block of logits per group. The loss is the sum of
    the groups' cross-entropies + l2/2·‖W‖² and no parameter is shared between blocks, so this is exactly one
    independent probe per group. The objective is convex (strictly so in W), so full-batch L-BFGS reaches the
    minimum whatever the path: the result depends on neither a learning rate nor a step count."""
    head = torch.nn.Linear(x_train.shape[1], sum(sizes))
    torch.nn.init.zeros_(head.weight), torch.nn.init.zeros_(head.bias)
    # One cross-entropy call for all groups (per-group calls cost more Python than arithmetic): logits gathered
    # into N × G × max(k), groups with fewer values padded with a -inf logit that takes no probability.
    starts, k_max = np.cumsum([0, *sizes]), max(sizes)
    index = torch.tensor([[a + j if j < k else sum(sizes) for j in range(k_max)] for a, k in zip(starts, sizes)])
    opt = torch.optim.LBFGS(head.parameters(), max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure():
        opt.zero_grad()
        logits = head(x_train)
        padded = torch.cat([logits, logits.new_full((len(logits), 1), -torch.inf)], dim=1)[:, index]
        loss = torch.nn.functional.cross_entropy(padded.reshape(-1, k_max), y_train.reshape(-1),
                                                 reduction="sum") / len(logits)
        loss = loss + 0.5 * l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    loss = closure().item()   # also leaves the final gradient in .grad, to show the fit converged
    grad = max(p.grad.abs().max().item() for p in head.parameters())
    return head, {"iterations": opt.state[opt._params[0]]["n_iter"], "final_loss": round(loss, 5),
                  "max_abs_grad": grad}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=None, help="project root (default: the one holding this script)")
    ap.add_argument("--levels", nargs="+", default=["layer2", "layer3", "layer4"])
    ap.add_argument("--split", choices=("classes", "random"), default="classes",
                    help="classes: train on fold-1 train classes, test on the others; random: 70/30 of all images")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random split")
    ap.add_argument("--l2", type=float, default=1e-2, help="L2 penalty on the probe weights (features standardised)")
    ap.add_argument("--max-iter", type=int, default=500, help="L-BFGS iterations per level")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None,
                    help="default: benchmarks/results/granularity_probe_synthetic.json (random split: _random)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    paths = ProjectPaths.here(args.root or Path(__file__).resolve().parent)
    raw, dataset = paths.raw(DATASET), load_dataset(paths.prepared(DATASET))
    store = FeatureStore(paths.features(DATASET, "resnet10t"))
    # The store's rows are the dataset's rows only if it was extracted from this very prepared folder.
    if store.index.get("dataset_fingerprint") != dataset.fingerprint():
        sys.exit(f"{store.root}: extracted from dataset {store.index.get('dataset_fingerprint')}, the prepared "
                 f"folder is {dataset.fingerprint()}; re-run the extract stage")
    for level in args.levels:
        if store.shape(level)[0] != len(dataset.labels):
            sys.exit(f"{store.root}: {level} has {store.shape(level)[0]} rows, "
                     f"the dataset {len(dataset.labels)} images")
    synth = json.loads((raw / "synthetic.json").read_text())
    if synth["config"] != dataset.meta.get("generator"):
        sys.exit(f"{raw / 'synthetic.json'}: generator config differs from the prepared dataset's; re-run prepare")
    groups = sorted(synth["groups"], key=lambda g: SCALES.index(g["scale"]))   # stable: generator order within a scale
    sizes = [len(g["values"]) for g in groups]
    y = image_values(raw, dataset, groups, [a["name"] for a in synth["attributes"]])

    if args.split == "classes":
        train_classes, _ = dataset.fold_classes(1)
        train = np.isin(dataset.labels, train_classes)
        split = {"kind": "classes", "train": "all images of the fold-1 train classes",
                 "test": "all images of the other classes (fold-1 val classes + unseen classes)",
                 "train_classes": [int(c) for c in train_classes]}
    else:
        train = np.zeros(len(y), dtype=bool)
        train[np.random.default_rng(args.seed).permutation(len(y))[: round(0.7 * len(y))]] = True
        split = {"kind": "random", "train": f"70 % of all images (seed {args.seed})", "test": "the other 30 %"}
    split.update(n_train=int(train.sum()), n_test=int((~train).sum()))
    y_train, y_test = torch.from_numpy(y[train]), y[~train]

    # Floors: 1/k, and always answering the training set's most frequent value.
    chance = {g["name"]: 1 / k for g, k in zip(groups, sizes)}
    majority = {g["name"]: float((y_test[:, i] == np.bincount(y[train, i], minlength=k).argmax()).mean())
                for i, (g, k) in enumerate(zip(groups, sizes))}

    acc: dict[str, dict[str, float]] = {}
    fits: dict[str, dict] = {}
    for level in args.levels:
        x = pooled(store, level)
        mean, std = x[train].mean(axis=0), x[train].std(axis=0) + 1e-6
        x = torch.from_numpy((x - mean) / std).float()
        head, fits[level] = fit_probes(x[torch.from_numpy(train)], y_train, sizes, args.l2, args.max_iter)
        with torch.no_grad():
            logits = head(x[torch.from_numpy(~train)]).numpy()
        starts = np.cumsum([0, *sizes])
        acc[level] = {g["name"]: float((logits[:, starts[i]:starts[i + 1]].argmax(axis=1) == y_test[:, i]).mean())
                      for i, g in enumerate(groups)}
    by_scale = {s: [g["name"] for g in groups if g["scale"] == s] for s in SCALES}
    scale_mean = {level: {s: float(np.mean([acc[level][n] for n in names])) for s, names in by_scale.items()}
                  for level in args.levels}
    wall = time.perf_counter() - t0

    # Table: a scale's mean row, then its groups.
    cols = [*args.levels, "chance", "majority"]
    print(f"held-out probe accuracy, split={args.split} (train {split['n_train']} / test {split['n_test']} images)")
    print(f"{'':24s}" + "".join(f"{c:>9s}" for c in cols))
    for s, names in by_scale.items():
        print(f"{s + ' (mean)':24s}" + "".join(f"{scale_mean[lv][s]:9.3f}" for lv in args.levels)
              + f"{np.mean([chance[n] for n in names]):9.3f}{np.mean([majority[n] for n in names]):9.3f}")
        for n in names:
            print(f"  {n:22s}" + "".join(f"{acc[lv][n]:9.3f}" for lv in args.levels)
                  + f"{chance[n]:9.3f}{majority[n]:9.3f}")
    print(f"wall {wall:.1f} s")

    out = args.json or (Path(__file__).resolve().parent / "results" /
                        f"granularity_probe_synthetic{'' if args.split == 'classes' else '_random'}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "dataset": DATASET, "dataset_fingerprint": dataset.fingerprint(), "generator_config": synth["config"],
        "generator_seed": synth["config"]["seed"], "n_images": len(y),
        "backbone": store.index.get("backbone_spec"), "input_size": store.index.get("input_size"),
        "levels": {lv: store.shape(lv)[1:] for lv in args.levels},
        "row_alignment": "feature store dataset_fingerprint == prepared dataset fingerprint; image labels matched "
                         "to prepared rows by image file name through images.txt ids",
        "split": split,
        "probe": {"features": "standardised (train statistics) global average pool ‖ global max pool",
                  "model": "linear softmax per group, full-batch L-BFGS (strong Wolfe)", "l2": args.l2,
                  "loss": "mean cross-entropy + l2/2·‖W‖² (bias not penalised)", "max_iter": args.max_iter,
                  "threads": args.threads, "fits": fits},
        "groups": {g["name"]: {"scale": g["scale"], "part": g["part"], "kind": g["kind"], "n_values": k}
                   for g, k in zip(groups, sizes)},
        "accuracy": acc, "scale_mean": scale_mean, "chance": chance, "majority": majority,
        "torch": torch.__version__, "python": platform.python_version(), "wall_s": round(wall, 2),
    }, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
