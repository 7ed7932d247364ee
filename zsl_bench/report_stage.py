"""The report stage: the run records params.yaml names → reports/ (tables, figures, index) → the MLflow
mirror. It reads run folders only: no model, dataset or feature store (dvc.yaml lists what it imports)."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from zsl_bench.io import DataError
from zsl_bench.params import feature_sets, section
from zsl_bench.paths import ProjectPaths


def configured_slots(params: dict, paths: ProjectPaths):
    """Every slot params.yaml configures, as (kind, feature set, method, seed, slot): kind "train" for the
    `features` pairs × methods × seeds, "ablation" for what the ablate stage runs (`params.ablation_runs`: the
    official configuration, its A/A replicate, the variants); the feature set as tables name it
    (`<dataset>/<backbone>`). The one enumeration that configured_records, skipped_runs and missing_runs share."""
    from zsl_bench.params import ablation_runs
    from zsl_bench.records import feature_set_label

    for dataset, backbone in feature_sets(params):
        label = feature_set_label(dataset, backbone)
        for method in section(params, "train", "methods"):
            for seed in section(params, "train", "seeds"):
                yield "train", label, method, int(seed), paths.run_slot(dataset, backbone, method, seed)
        if (params.get("ablate") or {}).get("method"):
            for method, _, seed, slot in ablation_runs(dataset, params, paths, backbone):
                yield "ablation", label, method, seed, slot


def configured_records(params: dict, paths: ProjectPaths) -> tuple[list, list]:
    """The current results, one definition for report, figures and compare: (records of the compared
    methods, records of the ablation) in the slots params.yaml configures (`configured_slots`). Callers keep
    the newest per seed (`records.newest_per_seed`)."""
    from zsl_bench.records import find_records, read_shared

    results, ablation = [], []
    for kind, _, method, _, slot in configured_slots(params, paths):
        for r in find_records(read_shared(slot) or slot):   # the ablation's official rows may be train runs
            if kind == "train" and r["method"] == method:
                results.append(r)
            elif kind == "ablation" and not (r.get("replicate") and r["method"] != method):
                ablation.append(r)   # the official runs' scoring variants too; not the A/A replicate's
    return results, ablation


def skipped_runs(params: dict, paths: ProjectPaths) -> tuple[dict, dict]:
    """Why configured slots were skipped (a method that cannot run on the dataset's inputs;
    records.write_skipped), as two maps (dataset, method) → reason: the train stage's methods, and the
    ablation's variants."""
    from zsl_bench.records import read_skipped

    found = {"train": {}, "ablation": {}}
    for kind, dataset, method, _, slot in configured_slots(params, paths):
        if reason := read_skipped(slot):
            found[kind][(dataset, method)] = reason
    return found["train"], found["ablation"]


def outside_records(paths: ProjectPaths, configured: list) -> list:
    """Records below runs/ that are not among `configured` (configured_records' two lists together): an
    extra seed from `zsl-bench train`, a method or seed removed from params.yaml. Never averaged in, only
    named."""
    from zsl_bench.records import find_records

    inside = {r.folder for r in configured}
    keys = {r["run_key"] for r in configured}
    # A scoring variant read off a configured run (Mg-MRN's per-branch inference, also the A/A replicate's)
    # belongs to that run: it is never averaged on its own, and is not "outside" either.
    return [r for r in find_records(paths.runs) if r.folder not in inside
            and (r.get("score_variant_of") or {}).get("run_key") not in keys]


def outside_notice(outside: list) -> str:
    """One line naming the runs left out, or '' when there are none."""
    if not outside:
        return ""
    names = sorted({f"{r.method}/{r.feature_set}/seed{r.seed}" for r in outside})
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    return (f"note: {len(outside)} run(s) below runs/ are outside params.yaml and not counted: {shown} "
            "(add them to params.yaml to count them)")


