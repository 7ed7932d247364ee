"""What tables are made of: one finished run's numbers, read from its run record or from MLflow.

Both sources give the same `RunResult`s (a test checks), so `compare` answers the same either way.
Run records are the default and the truth; MLflow is read through `MlflowClient` only (never its
tables directly), for a team's tracking server whose runs are not on this disk. A run's predictions.npz
(for the bootstrap intervals, with the record.json beside it) is read in place from a local artifact store,
and downloaded once from a server into a cache (`prediction_cache`; a complete run's artifacts never change).
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import unquote, urlparse

from zsl_bench.protocol import PROTOCOL_VERSION, TABLE_METRICS
from zsl_bench.policies import POLICIES
from zsl_bench.records import RunRecord, feature_set_label, newest_per_seed
from zsl_bench.tracking import experiment_name

SOURCES = ("auto", "records", "mlflow")


@dataclass(frozen=True)
class RunResult:
    dataset: str           # `<dataset>/<backbone>` (records.feature_set_label): what compare groups by
    method: str
    seed: int
    run_key: str
    created_unix: float
    uses_unseen_semantics: bool
    wall_s: float
    metrics: dict          # policy → metric → percent (NaN when the run has none)
    predictions: Path | None
    searched: bool = True  # more than one hyperparameter configuration was tried on validation
    input_kind: str = ""   # what the method read: pooled vectors, maps (frozen backbone) or images (fine-tuned)
    precision: str = "fp32"   # the torch fits' precision: anything else is marked next to the method in tables
    mlflow_run_id: str = ""   # set when read from MLflow with artifacts not on this disk (see `_with_predictions`)

    @property
    def feature_set(self) -> str:
        return self.dataset

    @classmethod
    def from_record(cls, r: RunRecord) -> "RunResult":
        predictions = r.folder / "predictions.npz"
        return cls(dataset=r.feature_set, method=r.method, seed=r.seed, run_key=r.run_key, created_unix=r.created_unix,
                   uses_unseen_semantics=r.uses_unseen_semantics, wall_s=r.wall_s,
                   metrics={p: r.metrics(p) for p in POLICIES},
                   predictions=predictions if predictions.is_file() else None, searched=r.searched,
                   input_kind=r["method_info"]["input_kind"], precision=r.precision)

    @classmethod
    def from_mlflow_run(cls, run) -> "RunResult | None":
        """An MLflow run mirrored by `tracking` to the end (None for other runs: a report run, or a mirror
        interrupted half-way, which the next `sync` repairs)."""
        from zsl_bench.tracking import COMPLETE_TAG

        tags, metrics = run.data.tags, run.data.metrics
        if "run_key" not in tags or tags.get(COMPLETE_TAG) != "true" or tags.get("stage") == "ablation":
            return None   # compare reads the train stage's runs, as from run records
        artifacts = _local_path(run.info.artifact_uri)
        predictions = artifacts / "predictions.npz" if artifacts else None
        return cls(dataset=feature_set_label(tags["dataset"], tags.get("backbone_name", "")), method=tags["method"], seed=int(tags["seed"]), run_key=tags["run_key"],
                   created_unix=float(tags.get("created_unix", 0.0)),
                   uses_unseen_semantics=tags.get("uses_unseen_semantics") == "true",
                   wall_s=float(metrics.get("wall_s", math.nan)),
                   metrics={p: {k: float(metrics.get(f"{p}.{k}", math.nan)) for k in TABLE_METRICS}
                            for p in POLICIES},
                   predictions=predictions if predictions and predictions.is_file() else None,
                   searched=int(run.data.params.get("n_configs", 2)) > 1,
                   input_kind=run.data.params.get("input_kind", ""),
                   precision=run.data.params.get("precision", "fp32"),
                   mlflow_run_id="" if artifacts else run.info.run_id)


def _local_path(uri: str | None) -> Path | None:
    if not uri:
        return None
    parsed = urlparse(uri)
    return Path(unquote(parsed.path)) if parsed.scheme in ("", "file") else None


def from_mlflow(tracking_uri: str, protocol_version: str = PROTOCOL_VERSION) -> list[RunResult]:
    """The mirrored runs; none, and nothing created, when a local SQLite mirror does not exist yet (MLflow would
    make an empty database just by being asked)."""
    from zsl_bench.tracking import client

    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite" and parsed.path and not Path(unquote(parsed.path)[1:]).exists():
        return []   # sqlite:///relative or sqlite:////absolute: the file path follows the third slash
    c = client(tracking_uri)
    exp = c.get_experiment_by_name(experiment_name(protocol_version))
    runs = c.search_runs([exp.experiment_id], max_results=50000) if exp else []
    return [r for r in map(RunResult.from_mlflow_run, runs) if r is not None]


def prediction_cache() -> Path:
    """Where predictions.npz downloaded from a tracking server are kept, one folder per MLflow run id."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "zsl-bench" / "mlflow-predictions"


def _with_predictions(result: RunResult, tracking_uri: str) -> RunResult:
    """`result` with its predictions.npz downloaded from the server (None where the run has none)."""
    if not result.mlflow_run_id or result.predictions is not None:
        return result
    from mlflow.exceptions import MlflowException

    from zsl_bench.tracking import client

    target = prediction_cache() / result.mlflow_run_id / "predictions.npz"
    if not target.is_file():   # with its record.json, which says which checkpoint each array holds
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
        try:
            for name in ("record.json", "predictions.npz"):   # predictions.npz last: its presence means both
                os.replace(client(tracking_uri).download_artifacts(result.mlflow_run_id, name, str(tmp)),
                           target.parent / name)
        except (MlflowException, OSError):
            return result   # the run has no predictions.npz: compare says so in its cells
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return replace(result, predictions=target)


def load_results(runs_dir: Path, tracking_uri: str | None, source: str = "auto",
                 keep: set[str] | None = None) -> tuple[list[RunResult], str]:
    """The newest result per (dataset, method, seed) and a line saying where they were read from; with
    `keep`, only the runs with those keys (the current results params.yaml names).

    `auto` and `records` read the run records below `runs_dir`; `mlflow` reads the tracking URI
    (`MLFLOW_TRACKING_URI` when set, else `tracking_uri`: params.yaml's `tracking.uri` or the project's
    mirror, `tracking.configured_uri`)."""
    uri = None
    if source == "mlflow":
        uri = os.environ.get("MLFLOW_TRACKING_URI") or tracking_uri
        results = from_mlflow(uri)
        where = f"MLflow {uri}, experiment {experiment_name()}"
    else:
        from zsl_bench.records import find_records

        results = [RunResult.from_record(r) for r in find_records(runs_dir)]
        where = f"run records in {runs_dir}"
    if keep is not None:
        results = [r for r in results if r.run_key in keep]
    results = sorted(newest_per_seed(results), key=lambda r: (r.dataset, r.method, r.seed))
    if uri:
        results = [_with_predictions(r, uri) for r in results]
    return results, where
