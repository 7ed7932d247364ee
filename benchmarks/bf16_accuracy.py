#!/usr/bin/env python
"""What bf16 autocast (`train.precision: bf16`) does to a method's accuracy on the embedded default.

Runs the method with params.yaml's settings for each seed twice, in float32 and under bf16 autocast
(`training.resolve_precision`: the forward in bf16, the parameters, optimizer and losses' reductions in
float32), in a project where `dvc repro` has made the features; the runs go to a temporary folder, not to
runs/. Prints the `val`-policy T1 / U / S / H / AUSUC of both (mean ± std over seeds), the per-seed paired
difference bf16 − fp32 with its 95 % stratified bootstrap interval over test images (zsl_bench/bootstrap.py),
and each run's wall time.

    python benchmarks/bf16_accuracy.py [--method transzero] [--seeds 0 1 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METRICS = ("T1", "U", "S", "H", "AUSUC")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="transzero")
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    import numpy as np

    from zsl_bench import bootstrap, stages
    from zsl_bench.launchers import Job, local
    from zsl_bench.params import load_params
    from zsl_bench.paths import ProjectPaths
    from zsl_bench.records import RunRecord

    paths = ProjectPaths.here()
    params = load_params(paths)
    tmp = Path(tempfile.mkdtemp(prefix="zslb-bf16-"))
    try:
        jobs = [Job(replace(stages.run_request(args.dataset, args.method, seed, params), precision=precision),
                    str(paths.root), str(tmp / precision / f"seed{seed}"))
                for precision in ("fp32", "bf16") for seed in args.seeds]
        folders = local(jobs, {"workers": None}, desc=f"{args.method} fp32 and bf16")
        records = {(j.request.precision, j.request.seed): RunRecord.read(f) for j, f in zip(jobs, folders)}
        result = {"method": args.method, "dataset": args.dataset, "seeds": args.seeds, "policy": "val"}
        for precision in ("fp32", "bf16"):
            values = {k: [records[precision, s].metrics("val")[k] for s in args.seeds] for k in METRICS}
            result[precision] = {k: {"mean": round(float(np.mean(v)), 2), "std": round(float(np.std(v, ddof=1)), 2)
                                     if len(v) > 1 else None} for k, v in values.items()}
            result[precision]["wall_s"] = [round(records[precision, s].wall_s, 1) for s in args.seeds]
        scores = {p: {s: bootstrap.TestScores.load(records[p, s].folder / "predictions.npz", "val") for s in args.seeds}
                  for p in ("fp32", "bf16")}
        intervals = bootstrap.paired_intervals(scores["bf16"], scores["fp32"])
        result["bf16_minus_fp32"] = {
            k: {"mean": round(float(np.mean([records["bf16", s].metrics("val")[k] - records["fp32", s].metrics("val")[k]
                                             for s in args.seeds])), 2),
                "ci95": [round(intervals[k].low, 2), round(intervals[k].high, 2)]} for k in METRICS}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = len(args.seeds)
    print(f"{args.method} on {args.dataset}, val policy, n = {n} seeds (mean ± std)")
    for precision in ("fp32", "bf16"):
        cells = "  ".join(f"{k} {result[precision][k]['mean']:.1f} ± {result[precision][k]['std'] or 0:.1f}"
                          for k in METRICS)
        print(f"  {precision}: {cells}   wall {result[precision]['wall_s']} s")
    print("  bf16 − fp32: " + "  ".join(f"{k} {d['mean']:+.1f} [{d['ci95'][0]:+.1f}, {d['ci95'][1]:+.1f}]"
                                          for k, d in result["bf16_minus_fp32"].items()))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