def missing_runs(params: dict, paths: ProjectPaths, results: list, skipped: dict) -> list[str]:
    """The configured (dataset, method, seed) slots with neither a finished run nor a skip, as
    `method/dataset/seedK`."""
    have = {(r.feature_set, r.method, r.seed) for r in results}
    return [f"{m}/{d}/seed{s}" for kind, d, m, s, _ in configured_slots(params, paths)
            if kind == "train" and (d, m, s) not in have and (d, m) not in skipped]


def report(params: dict, paths: ProjectPaths, progress: bool = True) -> list[Path]:
    """reports/ from the run records params.yaml names (nothing else: no model, dataset or feature
    store is read), then the MLflow mirror brought in line with runs/.

    All or nothing: every configured run must be there, and tables, figures and index are built in a
    temporary folder and swapped in only when all of them succeeded; on any error the previous reports
    stay as they were."""
    from zsl_bench.figures import write_figures
    from zsl_bench.records import newest_per_seed
    from zsl_bench.report import index_markdown, write_reports
    from zsl_bench.selection_gap import write_selection_gap

    results, ablation = configured_records(params, paths)
    notice = outside_notice(outside_records(paths, results + ablation))
    if notice:
        print(notice, file=sys.stderr)
    skipped, skipped_ablation = skipped_runs(params, paths)
    missing = missing_runs(params, paths, results, skipped)
    if missing:
        raise DataError(f"{paths.reports}: not rewritten, {len(missing)} configured run(s) have no finished run "
                        f"folder ({', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}); run `dvc repro` "
                        "to finish them (the previous reports are left as they were)")
    build = Path(tempfile.mkdtemp(prefix=".reports.tmp-", dir=paths.root))
    try:
        written = write_reports(results, build, ablation=ablation,
                                ablation_method=(params.get("ablate") or {}).get("method"), skipped=skipped,
                                skipped_ablation=skipped_ablation)
        written.append(write_comparisons(params, results, build, skipped))
        written += write_figures(newest_per_seed(results), build, progress=progress)
        written += write_selection_gap(newest_per_seed(results), build)
        (build / "README.md").write_text(index_markdown(written, build))
        written = [paths.reports / p.relative_to(build) for p in [*written, build / "README.md"]]
        _swap_in(build, paths.reports)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    if section(params, "tracking", "mlflow"):
        mlflow_sync(paths, reports=written, params=params)
        from zsl_bench.tracking import configured_uri, ui_hint

        print(f"MLflow: {ui_hint(configured_uri(params, paths))}", file=sys.stderr)
    return written


def mirror(params: dict, paths: ProjectPaths) -> tuple[int, int] | None:
    """DVC's `mirror` stage, run on every `dvc repro` (`always_changed`): the MLflow mirror is derived state,
    like a cache, and DVC skips the report stage whenever reports/ matches (a fresh clone: the committed
    reports do), so this verifies the mirror against runs/ and reports/ and repairs what is missing or stale
    (seconds when it is current). Returns (created, deleted), or None with `tracking.mlflow: false`."""
    if not section(params, "tracking", "mlflow"):
        print("MLflow mirror: off (params.yaml tracking.mlflow: false)", file=sys.stderr)
        return None
    from zsl_bench.tracking import configured_uri, ui_hint

    reports = sorted(p for p in paths.reports.rglob("*") if p.is_file()) if paths.reports.is_dir() else []
    created, deleted = mlflow_sync(paths, reports=reports or None, params=params)
    print(f"MLflow mirror: {created} run(s) added, {deleted} removed; {ui_hint(configured_uri(params, paths))}",
          file=sys.stderr)
    return created, deleted


