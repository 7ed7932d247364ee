"""MLflow as a mirror of the run records (never the only copy: `sync` rebuilds it from records).

One experiment per protocol version; one MLflow run per run record, found again by its
`run_key` tag, so mirroring twice changes nothing. Metrics are named `<policy>.<metric>`
(`val.H`, `oracle.T1`, ...); the headline policy is `val`.
"""
from __future__ import annotations

import os
from pathlib import Path

from zsl_bench.protocol import PROTOCOL_VERSION, SELECTION_POLICIES

TABLE_METRICS = ("T1", "U", "S", "H", "AUSUC")


def experiment_name(protocol_version: str = PROTOCOL_VERSION) -> str:
    return f"zsl-bench/{protocol_version}"


def _client(tracking_uri: str):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no phoning home from a benchmark
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _experiment_id(client, name: str, artifact_root: Path) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=Path(artifact_root).resolve().as_uri())


def record_metrics(record: dict) -> dict[str, float]:
    out = {}
    for policy in SELECTION_POLICIES:
        for k, v in record["selection"][policy]["metrics"].items():
            if isinstance(v, (int, float)) and v == v:  # skip NaN
                out[f"{policy}.{k}"] = float(v)
    out["wall_s"] = float(record["resources"]["wall_s"])
    out["peak_rss_mb"] = float(record["resources"]["peak_rss_mb"])
    return out


def record_params(record: dict) -> dict[str, str]:
    params = {f"val.{k}": str(v) for k, v in record["hparams"]["val"].items()}
    params.update({f"default.{k}": str(v) for k, v in record["hparams"]["last"].items()})
    params.update({"fold": str(record["config"]["fold"]), "selection_metric": record["config"]["selection_metric"],
                   "n_configs": str(len(record["config"]["configs"])),
                   "backbone": str(record["data"]["features"]["backbone"].get("arch")),
                   "input_kind": record["method_info"]["input_kind"]})
    return params


def record_tags(record: dict) -> dict[str, str]:
    return {"method": record["method"], "dataset": record["dataset"], "seed": str(record["seed"]),
            "selection": "val", "protocol_version": record["protocol_version"], "run_key": record["run_key"],
            "uses_unseen_semantics": str(record["method_info"]["uses_unseen_semantics"]).lower(),
            "mlflow.runName": run_name(record)}


def run_name(record: dict) -> str:
    return f"{record['method']}/{record['dataset']}/seed{record['seed']}"


def mirror(records: list[dict], tracking_uri: str, artifact_root: Path) -> int:
    """Create the MLflow runs that are missing; returns how many were created."""
    from mlflow.entities import Metric, Param, RunTag

    if not records:
        return 0
    client = _client(tracking_uri)
    created = 0
    for record in records:
        exp_id = _experiment_id(client, experiment_name(record["protocol_version"]), artifact_root)
        found = client.search_runs([exp_id], filter_string=f"tags.run_key = '{record['run_key']}'", max_results=1)
        if found:
            continue
        run = client.create_run(exp_id, run_name=run_name(record), tags=record_tags(record))
        ts = int(record.get("created_unix", 0) * 1000)
        client.log_batch(run.info.run_id,
                         metrics=[Metric(k, v, ts, 0) for k, v in record_metrics(record).items()],
                         params=[Param(k, v) for k, v in record_params(record).items()],
                         tags=[RunTag("record_folder", record["_folder"])])
        client.log_artifact(run.info.run_id, str(Path(record["_folder"]) / "record.json"))
        client.set_terminated(run.info.run_id)
        created += 1
    return created
