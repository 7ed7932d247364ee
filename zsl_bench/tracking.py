"""MLflow as a mirror of the run records (never the only copy: `sync` rebuilds it from records).

One experiment per protocol version; one MLflow run per run record, found again by its
`run_key` tag, so mirroring twice changes nothing. Metrics are named `<policy>.<metric>`
(`val.H`, `oracle.T1`, ...) and are in percent like every table (`protocol.as_percent`), except
`<policy>.gamma` (the calibration offset), `wall_s` (seconds) and `peak_rss_mb`; the headline policy is
`val`. Each run's start and end are the run's own (its provenance.json), not the time of mirroring. Each run carries the record and
`predictions.npz` as artifacts; tags and metrics are enough to rebuild every table
(`zsl_bench.run_results.from_mlflow`). A run mirrored by an older version of this module
(`MIRROR_VERSION` tag) is replaced by `sync`.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from zsl_bench.protocol import PROTOCOL_VERSION, as_percent
from zsl_bench.selection import SELECTION_POLICIES

# Marks a model-training experiment. MLflow 3.17's UI takes the mode from its sidebar switch instead
# ("GenAI" / "Model training", remembered by the browser): `ui_hint` says so to the user.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
DESCRIPTION = ("zsl-bench runs, one per run record (runs/). Metrics `<policy>.<metric>` are in percent, "
               "as in reports/; `<policy>.gamma` is the calibration offset; `wall_s` in seconds.")
MIRROR_VERSION = "5"   # bump when what a mirrored run holds changes: `sync` then replaces older runs
NOT_PERCENT = ("gamma",)   # selection metrics that are not accuracies
COMPLETE_TAG = "zsl_bench.mirror_complete"   # written last; a run without it was interrupted


def experiment_name(protocol_version: str = PROTOCOL_VERSION) -> str:
    return f"zsl-bench/{protocol_version}"


def client(tracking_uri: str):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no phoning home from a benchmark
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _experiment_id(c, name: str, artifact_root: Path) -> str:
    exp = c.get_experiment_by_name(name)
    if exp is None:
        exp_id = c.create_experiment(name, artifact_location=Path(artifact_root).resolve().as_uri())
    else:
        exp_id = exp.experiment_id
        if exp.tags.get(EXPERIMENT_KIND[0]) == EXPERIMENT_KIND[1] and exp.tags.get("mlflow.note.content") == DESCRIPTION:
            return exp_id
    c.set_experiment_tag(exp_id, *EXPERIMENT_KIND)
    c.set_experiment_tag(exp_id, "mlflow.note.content", DESCRIPTION)   # the experiment's description in the UI
    return exp_id


def ui_hint(tracking_uri: str, protocol_version: str = PROTOCOL_VERSION) -> str:
    """How to open the runs table of the mirror in `mlflow ui` (MLflow 3 opens in GenAI mode)."""
    exp = client(tracking_uri).get_experiment_by_name(experiment_name(protocol_version))
    where = f"#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning" if exp else "#/experiments"
    return (f"mlflow ui --backend-store-uri {tracking_uri}, then choose \"Model training\" at the top of the "
            f"sidebar (MLflow 3 opens in GenAI mode; the browser remembers) or open http://127.0.0.1:5000/{where}")


def record_metrics(record) -> dict[str, float]:
    """A RunRecord's metrics as mirrored: accuracies in percent, γ as is, time and memory when known."""
    out = {}
    for policy in SELECTION_POLICIES:
        for k, v in (record["selection"].get(policy) or {}).get("metrics", {}).items():
            if isinstance(v, (int, float)):
                out[f"{policy}.{k}"] = float(v) if k in NOT_PERCENT else as_percent(v)
    out.update(wall_s=record.wall_s, peak_rss_mb=record.peak_rss_mb)
    return {k: v for k, v in out.items() if v == v}   # MLflow gets no NaN


def record_params(record: dict) -> dict[str, str]:
    params = {f"val.{k}": str(v) for k, v in record["hparams"]["val"].items()}
    params.update({f"default.{k}": str(v) for k, v in record["hparams"]["last"].items()})
    params.update({"folds": ",".join(map(str, record["config"]["folds"])), "search": record["config"]["search"],
                   "selection_metric": record["config"]["selection_metric"],
                   "n_configs": str(len(record["config"]["configs"])),
                   "backbone": str(record["data"]["features"]["backbone"].get("arch")),
                   "input_kind": record["method_info"]["input_kind"]})
    return params


def record_tags(record: dict) -> dict[str, str]:
    return {"method": record["method"], "dataset": record["dataset"], "seed": str(record["seed"]),
            "selection": "val", "protocol_version": record["protocol_version"], "run_key": record["run_key"],
            "uses_unseen_semantics": str(record["method_info"]["uses_unseen_semantics"]).lower(),
            "created_unix": repr(record.created_unix), "zsl_bench.mirror_version": MIRROR_VERSION,
            "stage": record.stage, "replicate": str(record.get("replicate", 0)), "mlflow.runName": run_name(record)}