def write_comparisons(params: dict, records: list, out_dir: Path, skipped: dict) -> Path:
    """reports/comparisons.md: for each `compare.<name>` of params.yaml, `zsl-bench compare`'s tables of its
    methods on the current runs (mean ± std, paired Δ per seed with 95 % bootstrap intervals over test
    images), under the headline `val` selection and under each method's own `paper` rule."""
    from zsl_bench.compare import across_backbones, compare, render_md
    from zsl_bench.policies import COMPARISON_POLICIES
    from zsl_bench.records import newest_per_seed
    from zsl_bench.run_results import RunResult

    results = [RunResult.from_record(r) for r in newest_per_seed(records)]
    seeds = len(params["train"]["seeds"])
    parts = ["# Comparisons", "", "Generated by the report stage from params.yaml's `compare` section; do not edit "
             "by hand. Each table is `zsl-bench compare METHODS --selection POLICY` on the current runs.", ""]
    for name, entry in (params.get("compare") or {}).items():
        methods = list(entry["methods"])
        parts += [f"# {name}: {' vs '.join(methods)}", "", entry.get("question", ""), ""]
        missing = [m for m in methods if m.partition("@")[0] not in params["train"]["methods"]]
        if missing:
            parts.append(f"— skipped: {', '.join(missing)} not in train.methods\n")
            continue
        absent = sorted({m.partition("@")[2] for m in methods if "@" in m} - {b for _, b in feature_sets(params)})
        if absent:
            parts.append(f"— skipped: backbone {', '.join(absent)} not in `features`\n")
            continue
        rows, skips = (across_backbones(results, skipped, methods) if any("@" in m for m in methods)
                       else (results, skipped))
        for policy in COMPARISON_POLICIES:
            comps = compare(rows, methods, policy=policy, expected_seeds=seeds, skipped=skips)
            table = "\n" + render_md(comps, methods, f"run records in runs/ ({len(results)} current runs)")
            parts.append(table.replace("\n## ", f"\n## {policy} · ") if comps else f"— no runs of {', '.join(methods)}\n")
    if not params.get("compare"):
        parts.append("— none configured (params.yaml `compare: {name: {methods: [A, B, ...], question: ...}}`)")
    path = out_dir / "comparisons.md"
    path.write_text("\n".join(parts).rstrip() + "\n")
    return path


def _swap_in(build: Path, reports: Path) -> None:
    """Move the built files into reports/: each table by one rename, figures/ as a whole folder (so a
    figure of a method or dataset no longer configured does not linger)."""
    reports.mkdir(parents=True, exist_ok=True)
    figures = build / "figures"
    figures.mkdir(exist_ok=True)
    for f in build.iterdir():
        if f.is_file():
            os.replace(f, reports / f.name)
    old = reports / "figures"
    trash = reports / f".figures.old-{os.getpid()}"
    if old.exists():
        os.replace(old, trash)
    os.replace(figures, old)
    shutil.rmtree(trash, ignore_errors=True)


def mlflow_sync(paths: ProjectPaths, reports: list[Path] | None = None, params: dict | None = None) -> tuple[int, int]:
    """The one writer of the MLflow mirror: rebuild it from the run folders below runs/ (they are the
    truth), plus one `report/<dataset>` run per dataset with `reports` files, in the store params.yaml's
    `tracking.uri` names (`tracking.configured_uri`; without `params`, read from params.yaml). Returns
    (created, deleted)."""
    from mlflow.exceptions import MlflowException

    from zsl_bench.records import find_records
    from zsl_bench.tracking import configured_uri, is_server, sync

    if params is None:
        params = tracking_params(paths)
    uri = configured_uri(params, paths)
    try:
        return sync(find_records(paths.runs), uri, paths.mlflow_artifacts, reports=reports)
    except MlflowException as e:
        if not is_server(uri):
            raise
        raise DataError(f"MLflow tracking server {uri} (params.yaml tracking.uri): "
                        f"{str(e).strip().splitlines()[0][:300]}") from e


def tracking_params(paths: ProjectPaths) -> dict:
    """params.yaml, checked, when the project has one (a bare runs folder has none: the default mirror)."""
    from zsl_bench.params import load_params

    return load_params(paths) if (paths.root / "params.yaml").is_file() else {}
