"""`zsl-bench regress`: rerun the CI configuration and fail when an accuracy moved.

The CI configuration (`regress/params.yaml`) is the embedded default made small: every method, three seeds,
defaults only, CPU, one thread (torch and BLAS) per run, the runs in a pool of one process per core, and a
backbone trained in float64. Its numbers are pinned in `regress/golden.json`, every seed's every metric under
two policies (`val`, the headline, and `last`: final checkpoint, default γ), with the float environment that
made them (float_environment.py). Two modes:

- **Exact** (whenever this machine's fingerprint equals the golden file's): on one machine the runs are
  deterministic, so every seed's every metric under both policies must equal the golden one within EXACT_ABS
  (1e-6 as a fraction); any move fails, and the per-seed diff table says which method, seed and metric.
- **Statistical** (chosen by itself when the fingerprint differs, with one line saying what differs): another
  CPU or another torch rounds differently, and training amplifies that. Two measures keep the amplification
  out of the comparison. The backbone is trained in float64 (measured: under torch's unvectorised kernels and
  two threads its float32 weights came out bit-identical, where a float32 training moved every downstream
  method, ESZSL's T1 by 1.5 points). And the statistical mode compares `last`, not `val`: a validation choice
  of epoch or γ turns a 0.01-point wobble into a jump of points. What remains is each method's own training
  reacting to the rounding, independently per seed: per method and metric the paired mean over seeds of
  (now − golden) must stay within Z standard errors of that reaction, measured at `--update` by rerunning the
  configuration in a child process under PERTURBATION (code and settings unchanged).

Nothing in the work folder outlives its inputs: prepared data, backbone and features carry a stamp of their
settings, of the meaning digest of every module the stages can run, and of the float environment, and are
rebuilt when it changes; runs are content-addressed by their own keys (code and input bytes included).
Refreshing the golden file (`zsl-bench regress --update`) is a reviewed commit: it prints what moved, and it
refuses to overwrite a file written in another environment unless told to adopt this one.
"""
from __future__ import annotations

import hashlib
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from zsl_bench import float_environment
from zsl_bench.io import read_json, write_json
from zsl_bench.metrics import mean_std
from zsl_bench.protocol import TABLE_METRICS
from zsl_bench.policies import HEADLINE_POLICY

POLICY = HEADLINE_POLICY      # the headline policy is what must not move
# Statistical mode compares the final checkpoint at the default γ: no validation choice (of epoch or γ) that a
# last-bit difference can flip, turning a 0.01-point wobble into a jump of several points (measured: DAZLE's
# val-selected T1 moved 4.4 points rms under another CPU's kernels, its final-checkpoint T1 1.1).
STAT_POLICY = "last"
SERIES = {"seeds": POLICY, "last_seeds": STAT_POLICY}   # golden entry key → the policy its numbers are under
GOLDEN_VERSION = 2
THREADS = 1                   # per run: numbers independent of the machine's core count
EXACT_ABS = 1e-4              # % points = 1e-6 as a fraction; record.json keeps 4 decimals of a percent
FLOOR = 0.25                  # % points: the smallest statistical band (one test image's worth of noise)
Z = 3.0                       # statistical band = Z standard errors (rms / √n) of the environment-only differences
# The environment-only perturbation the statistical tolerances are measured with: what another CPU does (other
# vector kernels: torch without AVX; other reductions: two threads), code and configuration unchanged.
PERTURBATION = {"threads": 2, "environ": {"ATEN_CPU_CAPABILITY": "default",
                                          **({"OPENBLAS_CORETYPE": "Sandybridge"}   # an older x86 core's BLAS kernels
                                             if platform.machine() in ("x86_64", "AMD64") else {})}}


def config_paths(repo: Path) -> tuple[Path, Path]:
    return repo / "regress" / "params.yaml", repo / "regress" / "golden.json"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


UPSTREAM_SECTIONS = ("datasets", "features", "sources", "backbone", "extract")   # what prepare/backbone/extract read
UPSTREAM_STAMP = "upstream.json"


