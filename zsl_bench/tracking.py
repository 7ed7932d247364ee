"""MLflow as a mirror of the run records (never the only copy: `sync` rebuilds it from records).

One experiment per protocol version; one MLflow run per run record, found again by its
`run_key` tag, so mirroring twice changes nothing. Metrics are named `<policy>.<metric>`
(`val.H`, `oracle.T1`, ...) and are in percent like every table (`protocol.as_percent`), except
`<policy>.gamma` (the calibration offset), `wall_s` (seconds) and `peak_rss_mb`; the headline policy is
`val`. Each run's start and end are the run's own (its provenance.json), not the time of mirroring. Each run carries the record and
`predictions.npz` as artifacts; tags and metrics are enough to rebuild every table
(`zsl_bench.run_results.from_mlflow`). A run mirrored by an older version of this module
(`MIRROR_VERSION` tag) is replaced by `sync`.

Where: params.yaml's `tracking.uri` (`configured_uri`), by default the project's sqlite file; it may name a
team's tracking server (`http://host:5000`), which then chooses where artifacts go. Any number of `sync`s
may write into one store at once: the experiment is created or found whatever the order
(`ensure_experiment`), a record's run is written whole before it counts (COMPLETE_TAG), and of several
complete runs of one record the one with the smallest run id is kept, so every writer deletes the same
others; after a last `sync` each record has exactly one complete run. A `sync` deletes only runs that this
machine mirrored (`HOST_TAG`) and whose record folder is gone, never another writer's.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from zsl_bench.protocol import PROTOCOL_VERSION, TABLE_METRICS, as_percent
from zsl_bench.policies import HEADLINE_POLICY, POLICIES, evaluate

if TYPE_CHECKING:
    from zsl_bench.paths import ProjectPaths

# Marks a model-training experiment. MLflow 3.17's UI takes the mode from its sidebar switch instead
# ("GenAI" / "Model training", remembered by the browser): `ui_hint` says so to the user.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
DESCRIPTION = ("zsl-bench runs, one per run record (runs/). Metrics `<policy>.<metric>` are in percent, "
               "as in reports/; `<policy>.gamma` is the calibration offset; `wall_s` in seconds.")
MIRROR_VERSION = "7"   # 7: backbone_name and feature_set tags; bump when what a mirrored run holds changes: `sync` then replaces older runs
HEADLINE = HEADLINE_POLICY       # its metrics are also logged under their short names (T1, U, S, H, AUSUC): the columns
                       # a reader looks for first; every policy's stay as `<policy>.<metric>`
NOT_PERCENT = ("gamma",)   # selection metrics that are not accuracies
COMPLETE_TAG = "zsl_bench.mirror_complete"   # written last; a run without it was interrupted
HOST_TAG = "zsl_bench.mirror_host"   # the machine whose record folder a run mirrors (absent: this machine)
SERVER_SCHEMES = ("http", "https")   # a tracking server: it stores artifacts where it is configured to
PAGE = 5000                          # runs per search request (MLflow servers refuse more than 50,000)


def configured_uri(params: dict | None, paths: "ProjectPaths") -> str:
    """The one place the mirror's tracking URI comes from: params.yaml's `tracking.uri` (a tracking server
    `http://host:5000` or any MLflow store URI), else (null, or no params) the project's own sqlite file.
    A relative path in a local URI (`sqlite:///mlflow.db`, `mlruns`) is relative to the project folder."""
    uri = ((params or {}).get("tracking") or {}).get("uri")
    if not uri:
        return paths.tracking_uri
    if "://" not in uri and ":" not in uri.split("/")[0]:   # a plain path: MLflow's file store
        return str((paths.root / uri).resolve())
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{(paths.root / uri[len('sqlite:///'):]).resolve()}"
    return uri


def is_server(tracking_uri: str) -> bool:
    """True for a tracking server reached over HTTP(S); false for a store this process opens itself."""
    return urlparse(tracking_uri).scheme in SERVER_SCHEMES


def experiment_name(protocol_version: str = PROTOCOL_VERSION) -> str:
    return f"zsl-bench/{protocol_version}"


def client(tracking_uri: str):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no phoning home from a benchmark
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def ensure_experiment(tracking_uri: str, artifact_root: Path | None,
                      protocol_version: str = PROTOCOL_VERSION) -> str:
    """Create the mirror's experiment, or find it, and return its id. Safe to call from any number of
    processes at once; sweeps call it once before they fan out, so their workers only ever find it. A
    tracking server chooses the artifact location itself (it proxies artifacts); a local store gets
    `artifact_root`."""
    return _experiment_id(client(tracking_uri), experiment_name(protocol_version), artifact_root,
                          local=not is_server(tracking_uri))


def _experiment_id(c, name: str, artifact_root: Path | None, local: bool = True) -> str:
    from mlflow.exceptions import MlflowException

    tags = dict([EXPERIMENT_KIND, ("mlflow.note.content", DESCRIPTION)])   # the note: its description in the UI
    exp = c.get_experiment_by_name(name)
    if exp is None:
        location = Path(artifact_root).resolve().as_uri() if local and artifact_root is not None else None
        try:
            return c.create_experiment(name, artifact_location=location, tags=tags)
        except MlflowException:   # another writer created it since we looked (RESOURCE_ALREADY_EXISTS)
            exp = c.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":   # deleted by hand in the UI: its runs cannot be written otherwise
        c.restore_experiment(exp.experiment_id)
    for key, value in tags.items():
        if exp.tags.get(key) != value:
            c.set_experiment_tag(exp.experiment_id, key, value)
    return exp.experiment_id


def ui_hint(tracking_uri: str, protocol_version: str = PROTOCOL_VERSION) -> str:
    """How to open the runs table of the mirror in MLflow's UI (MLflow 3 opens in GenAI mode): a tracking
    server serves it at its own URL; a local store needs `mlflow ui`."""
    exp = client(tracking_uri).get_experiment_by_name(experiment_name(protocol_version))
    where = f"#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning" if exp else "#/experiments"
    mode = ("choose \"Model training\" at the top of the sidebar (MLflow 3 opens in GenAI mode; the browser "
            "remembers)")
    if is_server(tracking_uri):
        return f"open {tracking_uri.rstrip('/')}/{where} in a browser; if it shows GenAI, {mode}"
    return (f"mlflow ui --backend-store-uri {tracking_uri}, then {mode} or open http://127.0.0.1:5000/{where}")


def record_metrics(record) -> dict[str, float]:
    """A RunRecord's metrics as mirrored: accuracies in percent, γ as is, time and memory when known."""
    out = {}
    for policy in POLICIES:
        for k, v in (evaluate(record, policy) or {}).get("metrics", {}).items():
            if isinstance(v, (int, float)):
                out[f"{policy}.{k}"] = float(v) if k in NOT_PERCENT else as_percent(v)
    out.update({k: out[f"{HEADLINE}.{k}"] for k in TABLE_METRICS if f"{HEADLINE}.{k}" in out})
    out.update(wall_s=record.wall_s, peak_rss_mb=record.peak_rss_mb)
    return {k: v for k, v in out.items() if v == v}   # MLflow gets no NaN


