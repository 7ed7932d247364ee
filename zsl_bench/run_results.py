"""What tables are made of: one finished run's numbers, read from its run record or from the MLflow mirror.

Both sources give the same `RunResult`s (a test checks), so `compare` answers the same either way.
The MLflow mirror in a local sqlite file is read with plain SQL over MLflow's core tracking tables
(experiments, runs, tags, latest_metrics): importing MLflow alone takes longer than the whole
comparison should. Any other tracking URI goes through `MlflowClient`.
"""
from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from zsl_bench.protocol import PROTOCOL_VERSION, SELECTION_POLICIES
from zsl_bench.tracking import TABLE_METRICS, experiment_name


@dataclass(frozen=True)
class RunResult:
    dataset: str
    method: str
    seed: int
    run_key: str
    created_unix: float
    uses_unseen_semantics: bool
    wall_s: float
    metrics: dict          # policy → metric → fraction (NaN when the run has none)
    predictions: Path | None

    @classmethod
    def from_record(cls, r: dict) -> "RunResult":
        folder = r.get("_folder")
        predictions = Path(folder) / "predictions.npz" if folder else None
        return cls(dataset=r["dataset"], method=r["method"], seed=int(r["seed"]), run_key=r["run_key"],
                   created_unix=float(r.get("created_unix", 0.0)),
                   uses_unseen_semantics=bool(r["method_info"]["uses_unseen_semantics"]),
                   wall_s=float(r["resources"]["wall_s"]),
                   metrics={p: {k: float(r["selection"][p]["metrics"].get(k, math.nan)) for k in TABLE_METRICS}
                            for p in SELECTION_POLICIES},
                   predictions=predictions if predictions and predictions.is_file() else None)


def latest_per_seed(results: list[RunResult]) -> list[RunResult]:
    """If a (dataset, method, seed) was run with several configurations, keep the newest."""
    newest: dict[tuple, RunResult] = {}
    for r in results:
        k = (r.dataset, r.method, r.seed)
        if k not in newest or r.created_unix > newest[k].created_unix:
            newest[k] = r
    return sorted(newest.values(), key=lambda r: (r.dataset, r.method, r.seed))


def _from_mlflow_rows(runs: dict[str, dict]) -> list[RunResult]:
    """`runs`: run id → {"tags": {...}, "metrics": {...}, "artifact_uri": str}."""
    out = []
    for run in runs.values():
        tags, metrics = run["tags"], run["metrics"]
        if "run_key" not in tags:   # e.g. a report run: no method, no seed
            continue
        artifacts = _local_path(run["artifact_uri"])
        predictions = artifacts / "predictions.npz" if artifacts else None
        out.append(RunResult(
            dataset=tags["dataset"], method=tags["method"], seed=int(tags["seed"]), run_key=tags["run_key"],
            created_unix=float(tags.get("created_unix", 0.0)),
            uses_unseen_semantics=tags.get("uses_unseen_semantics") == "true",
            wall_s=float(metrics.get("wall_s", math.nan)),
            metrics={p: {k: float(metrics.get(f"{p}.{k}", math.nan)) for k in TABLE_METRICS}
                     for p in SELECTION_POLICIES},
            predictions=predictions if predictions and predictions.is_file() else None))
    return out


def _local_path(uri: str | None) -> Path | None:
    if not uri:
        return None
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path))
    return None


def sqlite_file(tracking_uri: str) -> Path | None:
    return Path(tracking_uri.removeprefix("sqlite:///")) if tracking_uri.startswith("sqlite:///") else None


def from_mlflow(tracking_uri: str, protocol_version: str = PROTOCOL_VERSION) -> list[RunResult]:
    name = experiment_name(protocol_version)
    db = sqlite_file(tracking_uri)
    runs: dict[str, dict] = {}
    if db is not None:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            rows = con.execute(
                "SELECT r.run_uuid, r.artifact_uri FROM runs r JOIN experiments e "
                "ON r.experiment_id = e.experiment_id WHERE e.name = ? AND e.lifecycle_stage = 'active' "
                "AND r.lifecycle_stage = 'active'", (name,)).fetchall()
            runs = {rid: {"artifact_uri": uri, "tags": {}, "metrics": {}} for rid, uri in rows}
            for rid, key, value in con.execute("SELECT run_uuid, key, value FROM tags"):
                if rid in runs:
                    runs[rid]["tags"][key] = value
            for rid, key, value in con.execute("SELECT run_uuid, key, value FROM latest_metrics"):
                if rid in runs:
                    runs[rid]["metrics"][key] = value
    else:
        from zsl_bench.tracking import client

        c = client(tracking_uri)
        exp = c.get_experiment_by_name(name)
        for run in (c.search_runs([exp.experiment_id], max_results=50000) if exp else []):
            runs[run.info.run_id] = {"artifact_uri": run.info.artifact_uri, "tags": dict(run.data.tags),
                                     "metrics": dict(run.data.metrics)}
    return _from_mlflow_rows(runs)


def load_results(runs_dir: Path, tracking_uri: str | None, source: str = "auto") -> tuple[list[RunResult], str]:
    """The newest result per (dataset, method, seed) and a line saying where they were read from.

    `auto` reads the MLflow mirror when there is one, the run records otherwise."""
    db = sqlite_file(tracking_uri) if tracking_uri else None
    use_mlflow = source == "mlflow" or (source == "auto" and tracking_uri and (db is None or db.is_file()))
    if use_mlflow:
        if db is not None and not db.is_file():
            raise FileNotFoundError(f"{db}: no MLflow database (run `dvc repro` or `zsl-bench report`)")
        results = from_mlflow(tracking_uri)
        where = f"MLflow {tracking_uri}, experiment {experiment_name()}"
    else:
        from zsl_bench.records import find_records

        results = [RunResult.from_record(r) for r in find_records(runs_dir)]
        where = f"run records in {runs_dir}"
    results = latest_per_seed(results)
    return results, f"{where} ({len(results)} runs)"
