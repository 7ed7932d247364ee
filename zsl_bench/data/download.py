"""Downloads that a user can trust: resume, checksums, atomic extraction, errors that say what to do.

- A download goes to `<name>.part` and resumes with an HTTP Range request after a dropped
  connection (within one call, and across calls: the `.part` file stays).
- A finished file is checked against what is known: its size, the published md5 (CUB), a sha256
  pinned in the code, or a git blob id (files from GitHub repositories). Files with no published
  checksum get their sha256 recorded at first download (`checksums.json` in the download folder) and
  are checked against it from then on; `zsl-bench download --forget-checksum FILE` drops that record once
  the user has confirmed that a changed file is the one they want.
- Archives are extracted into a temporary folder that is renamed into place only when complete.
- Every failure names the file and says what the user can do: another URL (`mirror`), or an archive
  they already have (`from`).
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import socket
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from zsl_bench.io import DataError, atomic_directory

CHECKSUMS_FILE = "checksums.json"
CHUNK = 1 << 20
USER_AGENT = "zsl-bench (https://github.com/zsl-bench)"


class DownloadError(DataError):
    pass


@dataclass(frozen=True)
class RemoteFile:
    name: str                       # file name on disk (and on a mirror)
    urls: tuple[str, ...]
    size: int | None = None
    md5: str | None = None          # published checksum
    sha256: str | None = None       # pinned in the code once known
    git_blob: str | None = None     # git blob id of a file taken from a GitHub repository
    description: str = ""


def _hashes(path: Path) -> dict[str, str]:
    size = path.stat().st_size
    md5, sha256, blob = hashlib.md5(), hashlib.sha256(), hashlib.sha1(f"blob {size}\0".encode())
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            md5.update(block)
            sha256.update(block)
            blob.update(block)
    return {"md5": md5.hexdigest(), "sha256": sha256.hexdigest(), "git_blob": blob.hexdigest()}


def _recorded(folder: Path) -> dict:
    path = folder / CHECKSUMS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _record(folder: Path, name: str, path: Path, sha256: str, how: str, origin: str) -> None:
    """Remember a verified file: its sha256 (the pin for files with none published) and the size and
    mtime it had, so that later calls and `zsl-bench datasets` need not hash gigabytes again."""
    data = _recorded(folder)
    previous = data.get(name, {})
    stat = path.stat()
    data[name] = {"sha256": sha256, "verified": how, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                  "origin": previous.get("origin", origin),
                  "recorded": previous.get("recorded", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))}
    _write_recorded(folder, data)


def _write_recorded(folder: Path, data: dict) -> None:
    tmp = folder / f".{CHECKSUMS_FILE}.tmp"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, folder / CHECKSUMS_FILE)


def forget_checksum(folder: Path, name: str) -> dict:
    """Drop the record of `name` (its sha256 from the first download): the next use verifies the file
    as a first download and records its sha256 again. Returns the forgotten record."""
    data = _recorded(Path(folder))
    if name not in data:
        known = ", ".join(sorted(data)) or "none"
        raise DataError(f"{Path(folder) / CHECKSUMS_FILE}: no checksum recorded for {name!r} (recorded: {known})")
    forgotten = data.pop(name)
    _write_recorded(Path(folder), data)
    return forgotten


def verified_record(folder: Path, name: str) -> dict | None:
    """The verification record of `folder/name` if the file is unchanged since it was verified."""
    path = Path(folder) / name
    rec = _recorded(Path(folder)).get(name)
    if rec and path.is_file() and rec.get("size") == path.stat().st_size \
            and rec.get("mtime_ns") == path.stat().st_mtime_ns:
        return rec
    return None


def verify(path: Path, remote: RemoteFile, folder: Path | None = None) -> tuple[str, str]:
    """Check `path` against every checksum known for `remote`; return (how it was verified, its sha256)."""
    path = Path(path)
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        raise DownloadError(f"{path}: {size:,} bytes, the published size is {remote.size:,} "
                            f"({'truncated' if size < remote.size else 'not the expected file'}). {_advice(remote)}")
    h = _hashes(path)
    for kind in ("md5", "sha256", "git_blob"):
        expected = getattr(remote, kind)
        if expected and h[kind] != expected:
            raise DownloadError(f"{path}: {kind} {h[kind]} differs from the pinned {expected}; the file is corrupt "
                                f"or the host serves another version. {_advice(remote)}")
    pinned = [k for k in ("md5", "sha256", "git_blob") if getattr(remote, k)]
    if pinned:
        return f"{', '.join(pinned)} match the pinned value", h["sha256"]
    recorded = _recorded(folder or path.parent).get(remote.name)
    if recorded and recorded["sha256"] != h["sha256"]:
        raise DownloadError(f"{path}: sha256 {h['sha256']} differs from the one recorded at its first download "
                            f"({recorded['sha256']}, {recorded['recorded']}). If this file is the one you want "
                            f"(the host replaced it), run `zsl-bench download --forget-checksum {remote.name}` and "
                            f"then run again. Otherwise: {_advice(remote)}")
    return ("sha256 matches the first download" if recorded else
            "no published checksum; sha256 recorded at this first download"), h["sha256"]


def _advice(remote: RemoteFile, have_file: bool = True) -> str:
    again = "Delete it and try again, try" if have_file else "Try"
    return (f"{again} another host with `--mirror URL` (a folder holding {remote.name}), "
            f"or give a copy you already have with `--from PATH`.")


def fetch(remote: RemoteFile, folder: Path, mirror: str | None = None, from_path: Path | None = None,
          progress: bool = True, retries: int = 5, timeout: float = 60.0) -> Path:
    """Return the verified local copy of `remote` in `folder`, downloading or copying it if needed."""
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]   # innermost first
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / remote.name
    if from_path is not None:
        return _adopt(Path(from_path), remote, folder)
    if final.is_file():
        if verified_record(folder, remote.name) is None:  # hash once, not at every prepare
            how, sha = verify(final, remote, folder)
            _record(folder, remote.name, final, sha, how, "found in the download folder")
        return final
    urls = ([mirror.rstrip("/") + "/" + remote.name] if mirror else []) + list(remote.urls)
    errors = []
    part = folder / f"{remote.name}.part"
    for url in urls:
        try:
            _download_with_resume(url, part, remote, progress, retries, timeout)
        except DownloadError as e:
            errors.append(f"{urlparse(url).netloc or url}: {e}")
            continue
        os.replace(part, final)
        try:
            how, sha = verify(final, remote, folder)
        except DownloadError:
            final.rename(final.with_name(final.name + ".bad"))
            raise
        _record(folder, remote.name, final, sha, how, url)
        return final
    for new in created:   # nothing was downloaded: leave no empty folder behind that this call made
        if new.is_dir() and not any(new.iterdir()):
            new.rmdir()
    raise DownloadError(f"could not download {remote.name} ({'; '.join(errors)}). "
                        f"{_advice(remote, have_file=part.exists())}")


def _adopt(source: Path, remote: RemoteFile, folder: Path) -> Path:
    if not source.is_file():
        raise DownloadError(f"{source}: --from names no file")
    how, sha = verify(source, remote, folder)
    final = folder / remote.name
    if source.resolve() != final.resolve():
        tmp = folder / f".{remote.name}.copy"
        shutil.copyfile(source, tmp)
        os.replace(tmp, final)
    _record(folder, remote.name, final, sha, how, f"from {source}")
    return final


def _download_with_resume(url: str, part: Path, remote: RemoteFile, progress: bool, retries: int,
                          timeout: float) -> None:
    from tqdm import tqdm

    attempt = 0
    bar = None
    try:
        while True:
            have = part.stat().st_size if part.exists() else 0
            request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
            if have:
                request.add_header("Range", f"bytes={have}-")
            try:
                response = urllib.request.urlopen(request, timeout=timeout)
            except urllib.error.HTTPError as e:
                if e.code == 416 and have and (remote.size is None or have == remote.size):
                    return  # the server says we already have every byte
                raise DownloadError(f"HTTP {e.code} {e.reason}") from None
            except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as e:
                reason = getattr(e, "reason", e)
                raise DownloadError(f"host unreachable ({reason})") from None
            with response:
                if have and response.status != 206:
                    have = 0  # the server ignored Range: start again
                total = _total_size(response, have) or remote.size
                if bar is None:
                    bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=remote.name,
                               disable=not progress)
                else:
                    bar.reset(total=total)
                    bar.update(have)
                try:
                    with open(part, "ab" if have else "wb") as f:
                        while block := response.read(CHUNK):
                            f.write(block)
                            bar.update(len(block))
                except (http.client.IncompleteRead, ConnectionError, socket.timeout, OSError) as e:
                    attempt += 1
                    if attempt > retries:
                        raise DownloadError(f"connection dropped {attempt} times, last: {e!r}; the partial file "
                                            f"{part} is kept and the next try resumes it") from None
                    time.sleep(min(2 ** attempt * 0.1, 5.0))
                    continue
            done = part.stat().st_size
            if total is not None and done < total:
                attempt += 1
                if attempt > retries:
                    raise DownloadError(f"got {done:,} of {total:,} bytes after {attempt} tries; {part} is kept")
                continue
            return
    finally:
        if bar is not None:
            bar.close()


def _total_size(response, have: int) -> int | None:
    content_range = response.headers.get("Content-Range")
    if content_range and "/" in content_range and not content_range.endswith("*"):
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("Content-Length")
    return have + int(length) if length is not None else None


def extract(archive: Path, dest: Path, select: str | None = None, progress: bool = True) -> Path:
    """Unpack `archive` into `dest` atomically; a corrupt or truncated archive leaves nothing behind.

    With `select`, only members below that prefix are unpacked, with the prefix removed
    (`select="xlsa17/data/CUB/"` puts that folder's files directly in `dest`).
    """
    from tqdm import tqdm

    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise DataError(f"{archive}: archive not found")
    found = 0
    try:
        with atomic_directory(dest) as tmp:
            if zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as z:
                    for member in tqdm(z.infolist(), desc=f"extract {archive.name}", unit="file",
                                       disable=not progress):
                        name = _selected(member.filename, select)
                        if name is None:
                            continue
                        target = (tmp / name).resolve()
                        if not target.is_relative_to(tmp.resolve()):
                            raise DataError(f"{archive}: member {member.filename!r} would escape the target folder")
                        found += 1
                        if member.is_dir():
                            target.mkdir(parents=True, exist_ok=True)
                            continue
                        target.parent.mkdir(parents=True, exist_ok=True)
                        with z.open(member) as src, open(target, "wb") as dst:
                            shutil.copyfileobj(src, dst, CHUNK)
            else:
                with tarfile.open(archive) as t:
                    for member in tqdm(t, desc=f"extract {archive.name}", unit="file", disable=not progress):
                        name = _selected(member.name, select)
                        if name is None:
                            continue
                        found += 1
                        member.name = name
                        t.extract(member, tmp, filter="data")
            if select is not None and found == 0:
                raise DataError(f"{archive}: no member below {select!r} (is this the right archive?)")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as e:
        raise DataError(f"{archive}: corrupt or truncated archive ({type(e).__name__}: {e}); delete it to download "
                        "again, or give a good copy with `--from PATH`") from None
    return dest


def _selected(name: str, select: str | None) -> str | None:
    if select is None:
        return name
    if not name.startswith(select) or name == select:
        return None
    return name[len(select):]


@dataclass(frozen=True)
class FetchOptions:
    """How a source gets its files: another host to try first, archives the user already has."""
    mirror: str | None = None
    from_paths: tuple[Path, ...] = ()
    progress: bool = True

    @classmethod
    def from_params(cls, params: dict, progress: bool = True) -> "FetchOptions":
        given = params.get("from") or []
        return cls(mirror=params.get("mirror"), from_paths=tuple(Path(p).expanduser() for p in
                                                                  ([given] if isinstance(given, str) else given)),
                   progress=progress)

    def fetch(self, remote: RemoteFile, folder: Path) -> Path:
        local = next((p for p in self.from_paths if p.name == remote.name), None)
        return fetch(remote, folder, mirror=self.mirror, from_path=local, progress=self.progress)