def record_params(record: dict) -> dict[str, str]:
    configs = record["config"]["configs"]
    chosen = configs[evaluate(record, HEADLINE_POLICY)["config_id"]]
    params = {f"{HEADLINE_POLICY}.{k}": str(v) for k, v in chosen.items()}
    params.update({f"default.{k}": str(v) for k, v in configs[0].items()})
    params.update({"folds": ",".join(map(str, record["config"]["folds"])), "search": record["config"]["search"],
                   "selection_metric": record["config"]["selection_metric"],
                   "n_configs": str(len(record["config"]["configs"])),
                   "backbone": str(record["data"]["features"]["backbone"].get("arch")),
                   "input_kind": record["method_info"]["input_kind"], "precision": record.precision})
    return params


def record_tags(record: dict) -> dict[str, str]:
    """Tags a reader groups and filters by in the UI: method, dataset, seed, input regime, backbone,
    precision (and the bookkeeping the mirror itself needs)."""
    features = record["data"]["features"]
    return {"method": record["method"], "dataset": record["dataset"], "seed": str(record["seed"]),
            "input": record["method_info"]["input_kind"], "backbone": str(features["backbone"].get("arch")),
            "backbone_name": record["backbone"], "feature_set": record.feature_set,
            "precision": record.precision, "features": ",".join(features.get("arrays", [])),
            "selection": HEADLINE_POLICY, "protocol_version": record["protocol_version"], "run_key": record["run_key"],
            "uses_unseen_semantics": str(record["method_info"]["uses_unseen_semantics"]).lower(),
            "created_unix": repr(record.created_unix), "zsl_bench.mirror_version": MIRROR_VERSION,
            "stage": record.stage, "replicate": str(record.get("replicate", 0)), "mlflow.runName": run_name(record),
            "record_folder": str(record["_folder"]), HOST_TAG: socket.gethostname()}