def upstream_key(params: dict, threads: int) -> dict:
    """What the reused prepared data, backbones and features were made from: their settings, the meaning digest
    of every module the stages can run (code_identity: a changed line anywhere on the path changes it) and the
    float environment. Runs need no stamp: their own keys cover their code and their inputs' content."""
    from zsl_bench.code_identity import closure, files_of, meaning_digest, ROOT

    return {"settings": {k: params.get(k) for k in UPSTREAM_SECTIONS},
            "code": {f: meaning_digest(ROOT / f) for f in files_of(closure("zsl_bench.stages"))},
            "environment": float_environment.fingerprint(threads)}


def run_ci_configuration(params_file: Path, workdir: Path, progress: bool = True, threads: int = 1) -> list[dict]:
    """Run prepare → backbone → extract → train for the configuration in `workdir` and return the records.

    Nothing is reused past its inputs: the prepared data, backbone and features are rebuilt whenever
    `upstream_key` changes (settings, code or environment); runs are content-addressed (their key covers
    their code and the features' bytes), so a second call reuses them while nothing changed, and runs made by
    other code or another configuration are never read. `threads` per run (1: numbers independent of the
    machine's core count; the statistical calibration uses 2 as an environment-only perturbation)."""
    from dataclasses import replace

    from zsl_bench import launchers, stages
    from zsl_bench.params import feature_sets, load_params
    from zsl_bench.paths import ProjectPaths
    from zsl_bench.records import RunRecord
    from threadpoolctl import threadpool_limits

    from zsl_bench.runtime import THREADS_ENV, usable_cores

    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(params_file, workdir / "params.yaml")
    paths = ProjectPaths(workdir)
    params = load_params(paths)
    previous = os.environ.get(THREADS_ENV)
    os.environ[THREADS_ENV] = str(threads)
    folders = []   # exactly the runs of this configuration and this code (run keys include the code)
    import torch

    torch_threads = torch.get_num_threads()
    try:
        # Every stage applies runtime.limit_threads, which reads THREADS_ENV for torch and BLAS; the context
        # and `finally` give the caller its own thread counts back.
        with threadpool_limits(threads):
            torch.set_num_threads(threads)
            key = upstream_key(params, threads)
            stamp = workdir / UPSTREAM_STAMP
            if not stamp.is_file() or read_json(stamp) != key:
                # Made by other code, settings or environment. The runs stay: their keys cover the features'
                # bytes, so they are reused only where the rebuilt features are byte-identical.
                for made in ("data", "features"):
                    shutil.rmtree(workdir / made, ignore_errors=True)
                stamp.unlink(missing_ok=True)
                for dataset, backbone in feature_sets(params):
                    if not (paths.prepared(dataset) / "dataset.json").is_file():
                        stages.prepare(dataset, params, paths, progress=progress)
                    stages.backbone(dataset, params, paths, progress=progress, name=backbone)
                    stages.extract(dataset, params, paths, progress=progress, name=backbone)
                write_json(stamp, key)   # written last: an interrupted rebuild is redone
            for dataset, backbone in feature_sets(params):
                # The runs in parallel, single-threaded processes, one per core (at most 8: each holds its
                # features): the same numbers as one after another (one thread either way), sooner.
                jobs = [replace(job, threads=threads) for job in stages.train_jobs(dataset, params, paths,
                                                                                    backbone=backbone)]
                made = launchers.local(jobs, {"workers": max(1, min(8, usable_cores() // threads))},
                                       progress=progress, desc=f"regress {dataset}/{backbone}")
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
    """dataset → method → {"seeds": {seed: {metric: %}} under POLICY, "last_seeds": the same under
    STAT_POLICY, "mean", "std", "n" (of POLICY's)}; a dataset on several backbones is keyed
    `<dataset>/<backbone>`."""
    out: dict = {}
    several = {d for d in {r.dataset for r in records} if len({r.backbone for r in records if r.dataset == d}) > 1}
    for r in records:
        if r.base_method is not None:   # a scoring variant: read off runs that are checked themselves
            continue
        m = out.setdefault(r.feature_set if r.dataset in several else r.dataset, {}).setdefault(
            r.method, {key: {} for key in SERIES})
        for key, policy in SERIES.items():
            m[key][str(r.seed)] = r.metrics(policy)
    for methods in out.values():
        for m in methods.values():
            stats = {k: mean_std([s[k] for s in m["seeds"].values()]) for k in TABLE_METRICS}
            m["n"] = len(m["seeds"])
            m["mean"] = {k: v[0] for k, v in stats.items()}
            m["std"] = {k: v[1] for k, v in stats.items()}
    return out


def per_seed_deltas(now: dict, golden: dict, key: str = "seeds") -> dict[str, list[float]]:
    """metric → [now − golden] over the golden file's seeds (paired: the same seed, the same test images),
    of series `key` (SERIES)."""
    return {k: [now[key][s][k] - g[k] for s, g in sorted(golden[key].items(), key=lambda x: int(x[0]))]
            for k in TABLE_METRICS}


def tolerance(env_deltas: list[float]) -> float:
    """The statistical mode's band for one method and metric, from the per-seed differences an
    environment-only perturbation made to STAT_POLICY's numbers (`calibrate`): Z standard errors of their mean,
    rms / √n. The configuration's backbone is trained in float64, so the features do not move with the
    environment and each seed's difference comes from its own training alone (no shift common to all seeds)."""
    if not env_deltas:
        return FLOOR
    rms = math.sqrt(sum(d * d for d in env_deltas) / len(env_deltas))
    return round(max(FLOOR, Z * rms / math.sqrt(len(env_deltas))), 3)


def golden_from(now: dict, params_file: Path, environment: dict, calibration: dict | None) -> dict:
    """The golden file: every seed's numbers, the environment that made them, and (from `calibration`,
    dataset → method → metric → per-seed differences under the environment-only perturbation) the
    statistical mode's tolerances."""
    for ds, methods in now.items():
        for method, m in methods.items():
            env = ((calibration or {}).get("deltas") or {}).get(ds, {}).get(method)
            if env is not None:
                m["environment_deltas"] = {k: [round(x, 4) for x in v] for k, v in env.items()}
                m["tolerance"] = {k: tolerance(v) for k, v in m["environment_deltas"].items()}   # as stored
    return {"version": GOLDEN_VERSION, "policy": POLICY, "units": "percent",
            "config": params_file.name, "config_sha256": _digest(params_file),
            "written": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "environment": environment,
            "exact": {"absolute": EXACT_ABS, "rule": "every seed's every metric within this many points"},
            "statistical": {"policy": STAT_POLICY,
                            "rule": f"|mean over seeds of (now - golden), paired by seed, policy {STAT_POLICY}| <= "
                                    f"tolerance = max({FLOOR}, {Z} * rms / sqrt(n) of the per-seed differences an "
                                    f"environment-only perturbation made)",
                            "perturbation": (calibration or {}).get("perturbation")},
            "datasets": now}


def _rows(golden: dict, now: dict):
    """(dataset, method, golden entry, current entry or None) for every entry of the golden file."""
    for ds, methods in sorted(golden["datasets"].items()):
        for method, g in sorted(methods.items()):
            yield ds, method, g, now.get(ds, {}).get(method)


def _missing(ds: str, method: str, g: dict, cur: dict | None) -> str | None:
    ran = set((cur or {}).get("seeds", {}))
    lost = sorted(set(g["seeds"]) - ran, key=int)
    return None if not lost else f"{ds}/{method}: missing: seed(s) {', '.join(lost)} did not run"


def check_exact(now: dict, golden: dict) -> tuple[bool, list[str]]:
    """Exact mode: every seed's every metric, under both policies the golden file holds, equal to the golden
    one within EXACT_ABS; the per-seed diff table (a line per method, seed and policy) and the moved numbers
    spelled out."""
    metrics = TABLE_METRICS
    lines = [f"{'dataset/method':28} {'seed':>4} {'policy':6} " + " ".join(f"{'Δ' + k:>9}" for k in metrics)
             + "  verdict"]
    moved = []
    for ds, method, g, cur in _rows(golden, now):
        if (why := _missing(ds, method, g, cur)):
            moved.append(why)
            lines.append(why)
            continue
        for key, policy in SERIES.items():
            for seed, ref in sorted(g[key].items(), key=lambda x: int(x[0])):
                d = {k: cur[key][seed][k] - ref[k] for k in metrics}
                bad = [k for k in metrics if not abs(d[k]) <= EXACT_ABS]
                moved += [f"{ds}/{method} seed {seed} {policy} {k}: {ref[k]:.4f} → {cur[key][seed][k]:.4f}"
                          for k in bad]
                lines.append(f"{ds + '/' + method:28} {seed:>4} {policy:6} " + " ".join(f"{d[k]:+9.4f}" for k in metrics)
                             + f"  {'MOVED ' + ','.join(bad) if bad else 'same'}")
    return not moved, lines + ([""] + moved if moved else [])


def check_statistical(now: dict, golden: dict) -> tuple[bool, list[str]]:
    """Statistical mode: per method and metric, the mean over the golden seeds of the paired per-seed
    difference of STAT_POLICY's numbers within the method's tolerance."""
    lines, ok = [f"{'dataset/method':28} {'metric':6} {'golden':>8} {'now':>8} {'Δ paired':>9} {'tolerance':>10}"
                 f"  verdict (policy {STAT_POLICY})"], True
    for ds, method, g, cur in _rows(golden, now):
        if (why := _missing(ds, method, g, cur)):
            ok = False
            lines.append(why)
            continue
        for k, d in per_seed_deltas(cur, g, "last_seeds").items():
            delta, tol = sum(d) / len(d), g["tolerance"][k]
            bad = not abs(delta) <= tol
            ok &= not bad
            ref = sum(x[k] for x in g["last_seeds"].values()) / len(g["last_seeds"])
            lines.append(f"{ds + '/' + method:28} {k:6} {ref:8.2f} {ref + delta:8.2f} {delta:+9.2f} {tol:10.2f}"
                         f"  {'MOVED' if bad else 'ok'}")
    return ok, lines


def _extra(now: dict, golden: dict) -> list[str]:
    extra = sorted(f"{ds}/{m}" for ds, ms in now.items() for m in ms if m not in golden["datasets"].get(ds, {}))
    return [f"not in the golden file (not checked; add with --update): {', '.join(extra)}"] if extra else []


def moved_summary(old: dict | None, new: dict) -> str:
    """What an update changes, per method, policy and metric (mean over seeds, and how many seeds moved), for
    the commit message."""
    if old is None:
        return "new golden file"
    out = []
    for ds, method, g, cur in _rows({"datasets": new}, old.get("datasets", {})):
        if cur is None:
            out.append(f"{ds}/{method}: added")
            continue
        parts = []
        for key, policy in SERIES.items():
            common = {s: v for s, v in g.get(key, {}).items() if s in cur.get(key, {})}
            if not common:
                continue
            d = per_seed_deltas({key: common}, {key: {s: cur[key][s] for s in common}}, key)
            parts += [f"{policy} {k} {sum(v) / len(v):+.2f} ({n}/{len(v)} seeds)" for k, v in d.items()
                      if (n := sum(abs(x) > EXACT_ABS for x in v))]
        if parts:
            out.append(f"{ds}/{method}: " + ", ".join(parts))
    out += [f"{ds}/{m}: removed" for ds, ms in old.get("datasets", {}).items() for m in ms
            if m not in new.get(ds, {})]
    return "\n".join(out) or "no number moved"


def calibrate(params_file: Path, workdir: Path, now: dict) -> dict:
    """Measure what an environment-only change does: the configuration rerun in a child process under
    PERTURBATION (the variables must be set before torch loads), its per-seed differences from `now`."""
    folder, out = workdir / "calibration", workdir / "calibration.json"
    out.unlink(missing_ok=True)
    env = {**os.environ, **PERTURBATION["environ"]}
    cmd = [sys.executable, "-m", "zsl_bench.regress", str(params_file), str(folder), str(PERTURBATION["threads"]),
           str(out)]
    if subprocess.run(cmd, env=env).returncode != 0 or not out.is_file():
        raise RuntimeError(f"regress calibration failed: {' '.join(cmd)} (with {PERTURBATION['environ']})")
    perturbed = read_json(out)
    deltas = {ds: {m: per_seed_deltas(perturbed["measured"][ds][m], g, "last_seeds") for m, g in methods.items()}
              for ds, methods in now.items()}
    return {"perturbation": {**PERTURBATION, "fingerprint": perturbed["environment"]}, "deltas": deltas}


def _kept_calibration(golden: dict | None, now: dict, params_file: Path) -> dict | None:
    """The golden file's calibration when it was measured on this configuration and covers every method and
    seed of `now` (else None: measure)."""
    if not golden or golden.get("version") != GOLDEN_VERSION or golden.get("config_sha256") != _digest(params_file):
        return None
    deltas = {}
    for ds, methods in now.items():
        for m, cur in methods.items():
            old = golden["datasets"].get(ds, {}).get(m, {})
            if "environment_deltas" not in old or set(old.get("last_seeds", {})) != set(cur["last_seeds"]):
                return None
            deltas.setdefault(ds, {})[m] = old["environment_deltas"]
    return {"perturbation": golden["statistical"]["perturbation"], "deltas": deltas}


def regress(repo: Path, workdir: Path, update: bool = False, mode: str = "auto", recalibrate: bool = False,
            adopt_environment: bool = False, progress: bool = True) -> tuple[int, str]:
    """Run the CI configuration and compare it with the golden file: exact mode when this environment is the
    one that wrote it, statistical mode otherwise (or as `mode` says). With `update`, write the golden file
    instead (measuring the statistical tolerances unless `recalibrate` is off and the old ones still fit)."""
    params_file, golden_file = config_paths(repo)
    golden = read_json(golden_file) if golden_file.is_file() else None
    env = float_environment.fingerprint(THREADS)
    differs = float_environment.differences(golden["environment"], env) if golden and \
        golden.get("version") == GOLDEN_VERSION else []
    if update:
        if differs and not adopt_environment:
            return 1, (f"{golden_file} was written in another environment ({'; '.join(differs)}): updating here "
                       "would replace the numbers exact mode compares against everywhere else. Update on the "
                       "machine that wrote it, or pass --adopt-environment to make this one the reference.")
        now = measured(run_ci_configuration(params_file, workdir, progress=progress, threads=THREADS))
        calibration = None if recalibrate else _kept_calibration(golden, now, params_file)
        calibration = calibration or calibrate(params_file, workdir, now)
        write_json(golden_file, golden_from(now, params_file, env, calibration))
        return 0, (f"wrote {golden_file}; what moved (mean over seeds, points):\n" + moved_summary(golden, now)
                   + "\nreview the diff and commit it with this summary")
    if golden is None:
        return 2, f"{golden_file}: missing; create it with `zsl-bench regress --update`"
    if golden.get("version") != GOLDEN_VERSION:
        return 1, f"{golden_file}: written by an older zsl-bench (version {golden.get('version')}); run --update"
    if golden.get("config_sha256") != _digest(params_file):
        return 1, (f"{params_file} changed since {golden_file} was written: its numbers no longer apply; run "
                   "`zsl-bench regress --update` and commit both files")
    chosen = mode if mode != "auto" else ("statistical" if differs else "exact")
    head = (f"regress: exact mode (this environment is the golden file's: torch "
            f"{env['torch']}, {env['torch_cpu_capability']}, {', '.join(env['blas'])}, {THREADS} thread)"
            if chosen == "exact" and not differs else
            f"regress: {chosen} mode" + (f"; the environment differs from the golden file's ({'; '.join(differs)})"
                                         if differs else " (asked for)"))
    print(head, file=sys.stderr)
    now = measured(run_ci_configuration(params_file, workdir, progress=progress, threads=THREADS))
    ok, lines = (check_exact if chosen == "exact" else check_statistical)(now, golden)
    if ok:
        summary = f"regress: {chosen} mode: all numbers " + ("identical" if chosen == "exact" else "within tolerance")
    else:
        summary = (f"regress: FAILED in {chosen} mode (policy {POLICY}, %). If the change is intended, refresh with "
                   "`zsl-bench regress --update` and commit the golden file with the summary it prints.")
    return (0 if ok else 1), "\n".join([head] + lines + _extra(now, golden) + ["", summary])


if __name__ == "__main__":   # the calibration's child: python -m zsl_bench.regress PARAMS WORKDIR THREADS OUT
    _params, _workdir, _threads, _out = sys.argv[1:5]
    _records = run_ci_configuration(Path(_params), Path(_workdir), progress=True, threads=int(_threads))
    write_json(Path(_out), {"measured": measured(_records),
                            "environment": float_environment.fingerprint(int(_threads))})
