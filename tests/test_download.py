"""Downloads over a real local HTTP server: full, resumed, wrong checksum, corrupt, unreachable."""
import hashlib
import json

import pytest

from tests.httpserver import FileServer
from tests.real_layouts import tgz_bytes
from zsl_bench.data.download import CHECKSUMS_FILE, DownloadError, RemoteFile, extract, fetch
from zsl_bench.io import DataError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "data.bin").write_bytes(PAYLOAD)
    with FileServer(root) as s:
        yield s


def remote(server, **pins):
    return RemoteFile("data.bin", urls=(f"{server.url}/data.bin",), **pins)


def test_full_download_verified_against_the_published_md5(server, tmp_path):
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    path = fetch(remote(server, md5=md5, size=len(PAYLOAD)), tmp_path / "dl", progress=False)
    assert path.read_bytes() == PAYLOAD
    assert not (tmp_path / "dl" / "data.bin.part").exists()


def test_dropped_connection_resumes_with_a_range_request(server, tmp_path):
    server.drop_after["data.bin"] = 300_000
    path = fetch(remote(server, md5=hashlib.md5(PAYLOAD).hexdigest()), tmp_path / "dl", progress=False)
    assert path.read_bytes() == PAYLOAD
    ranges = [r for name, r in server.requests if name == "data.bin"]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
    assert int(ranges[1].split("=")[1].rstrip("-")) > 0


def test_a_partial_file_from_an_earlier_call_is_resumed(server, tmp_path):
    dl = tmp_path / "dl"
    dl.mkdir()
    (dl / "data.bin.part").write_bytes(PAYLOAD[:12345])
    fetch(remote(server, sha256=hashlib.sha256(PAYLOAD).hexdigest()), dl, progress=False)
    assert server.requests[0] == ("data.bin", "bytes=12345-")


def test_a_server_that_ignores_range_restarts_cleanly(server, tmp_path):
    server.ignore_range.add("data.bin")
    server.drop_after["data.bin"] = 100_000
    path = fetch(remote(server, md5=hashlib.md5(PAYLOAD).hexdigest()), tmp_path / "dl", progress=False)
    assert path.read_bytes() == PAYLOAD


def test_wrong_checksum_is_a_clear_error_and_no_file_is_left_under_the_final_name(server, tmp_path):
    with pytest.raises(DownloadError, match=r"md5 .* differs from the pinned .*--mirror URL.*--from PATH"):
        fetch(remote(server, md5="0" * 32), tmp_path / "dl", progress=False)
    assert not (tmp_path / "dl" / "data.bin").exists()
    assert (tmp_path / "dl" / "data.bin.bad").exists()


def test_unreachable_host_says_what_to_do(tmp_path):
    """Offline: one line naming each host and why, what to do (nothing to delete: nothing was downloaded),
    and no empty download folder left behind."""
    r = RemoteFile("x.zip", urls=("http://127.0.0.1:9/x.zip", "http://127.0.0.2:9/x.zip"))
    with pytest.raises(DownloadError, match=r"could not download x.zip \(127.0.0.1:9: .*; 127.0.0.2:9: .*\)\. "
                                            r"Try another host with `--mirror URL`") as e:
        fetch(r, tmp_path / "data" / "dl", progress=False, retries=0, timeout=5)
    assert "\n" not in str(e.value) and "Delete it" not in str(e.value)
    assert not (tmp_path / "data").exists()


def test_mirror_is_tried_first_then_the_official_url(server, tmp_path):
    path = fetch(remote(server), tmp_path / "dl", mirror=f"{server.url}/nowhere", progress=False)
    assert path.read_bytes() == PAYLOAD
    assert [n for n, _ in server.requests] == ["nowhere/data.bin", "data.bin"]


def test_unpinned_files_get_their_sha256_recorded_and_checked_later(server, tmp_path):
    dl = tmp_path / "dl"
    fetch(remote(server), dl, progress=False)
    recorded = json.loads((dl / CHECKSUMS_FILE).read_text())["data.bin"]
    assert recorded["sha256"] == hashlib.sha256(PAYLOAD).hexdigest()
    (dl / "data.bin").write_bytes(PAYLOAD[:-1] + b"x")
    with pytest.raises(DownloadError, match="recorded at its first download") as e:
        fetch(remote(server), dl, progress=False)
    assert "`zsl-bench download --forget-checksum data.bin`" in str(e.value)


def test_forget_checksum_accepts_a_changed_file_the_user_confirmed(server, tmp_path, monkeypatch, capsys):
    """The command the mismatch error names clears the record; the next use records the new sha256."""
    from zsl_bench import cli

    dl = tmp_path / "data" / "downloads"   # the project's download folder, as the CLI finds it
    fetch(remote(server), dl, progress=False)
    changed = PAYLOAD[:-1] + b"x"
    (dl / "data.bin").write_bytes(changed)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["download", "--forget-checksum", "data.bin"]) == 0
    assert "forgot the sha256" in capsys.readouterr().out
    fetch(remote(server), dl, progress=False)   # now accepted as a first download
    assert json.loads((dl / CHECKSUMS_FILE).read_text())["data.bin"]["sha256"] == hashlib.sha256(changed).hexdigest()
    assert cli.main(["download", "--forget-checksum", "other.bin"]) == 2   # named, not a traceback
    assert "no checksum recorded for 'other.bin'" in capsys.readouterr().err


def test_from_path_adopts_an_archive_the_user_already_has(tmp_path):
    own = tmp_path / "mine.bin"
    own.write_bytes(PAYLOAD)
    r = RemoteFile("data.bin", urls=("http://127.0.0.1:9/data.bin",), md5=hashlib.md5(PAYLOAD).hexdigest())
    path = fetch(r, tmp_path / "dl", from_path=own, progress=False)
    assert path.read_bytes() == PAYLOAD
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"nope")
    with pytest.raises(DownloadError, match="md5"):
        fetch(r, tmp_path / "dl2", from_path=bad, progress=False)


def test_git_blob_pin_is_checked(server, tmp_path):
    blob = hashlib.sha1(f"blob {len(PAYLOAD)}\0".encode() + PAYLOAD).hexdigest()
    fetch(remote(server, git_blob=blob), tmp_path / "ok", progress=False)
    with pytest.raises(DownloadError, match="git_blob"):
        fetch(remote(server, git_blob="1" * 40), tmp_path / "bad", progress=False)


def test_extraction_is_atomic_and_a_truncated_archive_leaves_nothing(tmp_path):
    good = tmp_path / "good.tgz"
    good.write_bytes(tgz_bytes({"a/b.txt": b"hello", "a/c.txt": b"world" * 1000}))
    out = extract(good, tmp_path / "out", progress=False)
    assert (out / "a" / "b.txt").read_bytes() == b"hello"
    truncated = tmp_path / "bad.tgz"
    truncated.write_bytes(good.read_bytes()[:-200])
    with pytest.raises(DataError, match="corrupt or truncated archive"):
        extract(truncated, tmp_path / "out2", progress=False)
    assert not (tmp_path / "out2").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out2")] == []


def test_extraction_refuses_paths_that_escape(tmp_path):
    evil = tmp_path / "evil.tgz"
    evil.write_bytes(tgz_bytes({"../escape.txt": b"x"}))
    with pytest.raises(DataError):
        extract(evil, tmp_path / "out", progress=False)
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "out").exists()
