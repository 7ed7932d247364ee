#!/usr/bin/env python
"""Where does a method's seed-to-seed spread come from? A first split read off existing runs (no training),
groundwork for issue 29. Per method of the train stage, over its seeds (sample std, ddof = 1, in points):

    val            the headline: configuration, checkpoint and γ chosen on validation
    val @ γ = 0    the same checkpoints without calibration: what the calibration adds to the spread
    last           defaults, final checkpoint, fixed γ: no selection at all, so training noise alone
    oracle         each seed's best test H / T1 over every checkpoint: the spread of what training can reach
    test draw      the stratified bootstrap std of one run's val number (mean over seeds): how precisely a
                   fixed test set measures one model (the test set is the same for every seed, so this is not
                   a part of the seed spread: it is the resolution of each number in it)
    regret         mean over seeds of (oracle − val): what validation selection leaves on the table

Reading it: `last` ≪ `val` means selection (epoch, configuration) makes the spread; `val @ γ = 0` ≪ `val`
means the calibration does; `last` ≈ `val` means training itself does. Plus the epochs and configurations
validation picked per seed.

    python benchmarks/variance_parts.py [--root .] [--resamples 300] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zsl_bench import bootstrap  # noqa: E402
from zsl_bench.metrics import mean_std  # noqa: E402
from zsl_bench.policies import HEADLINE_POLICY  # noqa: E402
from zsl_bench.records import find_records, newest_per_seed  # noqa: E402


def test_draw_std(record, resamples: int) -> dict[str, float]:
    """Bootstrap std (points) of one run's headline T1 and H over stratified resamples of its test images."""
    scores = bootstrap.TestScores.load(record.folder / "predictions.npz", HEADLINE_POLICY)
    rng = np.random.default_rng([bootstrap.BOOTSTRAP_SEED, record.seed])
    m = bootstrap.stratified_multiplicities(scores.labels, resamples, rng)
    values = bootstrap.resampled_metrics(scores, m)
    return {k: float(100.0 * np.std(values[k], ddof=1)) for k in ("T1", "H")}


def parts(records: list, resamples: int) -> dict:
    by_method: dict[tuple, list] = {}
    for r in records:
        by_method.setdefault((r.dataset, r.method), []).append(r)
    out = {}
    for (dataset, method), runs in sorted(by_method.items()):
        runs = sorted(runs, key=lambda r: r.seed)

        def spread(policy: str, metric: str) -> float:
            return mean_std([r.metrics(policy)[metric] for r in runs])[1]

        head = [r.policy(HEADLINE_POLICY) for r in runs]
        row = {"n": len(runs), "seeds": [r.seed for r in runs],
               "picked": [(h["config_id"], h["epoch"]) for h in head]}
        for metric in ("T1", "H"):
            row[f"val_{metric}"] = mean_std([r.metrics(HEADLINE_POLICY)[metric] for r in runs])
            row[f"std_last_{metric}"] = spread("last", metric)
            row[f"std_oracle_{metric}"] = spread("oracle", metric)
            row[f"regret_{metric}"] = float(np.mean([r.metrics("oracle")[metric] - r.metrics(HEADLINE_POLICY)[metric]
                                                     for r in runs]))
        row["std_val_H_gamma0"] = mean_std([100.0 * h["metrics"]["H_gamma0"] for h in head])[1]
        draws = [test_draw_std(r, resamples) for r in runs]
        row.update({f"test_draw_{k}": float(np.mean([d[k] for d in draws])) for k in ("T1", "H")})
        out[f"{dataset}/{method}"] = row
    return out


def table(rows: dict) -> str:
    head = ("method", "n", "val T1 (std)", "last", "oracle", "draw", "regret", "val H (std)", "γ=0", "last",
            "oracle", "draw", "regret", "picked (config, epoch)")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for name, r in rows.items():
        t1, h = r["val_T1"], r["val_H"]
        lines.append(" | ".join([
            name, str(r["n"]), f"{t1[0]:.1f} ({t1[1]:.1f})", f"{r['std_last_T1']:.1f}", f"{r['std_oracle_T1']:.1f}",
            f"{r['test_draw_T1']:.1f}", f"{r['regret_T1']:+.1f}", f"{h[0]:.1f} ({h[1]:.1f})",
            f"{r['std_val_H_gamma0']:.1f}", f"{r['std_last_H']:.1f}", f"{r['std_oracle_H']:.1f}",
            f"{r['test_draw_H']:.1f}", f"{r['regret_H']:+.1f}", " ".join(f"{c}/{e}" for c, e in r["picked"])]))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("."), help="project folder (reads <root>/runs/*/train)")
    ap.add_argument("--resamples", type=int, default=300, help="bootstrap resamples per run (default 300)")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args(argv)
    records = [r for r in find_records(args.root / "runs") if r.stage == "train" and not r.base_method]
    if not records:
        print(f"no train-stage runs below {args.root / 'runs'}; run `dvc repro` first", file=sys.stderr)
        return 1
    rows = parts(newest_per_seed(records), args.resamples)
    print("std over seeds (ddof = 1), points; draw = bootstrap std of one run (mean over seeds); "
          "regret = mean(oracle − val)")
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
