#!/usr/bin/env python
"""Does the benchmark still tell methods apart? Every pair of the train stage's methods on each dataset: the
paired difference of their `val`-policy H and T1, mean over the seeds both ran, with the 95 % stratified
bootstrap interval over test images that `zsl-bench compare` prints (zsl_bench/bootstrap.py). A pair
"differs" when that interval excludes 0. Reads the run records below runs/ (the newest per method and seed,
wherever the train stage put them), so it also reads runs made by older layouts of the pipeline.

    python benchmarks/discrimination.py [--root .] [--metric H T1] [--json out.json]
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zsl_bench import bootstrap  # noqa: E402
from zsl_bench.records import find_records, newest_per_seed  # noqa: E402


def method_scores(runs: Path, methods: list[str], seeds: list[int], policy: str = "val") -> dict:
    """dataset → method → seed → bootstrap.TestScores, from the train stage's records."""
    records = [r for r in find_records(runs) if r.method in methods and r.seed in seeds
               and getattr(r, "stage", "train") == "train" and "ablation" not in r.folder.parts]
    out: dict = {}
    for r in newest_per_seed(records):
        out.setdefault(r.dataset, {}).setdefault(r.method, {})[r.seed] = bootstrap.TestScores.load(
            r.folder / "predictions.npz", policy)
    return out


def pairs(scores: dict, metrics: tuple[str, ...]) -> list[dict]:
    rows = []
    for dataset, per_method in sorted(scores.items()):
        for a, b in itertools.combinations(sorted(per_method), 2):
            intervals = bootstrap.paired_intervals(per_method[a], per_method[b])
            if isinstance(intervals, str):
                continue
            rows.append({"dataset": dataset, "a": a, "b": b,
                         **{k: {"low": round(intervals[k].low, 2), "high": round(intervals[k].high, 2),
                                "differs": bool(intervals[k].excludes_zero)} for k in metrics}})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("."), help="project root (its params.yaml and runs/)")
    ap.add_argument("--metric", nargs="+", default=["H", "T1"])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    import yaml

    params = yaml.safe_load((args.root / "params.yaml").read_text())
    methods, seeds = params["train"]["methods"], [int(s) for s in params["train"]["seeds"]]
    rows = pairs(method_scores(args.root / "runs", methods, seeds), tuple(args.metric))
    for k in args.metric:
        differ = [r for r in rows if r[k]["differs"]]
        print(f"{k}: {len(differ)} of {len(rows)} method pairs differ beyond their 95 % bootstrap interval")
        same = [f"{r['a']}–{r['b']}" for r in rows if not r[k]["differs"]]
        print(f"   not told apart: {', '.join(same) if same else 'none'}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
