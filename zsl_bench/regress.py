"""`zsl-bench regress`: rerun the CI configuration and fail when an accuracy moves beyond its tolerance.

The CI configuration (`regress/params.yaml`) is the embedded default made small: every method, three
seeds, defaults only, CPU, one thread (torch and BLAS) per run, the runs in a pool of one process per
core. The backbone trained on it amplifies rounding differences, so with 1 vs 2 threads closed-form
numbers moved by up to 1.8 points and DAZLE's S by 12; one thread makes the numbers independent of the
machine's core count. Its numbers are pinned in `regress/golden.json` with one tolerance per method and
metric, derived from the seed-to-seed spread measured when the file was written:

    tolerance = max(FLOOR, 2 · σ · √(2 / n))

σ = sample std over the n seeds. The checked number is the mean over seeds; if a change acted like
drawing new seeds, the difference of two such means has std σ·√(2/n), so the band is about a 95 % one.
Closed-form methods (σ = 0: seeds cannot change them) get the FLOOR, one test image's worth of
per-class accuracy noise; trained methods get bands as wide as their own spread justifies. Both
directions fail: an unexplained improvement is a change too, and refreshing the golden file
(`zsl-bench regress --update`) is a reviewed commit.
"""
from __future__ import annotations

import hashlib
import math
import platform
import shutil
import time
from pathlib import Path

import numpy as np

from zsl_bench.io import read_json, write_json
from zsl_bench.metrics import mean_std
from zsl_bench.protocol import TABLE_METRICS
from zsl_bench.policies import HEADLINE_POLICY

FLOOR = 0.25        # % points; see module docstring
POLICY = HEADLINE_POLICY      # the headline policy is what must not move
GOLDEN_VERSION = 1


def config_paths(repo: Path) -> tuple[Path, Path]:
    return repo / "regress" / "params.yaml", repo / "regress" / "golden.json"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_ci_configuration(params_file: Path, workdir: Path, progress: bool = True) -> list[dict]:
    """Run prepare → backbone → extract → train for the configuration in `workdir` and return the records.

    Runs are content-addressed (their key covers the code too), so a second call reuses them while nothing
    changed, and runs made by other code or another configuration are never read."""
    from dataclasses import replace

    from zsl_bench import launchers, stages
    from zsl_bench.params import feature_sets, load_params
    from zsl_bench.paths import ProjectPaths
    from zsl_bench.records import RunRecord

    import os

    from threadpoolctl import threadpool_limits

    from zsl_bench.runtime import THREADS_ENV, usable_cores

    workdir.mkdir(parents=True, exist_ok=True)
    stamp = workdir / "params.yaml"
    if stamp.is_file() and stamp.read_bytes() != params_file.read_bytes():
        shutil.rmtree(workdir)   # everything in it was made from another configuration
        workdir.mkdir(parents=True)
    shutil.copyfile(params_file, stamp)
    paths = ProjectPaths(workdir)
    params = load_params(paths)
    previous = os.environ.get(THREADS_ENV)
    os.environ[THREADS_ENV] = "1"
    folders = []   # exactly the runs of this configuration and this code (run keys include the code)
    import torch

    torch_threads = torch.get_num_threads()
    try:
        # Every stage applies runtime.limit_threads, which reads THREADS_ENV (1 here) for torch and BLAS;
        # the context and `finally` give the caller its own thread counts back.
        with threadpool_limits(1):
            for dataset, backbone in feature_sets(params):
                if not (paths.prepared(dataset) / "dataset.json").is_file():
                    stages.prepare(dataset, params, paths, progress=progress)
                if not (paths.features(dataset, backbone) / "index.json").is_file():
                    stages.backbone(dataset, params, paths, progress=progress, name=backbone)
                    stages.extract(dataset, params, paths, progress=progress, name=backbone)
                # The runs in parallel, one single-threaded process per core (at most 8: each holds its
                # features): the same numbers as one after another (one thread either way), sooner.
                jobs = [replace(job, threads=1) for job in stages.train_jobs(dataset, params, paths,
                                                                              backbone=backbone)]
                made = launchers.local(jobs, {"workers": min(8, usable_cores())}, progress=progress,
                                       desc=f"regress {dataset}/{backbone}")
                for folder in made:
                    stages.prune_slot(folder)
                folders += made
    finally:
        torch.set_num_threads(torch_threads)
        if previous is None:
            os.environ.pop(THREADS_ENV, None)
        else:
            os.environ[THREADS_ENV] = previous
    return [RunRecord.read(f) for f in folders]


