#!/usr/bin/env python
"""Recompute every metric of run folders from predictions.npz alone and compare with record.json.

Independent of zsl_bench on purpose (numpy only, brute force): it checks the evaluator rather than
reusing it. Usage:

    python scripts/recompute_metrics.py runs/            # every run folder below runs/
    python scripts/recompute_metrics.py RUN_FOLDER [...] --tolerance 1e-6

Exit status 1 if any metric differs by more than the tolerance. AUSUC by brute force evaluates GZSL at one
γ per distinct switch point, about one per test image, four times per run: quadratic in the test set, so
minutes per run on AWA2's 12,000 test images. Progress and an estimate of the time left go to stderr.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def per_class_mean(labels, predictions, classes):
    accs = [np.mean(predictions[labels == c] == c) for c in classes if np.any(labels == c)]
    return float(np.mean(accs)) if accs else float("nan")


def zsl_t1(scores, labels, seen_mask):
    unseen_cols = np.flatnonzero(~seen_mask)
    rows = ~seen_mask[labels]
    pred = unseen_cols[np.argmax(scores[rows][:, unseen_cols], axis=1)]
    return per_class_mean(labels[rows], pred, unseen_cols)


def gzsl(scores, labels, seen_mask, gamma):
    pred = np.argmax(scores - gamma * seen_mask, axis=1)
    seen_rows = seen_mask[labels]
    u = per_class_mean(labels[~seen_rows], pred[~seen_rows], np.flatnonzero(~seen_mask))
    s = per_class_mean(labels[seen_rows], pred[seen_rows], np.flatnonzero(seen_mask))
    return u, s, (0.0 if u + s == 0 else 2 * u * s / (u + s))


class Progress:
    """One stderr line per `every` seconds: how far the brute-force AUSUCs are, and the time left."""

    def __init__(self, total: int, every: float):
        self.total, self.every, self.done = total, every, 0
        self.start = self.last = time.time()

    def step(self, what: str) -> None:
        self.done += 1
        now = time.time()
        if now - self.last >= self.every or self.done == self.total:
            self.last = now
            left = (now - self.start) / self.done * (self.total - self.done)
            print(f"{what}: {self.done:,} of {self.total:,} γ evaluations, {now - self.start:.0f} s, "
                  f"about {left:.0f} s left", file=sys.stderr, flush=True)


def ausuc_brute_force(scores, labels, seen_mask, progress: Progress | None = None, what: str = ""):
    """Evaluate U and S at a γ inside every interval between switch points, then integrate S dU."""
    best_seen = scores[:, seen_mask].max(axis=1)
    best_unseen = scores[:, ~seen_mask].max(axis=1)
    switches = np.unique(best_seen - best_unseen)
    spread = max(1.0, switches[-1] - switches[0])
    gammas = np.concatenate([[switches[0] - spread], (switches[1:] + switches[:-1]) / 2, [switches[-1] + spread]])
    points = []
    for g in gammas:
        points.append(gzsl(scores, labels, seen_mask, g)[:2])
        if progress:
            progress.step(what)
    points = np.array(points)
    points = points[np.lexsort((-points[:, 1], points[:, 0]))]
    u, s = points[:, 0], points[:, 1]
    return float(np.sum((u[1:] - u[:-1]) * (s[1:] + s[:-1]) / 2))


def policies_of(p: dict) -> list[str]:
    return [k[len("gamma_"):] for k in p if k.startswith("gamma_")]


def evaluations(folder: Path) -> int:
    """How many γ evaluations the brute-force AUSUCs of a run take (an upper bound: one per image + 1)."""
    with np.load(folder / "predictions.npz") as z:
        return len(policies_of(z.files)) * (len(z["labels"]) + 1)


def spread_standardise(scores):
    """Each image's scores minus their mean, over their std (1 where all are equal): the space of the `val`
    policy's γ (README, "Selection policies")."""
    centred = scores - scores.mean(axis=1, keepdims=True)
    spread = centred.std(axis=1, keepdims=True)
    return centred / np.where(spread > 0, spread, 1.0)


def recompute(folder: Path, progress: Progress | None = None) -> dict[str, float]:
    with np.load(folder / "predictions.npz") as z:
        p = {k: z[k] for k in z.files}
    labels, seen = p["labels"], p["seen_class_mask"].astype(bool)
    out = {}
    for policy in policies_of(p):
        def scores(metric=None):   # a metric's own checkpoint where it came from another one (README)
            key = f"scores_{policy}_{metric}"
            return p[key if key in p else f"scores_{policy}"].astype(np.float64)

        t1 = p[f"scores_zsl_{policy}"].astype(np.float64) if f"scores_zsl_{policy}" in p else scores("T1")
        gzsl_scores = scores()
        if str(p.get(f"calibration_{policy}", "")) == "spread":
            gzsl_scores = spread_standardise(gzsl_scores)
        u, sa, h = gzsl(gzsl_scores, labels, seen, float(p[f"gamma_{policy}"]))
        u0, s0, h0 = gzsl(scores(), labels, seen, 0.0)
        out.update({f"{policy}.T1": zsl_t1(t1, labels, seen), f"{policy}.U": u, f"{policy}.S": sa,
                    f"{policy}.H": h, f"{policy}.U_gamma0": u0, f"{policy}.S_gamma0": s0, f"{policy}.H_gamma0": h0,
                    f"{policy}.AUSUC": ausuc_brute_force(scores("AUSUC"), labels, seen, progress,
                                                         f"{folder.name} {policy}")})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", type=Path, help="run folders, or folders to search for them")
    ap.add_argument("--tolerance", type=float, default=1e-6)
    ap.add_argument("--progress-every", type=float, default=10.0, metavar="S",
                    help="seconds between progress lines on stderr (default 10)")
    args = ap.parse_args(argv)
    folders = sorted({d.parent for path in args.paths for d in ([path / "done"] if (path / "done").exists()
                                                                  else path.rglob("done"))})
    if not folders:
        print("no run folders (with a 'done' marker) found", file=sys.stderr)
        return 1
    total = sum(map(evaluations, folders))
    print(f"{len(folders)} run folders: up to {total:,} GZSL evaluations for the brute-force AUSUCs (quadratic in "
          "the test set; progress below)", file=sys.stderr)
    progress = Progress(total, args.progress_every)
    worst = 0.0
    for folder in folders:
        record = json.loads((folder / "record.json").read_text())
        for name, value in recompute(folder, progress).items():
            policy, metric = name.split(".")
            recorded = record["selection"][policy]["metrics"][metric]
            diff = abs(value - recorded)
            worst = max(worst, diff)
            if diff > args.tolerance:
                print(f"MISMATCH {folder}: {name} recorded {recorded!r}, recomputed {value!r}")
        print(f"checked {folder}")
    print(f"{len(folders)} run folders, largest difference {worst:.2e} (tolerance {args.tolerance:g})")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
