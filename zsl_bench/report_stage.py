"""The report stage: the run records params.yaml names → reports/ (tables, figures, index) → the MLflow
mirror. It reads run folders only: no model, dataset or feature store (dvc.yaml lists what it imports)."""
from __future__ import annotations

import sys
from pathlib import Path

from zsl_bench.io import DataError
from zsl_bench.params import section
from zsl_bench.paths import ProjectPaths


def configured_records(params: dict, paths: ProjectPaths) -> tuple[list, list]:
    """The current results, one definition for report, figures and compare: (records of the compared
    methods, records of the ablation) in the slots params.yaml configures (datasets × methods × seeds, and
    the ablation's variants × seeds). Callers keep the newest per seed (`records.newest_per_seed`)."""
    from zsl_bench.records import find_records

    datasets, seeds = section(params, "datasets"), section(params, "train", "seeds")
    methods = section(params, "train", "methods")
    ablate = params.get("ablate") or {}
    base = ablate.get("method")
    results, ablation = [], []
    for dataset in datasets:
        for method in methods:
            for seed in seeds:
                for r in find_records(paths.run_slot(dataset, method, seed)):
                    if r["method"] == method:
                        results.append(r)
                    if base and (r["method"] == base or r["method"].startswith(base + ".")):
                        ablation.append(r)
        for variant in ablate.get("variants", []):
            for seed in ablate.get("seeds", []):
                ablation += find_records(paths.ablation_slot(dataset, f"{base}.{variant}", seed))
    return results, ablation


def outside_records(params: dict, paths: ProjectPaths) -> list:
    """Records below runs/ that params.yaml does not configure (an extra seed from `zsl-bench train`, a
    method or seed removed from params.yaml): never averaged in, only named."""
    from zsl_bench.records import find_records

    results, ablation = configured_records(params, paths)
    inside = {r.folder for r in results + ablation}
    return [r for r in find_records(paths.runs) if r.folder not in inside]


def outside_notice(outside: list) -> str:
    """One line naming the runs left out, or '' when there are none."""
    if not outside:
        return ""
    names = sorted({f"{r.method}/{r.dataset}/seed{r.seed}" for r in outside})
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    return (f"note: {len(outside)} run(s) below runs/ are outside params.yaml and not counted: {shown} "
            "(add them to params.yaml to count them)")


def report(params: dict, paths: ProjectPaths, progress: bool = True) -> list[Path]:
    """reports/ from the run records params.yaml names (nothing else: no model, dataset or feature
    store is read), then the MLflow mirror brought in line with runs/."""
    from zsl_bench.figures import write_figures
    from zsl_bench.records import newest_per_seed
    from zsl_bench.report import index_markdown, write_reports

    results, ablation = configured_records(params, paths)
    notice = outside_notice(outside_records(params, paths))
    if notice:
        print(notice, file=sys.stderr)
    if not results:
        raise DataError(f"{paths.runs}: no finished runs of the configured methods; run the train stages first "
                        "(`dvc repro`)")
    written = write_reports(results, paths.reports, ablation=ablation,
                            ablation_method=(params.get("ablate") or {}).get("method"))
    for stale in (paths.reports / "figures").glob("*.png"):
        stale.unlink()   # a figure of a method or dataset no longer configured must not linger
    written += write_figures(newest_per_seed(results), paths.reports, progress=progress)
    index = paths.reports / "README.md"
    index.write_text(index_markdown(written, paths.reports))
    written.append(index)
    if section(params, "tracking", "mlflow"):
        mlflow_sync(paths, reports=written)
    return written


def mlflow_sync(paths: ProjectPaths, reports: list[Path] | None = None) -> tuple[int, int]:
    """The one writer of the MLflow mirror: rebuild it from the run folders below runs/ (they are the
    truth), plus one `report/<dataset>` run per dataset with `reports` files. Returns (created, deleted)."""
    from zsl_bench.records import find_records
    from zsl_bench.tracking import sync

    return sync(find_records(paths.runs), paths.tracking_uri, paths.mlflow_artifacts, reports=reports)