def measured(records: list[dict]) -> dict:
    """dataset → method → {"seeds": {seed: {metric: %}}, "mean", "std", "n"} under POLICY; a dataset on
    several backbones is keyed `<dataset>/<backbone>`."""
    out: dict = {}
    several = {d for d in {r.dataset for r in records} if len({r.backbone for r in records if r.dataset == d}) > 1}
    for r in records:
        if r.base_method is not None:   # a scoring variant: read off runs that are checked themselves
            continue
        m = out.setdefault(r.feature_set if r.dataset in several else r.dataset, {}).setdefault(r.method, {"seeds": {}})
        m["seeds"][str(r.seed)] = r.metrics(POLICY)
    for methods in out.values():
        for m in methods.values():
            stats = {k: mean_std([s[k] for s in m["seeds"].values()]) for k in TABLE_METRICS}
            m["n"] = len(m["seeds"])
            m["mean"] = {k: v[0] for k, v in stats.items()}
            m["std"] = {k: v[1] for k, v in stats.items()}
    return out


def tolerance(std: float, n: int) -> float:
    if n < 2 or math.isnan(std):
        return FLOOR
    return max(FLOOR, 2.0 * std * math.sqrt(2.0 / n))


def golden_from(now: dict, params_file: Path) -> dict:
    import torch

    for methods in now.values():
        for m in methods.values():
            m["tolerance"] = {k: round(tolerance(m["std"][k], m["n"]), 3) for k in TABLE_METRICS}
    return {"version": GOLDEN_VERSION, "policy": POLICY, "units": "percent",
            "config": params_file.name, "config_sha256": _digest(params_file),
            "tolerance_rule": f"max({FLOOR}, 2 * std_over_seeds * sqrt(2 / n)) on the mean over seeds",
            "written": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "environment": {"python": platform.python_version(), "torch": torch.__version__,
                            "numpy": np.__version__, "machine": platform.machine(), "cpu": platform.processor()},
            "datasets": now}


def check(now: dict, golden: dict) -> tuple[bool, list[str]]:
    """(passed, lines of a readable report): every (dataset, method, metric) of the golden file."""
    lines, ok = [], True
    header = f"{'dataset/method':28} {'metric':6} {'golden':>8} {'now':>8} {'Δ':>7} {'tolerance':>10}  verdict"
    lines.append(header)
    for ds, methods in sorted(golden["datasets"].items()):
        for method, g in sorted(methods.items()):
            cur = now.get(ds, {}).get(method)
            if cur is None or cur["n"] != g["n"]:
                ok = False
                lines.append(f"{ds}/{method:<{27 - len(ds)}} {'—':6} missing: {0 if cur is None else cur['n']} of "
                             f"{g['n']} seeds ran")
                continue
            for k in TABLE_METRICS:
                delta = cur["mean"][k] - g["mean"][k]
                bad = not abs(delta) <= g["tolerance"][k]
                ok &= not bad
                lines.append(f"{ds + '/' + method:28} {k:6} {g['mean'][k]:8.2f} {cur['mean'][k]:8.2f} "
                             f"{delta:+7.2f} {g['tolerance'][k]:10.2f}  {'MOVED' if bad else 'ok'}")
    extra = sorted(f"{ds}/{m}" for ds, ms in now.items() for m in ms if m not in golden["datasets"].get(ds, {}))
    if extra:
        lines.append(f"not in the golden file (not checked; add with --update): {', '.join(extra)}")
    return ok, lines


def regress(repo: Path, workdir: Path, update: bool = False, progress: bool = True) -> tuple[int, str]:
    params_file, golden_file = config_paths(repo)
    records = run_ci_configuration(params_file, workdir, progress=progress)
    now = measured(records)
    if update:
        write_json(golden_file, golden_from(now, params_file))
        return 0, f"wrote {golden_file} from {len(records)} runs; review the diff and commit it"
    if not golden_file.is_file():
        return 2, f"{golden_file}: missing; create it with `zsl-bench regress --update`"
    golden = read_json(golden_file)
    if golden.get("config_sha256") != _digest(params_file):
        return 1, (f"{params_file} changed since {golden_file} was written: its numbers no longer apply; run "
                   "`zsl-bench regress --update` and commit both files")
    ok, lines = check(now, golden)
    moved = sum(line.endswith("MOVED") or "missing:" in line for line in lines)
    summary = ("regress: all numbers within tolerance" if ok else
               f"regress: FAILED, {moved} number(s) moved beyond tolerance (mean over seeds, policy {POLICY}, %). "
               "If the change is intended, refresh with `zsl-bench regress --update` and commit the golden file.")
    return (0 if ok else 1), "\n".join(lines + ["", summary])