def run_name(record: dict) -> str:
    where = "/ablation" if record.stage == "ablation" else ""
    return f"{record.method}/{record['dataset']}{where}/seed{record['seed']}"


def _runs_by_key(c, exp_id: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for run in c.search_runs([exp_id], filter_string="tags.run_key != ''", max_results=50000):
        out.setdefault(run.data.tags["run_key"], []).append(run)
    return out


def _complete(run) -> bool:
    """A mirrored run counts only if this version mirrored it to the end: the COMPLETE tag is written after
    metrics, params and artifacts, and the run is FINISHED. A mirror killed half-way leaves neither."""
    return (run.data.tags.get("zsl_bench.mirror_version") == MIRROR_VERSION
            and run.data.tags.get(COMPLETE_TAG) == "true" and run.info.status == "FINISHED")


def _mirror(records: list[dict], tracking_uri: str, artifact_root: Path) -> int:
    """Create the MLflow runs that are missing or incomplete (a mirror interrupted half-way, an older
    MIRROR_VERSION): those are deleted and mirrored again. Returns how many were created."""
    from mlflow.entities import Metric, Param, RunTag

    if not records:
        return 0
    c = client(tracking_uri)
    created = 0
    mirrored: dict[str, tuple[str, dict]] = {}   # experiment name → (id, run_key → its MLflow runs), read once
    for record in records:
        exp_name = experiment_name(record["protocol_version"])
        if exp_name not in mirrored:
            exp_id = _experiment_id(c, exp_name, artifact_root)
            mirrored[exp_name] = (exp_id, _runs_by_key(c, exp_id))
        exp_id, by_key = mirrored[exp_name]
        found = by_key.get(record["run_key"], [])
        if any(_complete(r) for r in found):
            continue
        for old in found:
            c.delete_run(old.info.run_id)
        # The run's own times: it ended when its record was written, after `wall_s` of work (both from its
        # provenance.json; a folder restored from DVC's cache has none, and MLflow then shows the mirror's).
        end = int(record.created_unix * 1000)
        start = end - int(1000 * record.wall_s) if end and record.wall_s == record.wall_s else None
        run = c.create_run(exp_id, start_time=start, run_name=run_name(record),
                           tags=record_tags(record))
        c.log_batch(run.info.run_id,
                    metrics=[Metric(k, v, end or int(time.time() * 1000), 0) for k, v in record_metrics(record).items()],
                    params=[Param(k, v) for k, v in record_params(record).items()],
                    tags=[RunTag("record_folder", record["_folder"])])
        folder = Path(record["_folder"])
        for name in ("record.json", "predictions.npz"):
            if (folder / name).is_file():
                c.log_artifact(run.info.run_id, str(folder / name))
        c.set_terminated(run.info.run_id, end_time=end or None)
        c.set_tag(run.info.run_id, COMPLETE_TAG, "true")   # last: marks the run as mirrored to the end
        created += 1
    return created


def sync(records: list[dict], tracking_uri: str, artifact_root: Path, reports: list[Path] | None = None) -> tuple[int, int]:
    """The one writer of the mirror. Make it hold exactly `records` (the run folders that exist): create
    what is missing, replace runs mirrored by an older version, delete (MLflow's soft delete, restorable)
    runs of records that no longer exist, e.g. superseded by a rerun; then, with `reports`, one
    `report/<dataset>` run per dataset holding its tables and figures. Returns (created, deleted)."""
    created = _mirror(records, tracking_uri, artifact_root)
    keys = {r["run_key"] for r in records}
    c = client(tracking_uri)
    deleted = 0
    for version in {r["protocol_version"] for r in records} or {PROTOCOL_VERSION}:
        exp = c.get_experiment_by_name(experiment_name(version))
        if exp is None:
            continue
        for key, runs in _runs_by_key(c, exp.experiment_id).items():
            if key not in keys:
                for run in runs:
                    c.delete_run(run.info.run_id)
                    deleted += 1
    for dataset in sorted({r["dataset"] for r in records}) if reports else []:
        _log_report(dataset, [p for p in reports if p.suffix != ".png" or p.name.startswith(f"{dataset}_")],
                    tracking_uri, artifact_root)
    return created, deleted


def _log_report(dataset: str, files: list[Path], tracking_uri: str, artifact_root: Path,
               protocol_version: str = PROTOCOL_VERSION) -> str:
    """One run per dataset named `report/<dataset>` holding the tables and figures; replaced each time."""
    c = client(tracking_uri)
    exp_id = _experiment_id(c, experiment_name(protocol_version), artifact_root)
    for old in c.search_runs([exp_id], filter_string=f"tags.report_dataset = '{dataset}'", max_results=10):
        c.delete_run(old.info.run_id)
    run = c.create_run(exp_id, run_name=f"report/{dataset}",
                       tags={"report_dataset": dataset, "protocol_version": protocol_version})
    for f in files:
        c.log_artifact(run.info.run_id, str(f), artifact_path="figures" if f.suffix == ".png" else None)
    c.set_terminated(run.info.run_id)
    return run.info.run_id
