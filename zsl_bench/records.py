"""Run folders and what they hold: the one place that reads and writes them.

    <slot>/<run_key>/record.json       the source of truth (config, seeds, environment, hashes, metrics
                                       under each selection policy, traces, model size, time, memory)
    <slot>/<run_key>/predictions.npz   test scores and labels: every metric can be recomputed (README)
    <slot>/<run_key>/views.npz         what figures show of the model (attention maps; model_views.py)
    <slot>/<run_key>/state.npz|.pt     the fitted state of the val-selected model
    <slot>/<run_key>/provenance.json   when, where and how long (provenance.py): outside DVC's hashes, may be absent
    <slot>/<run_key>/done              written last; a folder without it is ignored

A slot whose method cannot run on the dataset's inputs (e.g. a map method on the xlsa17 vectors) holds
`skipped.json` instead: {"method", "dataset", "reason"}; tables show the reason in the cell.

A folder is complete or absent (written in a temporary folder, renamed into place). `RunRecord` is a
record read back and checked; `Predictions` the arrays of predictions.npz, checked for keys and shapes.
(`scripts/recompute_metrics.py` reads the documented format on its own, on purpose.)
"""
from __future__ import annotations

import os

import math
import platform
import sys
from dataclasses import dataclass, field, fields
from importlib import metadata
from pathlib import Path

import numpy as np

from zsl_bench.io import DataError, atomic_directory, canonical_json, read_json, sha256_bytes, write_json
from zsl_bench.protocol import TABLE_METRICS, as_percent
from zsl_bench.provenance import read_provenance, write_provenance

SCHEMA_VERSION = 6   # 6: `backbone` (the feature set's backbone name) and its pretraining overlap; 5: code identity per module, key_spec, `selected_configs` (policies re-read traces); 4: selection policies incl. paper, validation folds, per-calibration traces; 3: time, memory and host moved to provenance.json; 2: `model` and views.npz
DONE = "done"
RECORD_FILE, PREDICTIONS_FILE, VIEWS_FILE = "record.json", "predictions.npz", "views.npz"
SKIPPED_FILE = "skipped.json"
SHARED_FILE = "shared.json"   # a slot whose run is another stage's run of the same configuration (read_shared)
REPLICATE_LABEL = " (A/A)"   # a rerun of a configuration with an independent random stream
# Keys every record has, as (path, what it is), checked when a record is read.
REQUIRED = (("schema_version", "format version"), ("method", "method name"), ("dataset", "dataset name"),
            ("backbone", "backbone name"), ("seed", "run seed"), ("run_key", "content key"), ("traces", "validation and test traces"),
            ("selection", "the checkpoints whose test scores the run kept"),
            ("selected_configs", "configurations the run's policies selected"), ("config", "run configuration"),
            ("method_info", "what the method declares"), ("data", "dataset and feature fingerprints"),
            ("environment", "software and device"), ("model", "parameter counts"))


def feature_set_label(dataset: str, backbone: str) -> str:
    """A (dataset, backbone) pair as tables, compare and the MLflow mirror name it."""
    return f"{dataset}/{backbone}"


def run_key(spec: dict) -> str:
    return sha256_bytes(canonical_json(spec).encode())[:16]


_SAID: set[str] = set()   # what this process has said about traces a policy lacks (once each)


