"""Run folders: content-addressed, complete or absent.

    <slot>/<run_key>/record.json       the source of truth (config, seeds, environment, hashes,
                                       metrics under each selection policy, traces, time, memory)
    <slot>/<run_key>/predictions.npz   test scores and labels: every metric can be recomputed (README)
    <slot>/<run_key>/state.npz|.pt     the fitted state of the val-selected model
    <slot>/<run_key>/done              written last; a folder without it is ignored

`run_key` hashes everything that determines the result except the code itself (the git sha is
recorded in the environment instead, so a rerun after a refactor is comparable, not hidden).
"""
from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

from zsl_bench.io import DataError, atomic_directory, canonical_json, read_json, sha256_bytes, write_json

SCHEMA_VERSION = 1
DONE = "done"


def run_key(spec: dict) -> str:
    return sha256_bytes(canonical_json(spec).encode())[:16]


def write_run(folder: Path, record: dict, predictions: dict[str, np.ndarray], state: dict) -> Path:
    with atomic_directory(folder) as tmp:
        np.savez_compressed(tmp / "predictions.npz", **predictions)
        if any(type(v).__module__.startswith("torch") for v in state.values()):
            import torch

            torch.save(state, tmp / "state.pt")
        else:
            np.savez(tmp / "state.npz", **{k: np.asarray(v) for k, v in state.items()})
        write_json(tmp / "record.json", record)
        (tmp / DONE).write_text("")
    return folder


def read_record(folder: Path) -> dict:
    folder = Path(folder)
    record = read_json(folder / "record.json")
    if record.get("schema_version") != SCHEMA_VERSION:
        raise DataError(f"{folder / 'record.json'}: schema version {record.get('schema_version')}, "
                        f"this zsl-bench reads {SCHEMA_VERSION}")
    record["_folder"] = str(folder)
    return record


def find_run_folders(root: Path) -> list[Path]:
    """Every complete run folder below `root` (those with a `done` marker), sorted."""
    root = Path(root)
    if not root.exists():
        return []
    return sorted(p.parent for p in root.rglob(DONE) if (p.parent / "record.json").is_file())


def find_records(root: Path) -> list[dict]:
    return [read_record(f) for f in find_run_folders(root)]


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def environment(root: Path, device: str) -> dict:
    """What produced a run: interpreter, libraries, accelerator, code version."""
    env = {
        "python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine(),
        **{name: _version(name) for name in ("zsl-bench", "numpy", "scipy", "torch", "timm", "mlflow")},
        "device": device, "git_sha": _git(root, "rev-parse", "HEAD"),
        "git_dirty": bool(_git(root, "status", "--porcelain", "--untracked-files=no")),
    }
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        env["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
    return env
