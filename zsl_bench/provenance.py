"""provenance.json: when, where and how long an output was made (wall time, memory, host, git commit).

Two runs of identical code on identical data differ only here, so it is kept out of the outputs DVC
hashes (named in .dvcignore) and out of record.json, backbone.json and index.json: a cold `dvc repro` of
an unchanged tree then rewrites neither `dvc.lock` nor the tables. It is informative only — a folder
restored from DVC's cache has none, and every reader allows that.
"""
from __future__ import annotations

import platform
import subprocess
import time
from pathlib import Path

from zsl_bench.io import DataError, read_json, write_json

PROVENANCE_FILE = "provenance.json"


def _git(where: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def provenance(where: Path, wall_s: float, peak_rss_mb: float | None = None, **extra) -> dict:
    """What to write to provenance.json for work that took `wall_s` seconds; `where` is any folder of the
    project (its git commit is recorded)."""
    resources = {"wall_s": round(wall_s, 3)}
    if peak_rss_mb is not None:
        resources["peak_rss_mb"] = round(peak_rss_mb, 1)
    return {"created_unix": time.time(), "resources": resources, **extra,
            "host": {"platform": platform.platform(), "node": platform.node(),
                     "git_sha": _git(where, "rev-parse", "HEAD"),
                     "git_dirty": bool(_git(where, "status", "--porcelain", "--untracked-files=no"))}}


def write_provenance(folder: Path, data: dict) -> None:
    write_json(Path(folder) / PROVENANCE_FILE, data)


def read_provenance(folder: Path) -> dict:
    """provenance.json of an output folder, or {} when absent or unreadable."""
    try:
        data = read_json(Path(folder) / PROVENANCE_FILE)
    except (DataError, OSError):
        return {}
    return data if isinstance(data, dict) else {}
