"""`zsl-bench status`: every run params.yaml configures, as current, stale (and why) or missing, with the
compute it would take to bring it current — before `dvc repro` spends it. Like `dvc status`, per run.

A run's key is computed as the run would compute it (`runner.plan_run`: nothing trains), and compared with
the run folders in its slot: the folder of that key is current; another complete folder there is stale, and
the difference between the key it recorded (`key_spec`, `code`) and today's names what changed — a file of
the code, a params.yaml key, the dataset or the features. The compute is the replaced run's wall time, or for
a missing run the mean of the same method's runs on the dataset (other seeds), where there is one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from zsl_bench.io import DataError
from zsl_bench.paths import ProjectPaths


@dataclass(frozen=True)
class RunStatus:
    dataset: str
    method: str
    seed: int
    stage: str
    replicate: int
    state: str            # current | stale | missing | blocked (its inputs are not made yet)
    why: tuple[str, ...]
    compute_s: float      # wall seconds it would take (NaN: unknown); 0 when current
    slot: str


def configured_jobs(params: dict, paths: ProjectPaths, only: str | None = None, pairs=None) -> list:
    """Every run params.yaml configures as a launchers.Job (the train stages' and the ablate stages'), each
    run once (the ablation's official runs may be the train stage's own: stages.shares_train_run); `pairs`:
    only these (dataset, backbone) pairs of `features`."""
    from zsl_bench import stages
    from zsl_bench.params import feature_sets

    jobs = []
    for dataset, backbone in pairs or feature_sets(params):
        if only != "ablate":
            jobs += stages.train_jobs(dataset, params, paths, backbone=backbone)
        if only != "train" and params.get("ablate"):
            jobs += stages.ablation_jobs(dataset, params, paths, backbone)[0]
    return list({(j.slot, j.request.stage, j.request.replicate): j for j in jobs}.values())


# key_spec field → what the user changed to move it
_CAUSES = {"dataset_fingerprint": "the dataset changed (data/prepared/{d})",
           "features_sha256": "the features changed (features/{d}/{b}: extract.{d}.{b} or the backbone)",
           "backbone": "its backbone",
           "configs": "its configurations changed (methods.{m}.hparams / search_space, or the method's defaults)",
           "hparam_overrides": "params.yaml methods.{m}.hparams.{d}", "search_space_override":
           "params.yaml methods.{m}.search_space.{d}", "search": "params.yaml train.search",
           "folds": "params.yaml train.folds", "selection_metric": "params.yaml train.selection_metric",
           "training": "params.yaml train.precision / train.micro_batch", "protocol_version": "the protocol version",
           "stage": "the stage it runs in", "replicate": "the replicate number"}


def why_stale(old: dict, planned) -> list[str]:
    """What differs between the record of an older run in the slot and the run planned now."""
    from zsl_bench.code_identity import changed_modules

    spec, d, m = planned.key_spec, planned.request.dataset, planned.request.method.split(".")[0]
    b = planned.request.backbone
    out = []
    recorded = old.get("key_spec")
    if recorded is None:
        out.append("made by an older zsl-bench (its record keeps no key spec)")
    else:
        out += [_CAUSES.get(k, k).format(d=d, m=m, b=b) for k in spec if k != "code" and recorded.get(k) != spec[k]]
    code_old, code_new = old.get("code", {}), spec["code"]
    if code_old.get("harness") != code_new["harness"]:
        out.append(f"zsl-bench version {code_old.get('harness')} → {code_new['harness']}")
    if "modules" not in code_old:
        out.append("code identity of an older format")
    else:
        out += [f"code: {f}" for f in changed_modules(code_old, code_new)]
    return out or ["another key (cause not recorded)"]


def _own_runs(slot: Path, method: str) -> list[tuple[dict, float]]:
    """(record.json as written, wall seconds) of the complete runs of `method` in `slot` (not its scoring
    variants), newest first. Read raw: a record of an older format is stale, not unreadable."""
    from zsl_bench.io import read_json
    from zsl_bench.provenance import read_provenance
    from zsl_bench.records import RECORD_FILE, find_run_folders

    runs = []
    for f in find_run_folders(slot):
        try:
            r = read_json(f / RECORD_FILE)
        except DataError:
            continue
        if isinstance(r, dict) and r.get("method") == method and not r.get("score_variant_of"):
            when = read_provenance(f)
            runs.append((r, when.get("created_unix", 0.0),
                         float(when.get("resources", {}).get("wall_s", math.nan))))
    return [(r, wall) for r, _, wall in sorted(runs, key=lambda x: -x[1])]


def status(params: dict, paths: ProjectPaths, dataset: str | None = None) -> list[RunStatus]:
    from zsl_bench.records import find_run_folders
    from zsl_bench.runner import plan_run

    out, jobs = [], []
    from zsl_bench.params import feature_sets
    from zsl_bench.records import feature_set_label

    for d, b in feature_sets(params, dataset):
        try:
            # the whole params: `ablate.backbones: default` means each dataset's first pair of all of `features`
            jobs += configured_jobs(params, paths, pairs=[(d, b)])
        except DataError as e:   # the inputs are not made yet: every run on them waits for them
            out.append(RunStatus(dataset=feature_set_label(d, b), method="*", seed=-1, stage="train", replicate=0,
                                 state="blocked", why=(str(e),), compute_s=math.nan,
                                 slot=str(paths.runs_of(d, b))))
    for job in jobs:
        r, slot = job.request, Path(job.slot)
        base = dict(dataset=feature_set_label(r.dataset, r.backbone), method=r.method, seed=r.seed, stage=r.stage, replicate=r.replicate,
                    slot=str(slot.relative_to(paths.root)) if slot.is_relative_to(paths.root) else str(slot))
        try:
            planned = plan_run(r, paths, progress=False, slot=slot)
        except DataError as e:
            out.append(RunStatus(**base, state="blocked", why=(str(e),), compute_s=math.nan))
            continue
        if planned.folder in find_run_folders(slot):
            out.append(RunStatus(**base, state="current", why=(), compute_s=0.0))
            continue
        older = _own_runs(slot, r.method)
        if older:
            out.append(RunStatus(**base, state="stale", why=tuple(why_stale(older[0][0], planned)),
                                 compute_s=older[0][1]))
        else:
            out.append(RunStatus(**base, state="missing", why=("never run",), compute_s=math.nan))
    return _estimate_missing(out, paths)


def _estimate_missing(rows: list[RunStatus], paths: ProjectPaths) -> list[RunStatus]:
    """A missing run's compute: the mean wall time of the same method's runs on the dataset (other seeds)."""
    from dataclasses import replace

    walls: dict[tuple, list[float]] = {}
    for row in rows:
        key = (row.dataset, row.method, row.stage)
        if row.state == "missing" and key not in walls:
            method_folder = (paths.root / row.slot).parent
            seeds = [s for s in method_folder.iterdir() if s.is_dir()] if method_folder.is_dir() else []
            walls[key] = [w for s in seeds for _, w in _own_runs(s, row.method) if math.isfinite(w)]
    return [replace(row, compute_s=sum(w) / len(w))
            if row.state == "missing" and (w := walls[(row.dataset, row.method, row.stage)]) else row for row in rows]


def render(rows: list[RunStatus]) -> str:
    def minutes(s: float) -> str:
        return "?" if not math.isfinite(s) else f"{s / 60:.1f} min"

    lines = []
    for row in rows:
        name = (f"{row.dataset} {row.method}{' (A/A)' if row.replicate else ''} seed {row.seed} [{row.stage}]"
                if row.seed >= 0 else f"{row.dataset}: every run")
        lines.append(f"{row.state:8s} {name}" + (f"  ({minutes(row.compute_s)})" if row.state != "current" else ""))
        lines += [f"           {w}" for w in row.why if row.state != "current"]
    todo = [r for r in rows if r.state in ("stale", "missing")]
    known = sum(r.compute_s for r in todo if math.isfinite(r.compute_s))
    unknown = sum(not math.isfinite(r.compute_s) for r in todo)
    runs = [r for r in rows if r.seed >= 0]
    waiting = [r.dataset for r in rows if r.seed < 0]
    counts = {s: sum(r.state == s for r in runs) for s in ("current", "stale", "missing", "blocked")}
    lines.append((f"dataset(s) waiting for their inputs: {', '.join(waiting)}; " if waiting else "")
                 + f"{len(runs)} configured runs: " + (", ".join(f"{n} {s}" for s, n in counts.items() if n) or "none")
                 + (f"; bringing them current takes about {known / 60:.1f} min of compute as measured here"
                    + (f" plus {unknown} run(s) of unknown cost" if unknown else "") if todo else "; nothing to run"))
    return "\n".join(lines)
