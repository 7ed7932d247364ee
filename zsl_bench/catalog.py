"""`zsl-bench datasets` and `zsl-bench download`: what each source needs, what is here, how to get the rest."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from zsl_bench.io import DataError
from zsl_bench.data import available_sources, source_module
from zsl_bench.data.download import FetchOptions, verified_record
from zsl_bench.data.xlsa17 import XLSA17_ARCHIVE
from zsl_bench.paths import ProjectPaths

STATES = ("missing", "partial download", "downloaded", "verified", "prepared")


@dataclass
class SourceStatus:
    name: str
    status: str
    bytes_on_disk: int
    archives: list[str]          # one line per archive
    command: str


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return 0


def human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def archive_state(remote, downloads: Path) -> tuple[str, str]:
    path, part = downloads / remote.name, downloads / f"{remote.name}.part"
    if path.is_file():
        rec = verified_record(downloads, remote.name)
        if rec:
            return "verified", f"{remote.name}: verified ({rec['verified']}; {rec['recorded']})"
        return "downloaded", f"{remote.name}: downloaded, not yet verified (checked at the next prepare)"
    if part.is_file():
        of = f" of {human(remote.size)}" if remote.size else ""
        return "partial download", f"{remote.name}: partial, {human(part.stat().st_size)}{of} (resumes)"
    size = f", {human(remote.size)}" if remote.size else ""
    return "missing", f"{remote.name}: missing{size} — {remote.description or remote.urls[0]}"


def files_of(name: str, source_params: dict) -> list:
    """Every file a source downloads: its archives, and the word2vec vectors when it asks for them."""
    from zsl_bench.attribute_embeddings import W2V_BLOBS, w2v_remote

    extra = [w2v_remote(name)] if "w2v" in source_params.get("attribute_embeddings", []) and name in W2V_BLOBS else []
    return source_module(name).required_archives(source_params) + extra


def status(name: str, params: dict, paths: ProjectPaths) -> SourceStatus:
    source_params = params.get("sources", {}).get(name, {})
    archives = files_of(name, source_params)
    states, lines = [], []
    for remote in archives:
        state, line = archive_state(remote, paths.downloads)
        states.append(state)
        lines.append(line)
    if (paths.prepared(name) / "dataset.json").is_file():
        overall = "prepared"
    elif not archives:
        overall = "missing"
    else:
        overall = min(states, key=STATES.index)
    in_params = name in params.get("datasets", [])
    if not archives:
        command = "dvc repro   (generated offline; nothing to download)"
    else:
        command = f"zsl-bench download {name}   then " + (
            "dvc repro" if in_params else f"add {name} to `datasets` in params.yaml and run dvc repro")
    disk = sum(_size(paths.downloads / r.name) + _size(paths.downloads / f"{r.name}.part") for r in archives
               if r.name != "xlsa17.zip") + sum(_size(p) for p in (paths.raw(name), paths.prepared(name),
                                                                  paths.features_of(name)))
    return SourceStatus(name=name, status=overall, bytes_on_disk=disk, archives=lines, command=command)


def datasets_text(params: dict, paths: ProjectPaths) -> str:
    lines = [f"datasets of {paths.root} (downloads in {paths.downloads})", ""]
    for name in available_sources():
        s = status(name, params, paths)
        used = " (in params.yaml)" if name in params.get("datasets", []) else ""
        lines.append(f"{s.name}{used}: {s.status}, {human(s.bytes_on_disk)} on disk")
        lines += [f"    {a}" for a in s.archives]
        lines.append(f"    get it: {s.command}")
        lines.append("")
    shared = paths.downloads / XLSA17_ARCHIVE.name
    users = ", ".join(n for n in available_sources() if XLSA17_ARCHIVE in source_module(n).required_archives({}))
    lines.append(f"{shared.name} serves {users}: {human(_size(shared))} on disk" if shared.is_file()
                 else f"{shared.name} (the split release) serves {users} and is downloaded once")
    return "\n".join(lines) + "\n"


def download(name: str, params: dict, paths: ProjectPaths, mirror: str | None, from_paths: list[str],
             images: bool | None, progress: bool = True) -> list[Path]:
    source_params = dict(params.get("sources", {}).get(name, {}))
    if images is not None:
        source_params["images"] = images
    opts = FetchOptions.from_params({"mirror": mirror or source_params.get("mirror"),
                                     "from": list(from_paths) or source_params.get("from") or []}, progress)
    archives = files_of(name, source_params)
    unknown = [p for p in opts.from_paths if p.name not in {r.name for r in archives}]
    if unknown:
        raise DataError(f"--from {unknown[0]}: {name} needs {', '.join(r.name for r in archives)}; "
                         "name your copy as the archive is named")
    return [opts.fetch(remote, paths.downloads) for remote in archives]