def run_name(record: dict) -> str:
    """Short enough for the runs table's name column: the method and seed (the dataset has its own column,
    the MLflow dataset input), `abl.` for an ablation run."""
    where = " abl." if record.stage == "ablation" else ""
    return f"{record.method} s{record['seed']}{where}"


def dataset_input(record: dict):
    """The record's dataset as an MLflow dataset input (the runs table's Dataset column and its filter): name,
    the prepared dataset's fingerprint as digest, its features folder as source."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    source = json.dumps({"uri": record["data"]["features"]["path"]})
    return DatasetInput(Dataset(name=record["dataset"], digest=record["data"]["dataset_fingerprint"][:16],
                                source_type="local", source=source),
                        tags=[InputTag("mlflow.data.context", "train")])


def _search(c, exp_id: str, filter_string: str) -> list:
    """Every active run of the experiment that matches, page by page."""
    runs, token = [], None
    while True:
        page = c.search_runs([exp_id], filter_string=filter_string, max_results=PAGE, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _runs_by_key(c, exp_id: str, key: str | None = None) -> dict[str, list]:
    out: dict[str, list] = {}
    for run in _search(c, exp_id, f"tags.run_key = '{key}'" if key else "tags.run_key != ''"):
        out.setdefault(run.data.tags["run_key"], []).append(run)
    return out


def _complete(run) -> bool:
    """A mirrored run counts only if this version mirrored it to the end: the COMPLETE tag is written after
    metrics, params and artifacts, and the run is FINISHED. A mirror killed half-way leaves neither."""
    return (run.data.tags.get("zsl_bench.mirror_version") == MIRROR_VERSION
            and run.data.tags.get(COMPLETE_TAG) == "true" and run.info.status == "FINISHED")


def _delete(c, run_id: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        c.delete_run(run_id)
    except MlflowException:   # another writer deleted it first
        pass


def _keep_one(c, exp_id: str, key: str, runs: list) -> None:
    """Of a record's runs keep one complete run, the one with the smallest run id (every writer picks the
    same), and delete the rest: other complete copies, and incomplete ones (interrupted, from an older
    MIRROR_VERSION, or a concurrent writer's, which then sees the complete run and stops). Two writers that
    looked a moment apart can each delete the run the other kept (one saw the other's still unfinished);
    the record then has no run left, so the one that finds it so restores the run it kept."""
    complete = sorted((r for r in runs if _complete(r)), key=lambda r: r.info.run_id)
    if not complete:
        return
    for run in runs:
        if run is not complete[0]:
            _delete(c, run.info.run_id)
    if not any(map(_complete, _runs_by_key(c, exp_id, key).get(key, []))):
        c.restore_run(complete[0].info.run_id)


def _write_run(c, exp_id: str, record) -> None:
    """One record's MLflow run, written whole; COMPLETE_TAG last."""
    from mlflow.entities import Metric, Param

    # The run's own times: it ended when its record was written, after `wall_s` of work (both from its
    # provenance.json; a folder restored from DVC's cache has none, and MLflow then shows the mirror's).
    end = int(record.created_unix * 1000)
    start = end - int(1000 * record.wall_s) if end and record.wall_s == record.wall_s else None
    run = c.create_run(exp_id, start_time=start, run_name=run_name(record), tags=record_tags(record))
    c.log_batch(run.info.run_id,
                metrics=[Metric(k, v, end or int(time.time() * 1000), 0) for k, v in record_metrics(record).items()],
                params=[Param(k, v) for k, v in record_params(record).items()])
    c.log_inputs(run.info.run_id, datasets=[dataset_input(record)])
    folder = Path(record["_folder"])
    for name in ("record.json", "predictions.npz"):
        if (folder / name).is_file():
            c.log_artifact(run.info.run_id, str(folder / name))
    c.set_terminated(run.info.run_id, end_time=end or None)
    c.set_tag(run.info.run_id, COMPLETE_TAG, "true")   # last: marks the run as mirrored to the end


def _mirror_one(c, exp_id: str, record, tries: int = 3) -> int:
    """Write the record's run; 1 if this call wrote it, 0 if a concurrent writer's complete run won (ours
    was deleted under us, see `_keep_one`)."""
    from mlflow.exceptions import MlflowException

    for attempt in range(tries):
        try:
            _write_run(c, exp_id, record)
            return 1
        except MlflowException:
            if any(map(_complete, _runs_by_key(c, exp_id, record["run_key"]).get(record["run_key"], []))):
                return 0
            if attempt == tries - 1:
                raise
    return 0


def _mirror(records: list[dict], tracking_uri: str, artifact_root: Path) -> int:
    """Create the MLflow runs that are missing or incomplete (a mirror interrupted half-way, an older
    MIRROR_VERSION; those are deleted once a complete run is there), and leave one complete run per
    record. Returns how many runs this call created."""
    if not records:
        return 0
    c = client(tracking_uri)
    created = 0
    mirrored: dict[str, tuple[str, dict]] = {}   # experiment name → (id, run_key → its MLflow runs), read once
    for record in records:
        exp_name = experiment_name(record["protocol_version"])
        if exp_name not in mirrored:
            exp_id = ensure_experiment(tracking_uri, artifact_root, record["protocol_version"])
            mirrored[exp_name] = (exp_id, _runs_by_key(c, exp_id))
        exp_id, by_key = mirrored[exp_name]
        found = by_key.get(record["run_key"], [])
        if not any(map(_complete, found)):
            created += _mirror_one(c, exp_id, record)
            found = _runs_by_key(c, exp_id, record["run_key"]).get(record["run_key"], [])   # others' too
        if len(found) > 1:
            _keep_one(c, exp_id, record["run_key"], found)
    return created


def _mirrored_here_and_gone(run) -> bool:
    """A run this machine mirrored whose record folder no longer exists (pruned, superseded by a rerun)."""
    tags = run.data.tags
    if tags.get(HOST_TAG, socket.gethostname()) != socket.gethostname():
        return False
    return not (tags.get("record_folder") and Path(tags["record_folder"]).is_dir())


def sync(records: list[dict], tracking_uri: str, artifact_root: Path, reports: list[Path] | None = None) -> tuple[int, int]:
    """The one writer of the mirror. Make it hold `records` (the run folders that exist): create what is
    missing, replace runs mirrored by an older version, delete (MLflow's soft delete, restorable) runs of
    records that no longer exist on this machine, e.g. superseded by a rerun (runs mirrored from other
    machines, or of folders that still exist, are left alone: concurrent writers of other records lose
    nothing); then, with `reports`, one `report/<dataset>` run per dataset holding its tables and figures.
    `artifact_root` is used only by a local store. Returns (created, deleted)."""
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
                for run in filter(_mirrored_here_and_gone, runs):
                    _delete(c, run.info.run_id)
                    deleted += 1
    for dataset in sorted({r["dataset"] for r in records}) if reports else []:
        _log_report(dataset, [p for p in reports if p.suffix != ".png" or p.name.startswith((f"{dataset}_", f"{dataset}-", f"selection_gap_{dataset}"))],
                    tracking_uri, artifact_root)
    return created, deleted


def _log_report(dataset: str, files: list[Path], tracking_uri: str, artifact_root: Path,
               protocol_version: str = PROTOCOL_VERSION) -> str:
    """One run per dataset named `report/<dataset>` holding the tables and figures; replaced when they
    changed (a finished report run with the same files' digest is kept as it is). Of concurrent writers the
    one that started last wins: each deletes only report runs older than its own."""
    import hashlib

    from mlflow.exceptions import MlflowException

    c = client(tracking_uri)
    exp_id = ensure_experiment(tracking_uri, artifact_root, protocol_version)
    digest = hashlib.sha256(b"".join(f.name.encode() + b"\0" + f.read_bytes() for f in sorted(files))).hexdigest()
    for old in _search(c, exp_id, f"tags.report_dataset = '{dataset}'"):
        if old.data.tags.get("reports_digest") == digest and old.info.status == "FINISHED":
            return old.info.run_id   # the mirror already holds these very files
    run = c.create_run(exp_id, run_name=f"report/{dataset}",
                       tags={"report_dataset": dataset, "protocol_version": protocol_version})
    mine = (run.info.start_time, run.info.run_id)
    try:
        for f in files:
            c.log_artifact(run.info.run_id, str(f), artifact_path="figures" if f.suffix == ".png" else None)
        c.set_tag(run.info.run_id, "reports_digest", digest)   # after the files: a partial run never matches
        c.set_terminated(run.info.run_id)
    except MlflowException:
        if c.get_run(run.info.run_id).info.lifecycle_stage != "deleted":
            raise
        return run.info.run_id   # a newer report run replaced ours while we wrote it
    for old in _search(c, exp_id, f"tags.report_dataset = '{dataset}'"):
        if (old.info.start_time, old.info.run_id) < mine:
            _delete(c, old.info.run_id)
    return run.info.run_id
