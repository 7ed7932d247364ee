"""The report stage: the run records params.yaml names → reports/ (tables, figures, index) → the MLflow
mirror. It reads run folders only: no model, dataset or feature store (dvc.yaml lists what it imports)."""
from __future__ import annotations

from pathlib import Path

from zsl_bench.io import DataError
from zsl_bench.params import section
from zsl_bench.paths import ProjectPaths


def configured_records(params: dict, paths: ProjectPaths) -> tuple[list, list]:
    """(records of the compared methods, records of the ablation) that params.yaml asks for."""
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


def report(params: dict, paths: ProjectPaths, progress: bool = True) -> list[Path]:
    """reports/ from the run records params.yaml names (nothing else: no model, dataset or feature
    store is read), then the MLflow mirror brought in line with runs/."""
    from zsl_bench.figures import write_figures
    from zsl_bench.records import newest_per_seed
    from zsl_bench.report import index_markdown, write_reports

    results, ablation = configured_records(params, paths)
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