class RunRecord(dict):
    """record.json as read back: the dict itself, plus typed access to what tables and figures use."""

    @classmethod
    def read(cls, folder: Path) -> "RunRecord":
        folder = Path(folder)
        path = folder / RECORD_FILE
        raw = read_json(path)
        if not isinstance(raw, dict):
            raise DataError(f"{path}: not a run record (a JSON object expected); delete the folder and rerun")
        if raw.get("schema_version") != SCHEMA_VERSION:
            raise DataError(f"{path}: schema version {raw.get('schema_version')}, this zsl-bench reads "
                            f"{SCHEMA_VERSION}; rerun the run (`dvc repro`) to rewrite it")
        missing = [f"{k} ({what})" for k, what in REQUIRED if k not in raw]
        missing += [f"traces.{k} (every policy reads it)" for k in ("validation", "test")
                    if not (raw.get("traces") or {}).get(k)]
        if missing:
            raise DataError(f"{path}: incomplete record, missing {', '.join(missing)}; delete the folder and rerun")
        record = cls(raw)
        record["_folder"] = str(folder)
        record["_provenance"] = read_provenance(folder)
        return record

    @property
    def folder(self) -> Path:
        return Path(self["_folder"])

    @property
    def stage(self) -> str:
        """"ablation" for a run of the ablate stage (runs/<dataset>/<backbone>/ablation/<method>/seed<S>/<key>),
        else "train"."""
        return "ablation" if len(self.folder.parts) >= 4 and self.folder.parts[-4] == "ablation" else "train"

    @property
    def method(self) -> str:
        """The method's name in tables: an A/A replicate (the ablation's noise floor) is its own row."""
        return self["method"] + (REPLICATE_LABEL if self.get("replicate") else "")

    @property
    def dataset(self) -> str:
        return self["dataset"]

    @property
    def backbone(self) -> str:
        """The backbone name of the run's feature set (params.yaml `features`)."""
        return self["backbone"]

    @property
    def feature_set(self) -> str:
        """`<dataset>/<backbone>`: what tables group by (one section per dataset and backbone)."""
        return feature_set_label(self["dataset"], self["backbone"])

    @property
    def seed(self) -> int:
        return int(self["seed"])

    @property
    def run_key(self) -> str:
        return self["run_key"]

    @property
    def created_unix(self) -> float:
        """When the run finished (0.0 when its provenance.json is absent)."""
        return float(self["_provenance"].get("created_unix", 0.0))

    @property
    def wall_s(self) -> float:
        """The whole run's wall time in seconds (NaN when its provenance.json is absent)."""
        return float(self["_provenance"].get("resources", {}).get("wall_s", math.nan))

    @property
    def peak_rss_mb(self) -> float:
        return float(self["_provenance"].get("resources", {}).get("peak_rss_mb", math.nan))

    @property
    def precision(self) -> str:
        """The training precision the run's torch fits used (fp32 for numpy methods and older records)."""
        return self["config"].get("training", {}).get("precision", "fp32")

    @property
    def searched(self) -> bool:
        """Whether hyperparameters were chosen among several configurations (not `--no-search`, not a
        one-point grid); epoch and γ are chosen on validation either way."""
        return len(self["config"]["configs"]) > 1

    @property
    def uses_unseen_semantics(self) -> bool:
        return bool(self["method_info"]["uses_unseen_semantics"])

    @property
    def base_method(self) -> str | None:
        """For a scoring variant (same fitted models, another readout): the method it was read off."""
        return (self.get("score_variant_of") or {}).get("method")

    def policy(self, policy: str) -> dict | None:
        """`policy`'s entry read off this run's traces by the policy as it is now (policies.evaluate: the one
        way every view gets a policy's numbers); None where it does not apply."""
        from zsl_bench.policies import evaluate

        return evaluate(self, policy)

    def metrics(self, policy: str) -> dict[str, float]:
        """The table metrics under `policy`, in percent (`protocol.as_percent`; NaN where the run has none, e.g.
        `paper` for a method that declares no paper rule, or a policy reading a trace the run never recorded: then
        one line on stderr says which)."""
        from zsl_bench.policies import TracesLack

        try:
            m = (self.policy(policy) or {}).get("metrics", {})
        except TracesLack as e:
            if str(e) not in _SAID:
                _SAID.add(str(e))
                print(f"zsl-bench: {e}", file=sys.stderr)
            m = {}
        return {k: as_percent(m.get(k, math.nan)) for k in TABLE_METRICS}

    def predictions(self) -> "Predictions":
        return Predictions.load(self.folder / PREDICTIONS_FILE, self)

    def views(self) -> dict[str, np.ndarray] | None:
        """views.npz (model_views.py), or None for a method without attention maps."""
        path = self.folder / VIEWS_FILE
        return _load_npz(path) if path.is_file() else None


@dataclass(frozen=True)
class Predictions:
    """predictions.npz: N test images × C candidate classes (README, "Outputs and formats"). Per selection
    policy P: `scores_P` (its H checkpoint), `scores_P_T1` / `scores_P_AUSUC` where that metric came from
    another checkpoint, `scores_zsl_P` (a ZSL scorer's scores at its T1 checkpoint), `gamma_P` and
    `calibration_P` ("spread": γ in units of each image's score spread, `protocol.spread_standardise`; or "raw")."""
    labels: np.ndarray
    class_ids: np.ndarray
    class_names: np.ndarray
    seen_class_mask: np.ndarray
    unseen_sample_mask: np.ndarray
    image_rows: np.ndarray
    arrays: dict = field(default_factory=dict)   # the per-policy arrays above
    record: dict | None = None                   # the run's record.json: which checkpoint each array holds

    @classmethod
    def load(cls, path: Path, record: dict | None = None) -> "Predictions":
        """predictions.npz at `path`, with its run's record (default: record.json beside it, as in a run folder
        and in an MLflow run's artifacts)."""
        z = _load_npz(path)
        if record is None and (Path(path).parent / RECORD_FILE).is_file():
            record = read_json(Path(path).parent / RECORD_FILE)
        common = [f.name for f in fields(cls) if f.name not in ("arrays", "record")]
        missing = [k for k in common if k not in z]
        if missing:
            raise DataError(f"{path}: no array {', '.join(missing)} (written by an older zsl-bench?); rerun the run")
        p = cls(**{k: z[k] for k in common}, arrays={k: z[k] for k in z if k not in common}, record=record)
        n, c = len(p.labels), len(p.class_ids)
        for name, a in p.arrays.items():
            if name.startswith("scores_") and a.shape != (n, c):
                raise DataError(f"{path}: {name} has shape {a.shape}, expected ({n}, {c}) "
                                "(test images × classes); rerun the run")
        return cls(**{**p.__dict__, "seen_class_mask": p.seen_class_mask.astype(bool),
                      "unseen_sample_mask": p.unseen_sample_mask.astype(bool)})

    def scores(self, policy: str, metric: str = "H") -> tuple[np.ndarray, float]:
        """(scores, γ) with which `policy` reaches `metric` (policies.scores_at: T1 from the ZSL scorer's matrix
        when the method has one; H in the units its γ applies in, so argmax(scores − γ · seen) is its
        prediction; AUSUC from raw scores)."""
        from zsl_bench.policies import scores_at

        if self.record is None:
            raise DataError("predictions.npz without its record.json: which checkpoint each array holds is unknown")
        return scores_at(self.record, self.arrays, policy, metric)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; rerun the run to recreate it") from None
    except Exception as e:   # zipfile.BadZipFile, ValueError, EOFError, OSError: a damaged file
        raise DataError(f"{path}: not a readable .npz ({type(e).__name__}: {e}); delete its run folder and rerun "
                        "(`dvc repro`)") from None


