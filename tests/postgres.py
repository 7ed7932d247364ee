"""A throwaway PostgreSQL server for tests: initdb in a temporary folder, listening on 127.0.0.1 only.

PostgreSQL refuses to run as root, so under root its programs run as the `postgres` system user
(`runuser`), which then owns the temporary folder. `unavailable()` says why no server can be started
here (the test skips with that reason); `.ci/run` installs Debian's `postgresql` package.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PROGRAMS = ("initdb", "pg_ctl")


def bin_dir() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<version>/bin
    (the newest version)."""
    if all(shutil.which(p) for p in PROGRAMS):
        return Path(shutil.which("initdb")).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]) if
                   d.split("/")[-2].isdigit() else 0)
    for folder in reversed(found):
        if all((Path(folder) / p).is_file() for p in PROGRAMS):
            return Path(folder)
    return None


def _as_postgres() -> list[str]:
    """The prefix that runs a PostgreSQL program: none for a normal user, `runuser -u postgres --` for root."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def unavailable() -> str | None:
    """Why no PostgreSQL can be started here, or None."""
    if bin_dir() is None:
        return ("PostgreSQL's initdb/pg_ctl not found on PATH or in /usr/lib/postgresql/*/bin "
                "(Debian: apt-get install postgresql; .ci/run installs it)")
    try:
        import psycopg2  # noqa: F401  (the MLflow server's PostgreSQL driver)
    except ImportError:
        return "psycopg2 is not installed (pip install -e \".[dev]\" brings psycopg2-binary)"
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` system user to run PostgreSQL as"
        if shutil.which("runuser") is None:
            return "running as root and `runuser` (util-linux) is missing: PostgreSQL refuses to run as root"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """`with Postgres() as pg:` a running server; `pg.url(db)` is its SQLAlchemy URL; stopped and deleted
    on exit (`pg_ctl stop -m fast`)."""

    def __init__(self, user: str = "postgres"):
        self.user, self.port, self.bin = user, free_port(), bin_dir()
        # Not below pytest's tmp_path: that is private to root (0700) and the postgres user must enter it.
        self.folder = Path(tempfile.mkdtemp(prefix="zsl-bench-pg-"))
        self.data, self.log = self.folder / "data", self.folder / "server.log"

    def _run(self, *args: str) -> None:
        out = subprocess.run([*_as_postgres(), str(self.bin / args[0]), *args[1:]], capture_output=True,
                             text=True, timeout=120)
        if out.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.is_file() else ""
            raise RuntimeError(f"{args[0]} failed ({out.returncode}): {out.stderr[-2000:]}{log}")

    def start(self) -> "Postgres":
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", self.user, "-A", "trust", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        with open(self.data / "postgresql.conf", "a") as conf:   # a test server: local, fast, not durable
            conf.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.folder}'\n"
                       "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 100\n")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")
        return self

    def create_database(self, name: str) -> str:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)

    def url(self, db: str) -> str:
        # The driver named: SQLAlchemy ≥ 2.1 reads a bare postgresql:// as psycopg 3, not psycopg2.
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").is_file():
                self._run("pg_ctl", "-D", str(self.data), "stop", "-m", "fast", "-w", "-t", "60")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "Postgres":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    """Poll `url` until it answers 200; fail early when `process` (the server) exits."""
    import urllib.request

    deadline = time.time() + timeout
    while True:
        try:
            if urllib.request.urlopen(url, timeout=2).status == 200:
                return
        except OSError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before {url} answered")
        if time.time() > deadline:
            raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")
        time.sleep(0.3)