def write_run(folder: Path, record: dict, predictions: dict[str, np.ndarray], state: dict,
              views: dict[str, np.ndarray] | None = None, provenance: dict | None = None) -> Path:
    with atomic_directory(folder) as tmp:
        if provenance:
            write_provenance(tmp, provenance)
        np.savez_compressed(tmp / PREDICTIONS_FILE, **predictions)
        if views:
            np.savez_compressed(tmp / VIEWS_FILE, **views)
        if any(type(v).__module__.startswith("torch") for v in state.values()):
            import torch

            torch.save(state, tmp / "state.pt")
        else:
            np.savez(tmp / "state.npz", **{k: np.asarray(v) for k, v in state.items()})
        write_json(tmp / RECORD_FILE, record)
        (tmp / DONE).write_text("")
    return folder


def write_skipped(slot: Path, method: str, dataset: str, reason: str) -> Path:
    """Mark `slot` as skipped (its run folders, made when the inputs allowed the method, are removed)."""
    import shutil

    slot = Path(slot)
    for old in find_run_folders(slot):
        shutil.rmtree(old)
    slot.mkdir(parents=True, exist_ok=True)
    write_json(slot / SKIPPED_FILE, {"method": method, "dataset": dataset, "reason": reason})
    return slot


def read_skipped(slot: Path) -> str | None:
    """Why `slot` was skipped, or None when it was not."""
    path = Path(slot) / SKIPPED_FILE
    return read_json(path)["reason"] if path.is_file() else None


def write_shared(slot: Path, source: Path, reason: str) -> Path:
    """Mark `slot` as read from the run folder(s) in `source` (another stage's slot computing the same
    configuration); run folders made in `slot` before are removed."""
    import shutil

    slot = Path(slot)
    for old in find_run_folders(slot):
        shutil.rmtree(old)
    slot.mkdir(parents=True, exist_ok=True)
    write_json(slot / SHARED_FILE, {"source": os.path.relpath(source, slot), "reason": reason})
    return slot


def read_shared(slot: Path) -> Path | None:
    """The slot whose runs `slot` reads (write_shared), or None."""
    path = Path(slot) / SHARED_FILE
    return Path(os.path.normpath(Path(slot) / read_json(path)["source"])) if path.is_file() else None


def find_run_folders(root: Path) -> list[Path]:
    """Every complete run folder below `root` (those with a `done` marker), sorted."""
    root = Path(root)
    if not root.exists():
        return []
    return sorted(p.parent for p in root.rglob(DONE) if (p.parent / RECORD_FILE).is_file())


def find_records(root: Path) -> list[RunRecord]:
    return [RunRecord.read(f) for f in find_run_folders(root)]


def newest_per_seed(items: list) -> list:
    """The newest item (by `created_unix`) per (dataset and backbone, method, seed): a configuration run again
    replaces the older result. Works on records and on table rows alike; keeps the order in which each
    (dataset and backbone, method, seed) first appears (params.yaml's order, for the report)."""
    newest: dict[tuple, object] = {}
    for r in items:   # a record of the ablate stage never replaces one of the train stage (RunRecord.stage)
        k = (getattr(r, "feature_set", r.dataset), r.method, r.seed, getattr(r, "stage", "train"))
        if k not in newest or r.created_unix > newest[k].created_unix:
            newest[k] = r
    return list(newest.values())


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment(device: str) -> dict:
    """The software and device a run's numbers came from (in record.json: the same on every rerun here)."""
    env = {
        "python": sys.version.split()[0], "machine": platform.machine(),
        **{name: _version(name) for name in ("zsl-bench", "numpy", "scipy", "torch", "timm", "mlflow")},
        "device": device,
    }
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        env["threads"] = torch.get_num_threads()   # can move numbers in the last digits (runtime.limit_threads)
        env["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
    return env

