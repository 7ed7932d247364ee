"""The mirror on a team's tracking server: a real PostgreSQL (tests/postgres.py) behind `mlflow server`,
artifacts proxied by the server. `compare --source mlflow` from the server gives the records' table;
concurrent mirrors into one server fail nowhere, lose nothing and leave one complete run per record.
Skipped, saying why, without PostgreSQL's programs or psycopg2 (.ci/run installs Debian's `postgresql`)."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from tests import postgres
from tests.conftest import write_params
from zsl_bench import tracking
from zsl_bench.paths import ProjectPaths


# --- no server needed ---------------------------------------------------------------------------------

def test_the_configured_uri_comes_from_params_yaml(tmp_path):
    from zsl_bench.io import ConfigError
    from zsl_bench.params import validate

    paths = ProjectPaths(tmp_path)
    assert tracking.configured_uri(None, paths) == paths.tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert tracking.configured_uri({"tracking": {"mlflow": True, "uri": None}}, paths) == paths.tracking_uri
    server = {"tracking": {"mlflow": True, "uri": "http://mlflow.lab:5000"}}
    assert tracking.configured_uri(server, paths) == "http://mlflow.lab:5000"
    assert tracking.is_server("http://mlflow.lab:5000") and not tracking.is_server(paths.tracking_uri)
    relative = {"tracking": {"mlflow": True, "uri": "sqlite:///team/mlflow.db"}}   # relative to the project
    assert tracking.configured_uri(relative, paths) == f"sqlite:///{tmp_path}/team/mlflow.db"
    assert tracking.configured_uri({"tracking": {"uri": "sqlite:////abs/m.db"}}, paths) == "sqlite:////abs/m.db"
    write_params(tmp_path)   # the tests' params.yaml, whatever the schema requires today
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    validate({**params, **server}, tmp_path / "params.yaml")
    with pytest.raises(ConfigError, match="tracking.uri must be str or null"):
        validate({**params, "tracking": {"mlflow": True, "uri": 5000}}, tmp_path / "params.yaml")


def test_an_unreachable_server_is_one_line_naming_it(tmp_path, monkeypatch):
    from zsl_bench import report_stage
    from zsl_bench.io import DataError

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = f"http://127.0.0.1:{postgres.free_port()}"   # nothing listens there
    with pytest.raises(DataError, match=f"MLflow tracking server {uri} \\(params.yaml tracking.uri\\): "):
        report_stage.mlflow_sync(ProjectPaths(tmp_path), params={"tracking": {"mlflow": True, "uri": uri}})


# --- a PostgreSQL-backed tracking server, once for the module ----------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow server` on a fresh PostgreSQL database, serving artifacts into a temporary folder, started
    but not waited for (`url` waits, after the trained runs are made, so both overlap): yields
    (url, artifacts folder, process, log file)."""
    why = postgres.unavailable()
    if why:
        pytest.skip(why)
    artifacts = tmp_path_factory.mktemp("server-artifacts")
    with postgres.Postgres() as pg:
        db = pg.create_database("mlflow")
        port = postgres.free_port()
        mlflow = Path(sys.executable).with_name("mlflow")
        log = open(tmp_path_factory.mktemp("server-log") / "mlflow.log", "w+")
        proc = subprocess.Popen([str(mlflow), "server", "--backend-store-uri", db, "--artifacts-destination",
                                 str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}, start_new_session=True,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            yield f"http://127.0.0.1:{port}", artifacts, proc, log
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:   # a throwaway server: no need for a graceful end
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            log.close()


@pytest.fixture
def url(server, trained_template, monkeypatch, tmp_path):
    """The server, answering, with no `zsl-bench/<protocol>` experiment (a previous test's is renamed
    away), so each test starts as a team's first mirror would; downloads go to a private cache."""
    url, _, proc, log = server
    try:
        postgres.wait_for_http(f"{url}/health", proc)
    except RuntimeError as e:
        log.seek(0)
        pytest.fail(f"mlflow server did not start: {e}\n{log.read()[-3000:]}")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    c = tracking.client(url)
    exp = c.get_experiment_by_name(tracking.experiment_name())
    if exp is not None:
        c.rename_experiment(exp.experiment_id, f"{exp.name}-old-{uuid.uuid4().hex[:8]}")
    return url


def _mirrored(uri: str) -> dict[str, list]:
    """run_key → its active MLflow runs in the mirror's experiment."""
    c = tracking.client(uri)
    exp = c.get_experiment_by_name(tracking.experiment_name())
    return tracking._runs_by_key(c, exp.experiment_id) if exp else {}


def _exactly_one_complete_run_each(uri: str, records) -> None:
    by_key = _mirrored(uri)
    assert set(by_key) == {r.run_key for r in records}, "every record, nothing else"
    for r in records:
        assert len(by_key[r.run_key]) == 1, f"{r.run_key}: {len(by_key[r.run_key])} active runs"
        assert tracking._complete(by_key[r.run_key][0])


def test_compare_from_the_server_gives_the_records_table(url, server, trained_project, monkeypatch, capsys):
    from zsl_bench import cli
    from zsl_bench.records import find_records
    from zsl_bench.run_results import load_results

    paths = ProjectPaths(trained_project)
    params = yaml.safe_load((trained_project / "params.yaml").read_text())
    params["tracking"] = {"mlflow": True, "uri": url}
    (trained_project / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(trained_project)

    assert cli.main(["report", "--mlflow-sync"]) == 0
    out = capsys.readouterr().out
    assert f"MLflow mirror {url}: 4 runs created, 0 deleted" in out
    assert f"open {url}/#/experiments/" in out and "mlflow ui" not in out   # the server's own UI
    records = find_records(paths.runs)
    _exactly_one_complete_run_each(url, records)
    for runs in _mirrored(url).values():   # artifacts went to the server, not to the project
        assert runs[0].info.artifact_uri.startswith("mlflow-artifacts:/")
    assert not paths.mlflow_artifacts.exists() and not paths.mlflow_db.exists()
    assert len(list(server[1].rglob("predictions.npz"))) == 4

    tables = {}
    for source in ("records", "mlflow"):
        assert cli.main(["compare", "eszsl", "ale", "--source", source, "--format", "json"]) == 0
        tables[source] = json.loads(capsys.readouterr().out)
    assert tables["mlflow"]["source"].startswith(f"MLflow {url}")
    assert tables["mlflow"]["datasets"] == tables["records"]["datasets"]   # intervals too: predictions came down
    assert "predictions.npz missing" not in json.dumps(tables["mlflow"])
    results, _ = load_results(paths.runs, url, "mlflow")   # predictions downloaded once, into the cache
    cache = Path(os.environ["XDG_CACHE_HOME"])
    assert len(results) == 4 and all(r.predictions.is_file() and r.predictions.is_relative_to(cache) for r in results)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", paths.tracking_uri)   # the environment still wins for compare
    assert cli.main(["compare", "eszsl", "ale", "--source", "mlflow"]) == 1
    assert f"MLflow {paths.tracking_uri}" in capsys.readouterr().err
    monkeypatch.delenv("MLFLOW_TRACKING_URI")

    # idempotent; a report run per dataset, replaced, never doubled
    reports = [trained_project / "results.md", trained_project / "synthetic_curve.png"]
    for f in reports:
        f.write_text("table")
    assert tracking.sync(records, url, paths.mlflow_artifacts, reports=reports) == (0, 0)
    assert tracking.sync(records, url, paths.mlflow_artifacts, reports=reports) == (0, 0)
    c = tracking.client(url)
    exp_id = c.get_experiment_by_name(tracking.experiment_name()).experiment_id
    (report,) = c.search_runs([exp_id], "tags.report_dataset = 'synthetic'")
    assert sorted(a.path for a in c.list_artifacts(report.info.run_id)) == ["figures", "results.md"]

    # a pruned record leaves the mirror; a run another machine mirrored stays
    other = c.create_run(exp_id, tags={"run_key": "elsewhere", tracking.HOST_TAG: "another-host",
                                        "record_folder": "/nowhere/runs/x"})
    import shutil

    shutil.rmtree(records[0]["_folder"])
    assert tracking.sync(find_records(paths.runs), url, paths.mlflow_artifacts) == (0, 1)
    assert set(_mirrored(url)) == {r.run_key for r in records[1:]} | {"elsewhere"}
    assert c.get_run(other.info.run_id).info.lifecycle_stage == "active"


def test_races_are_resolved_the_same_way_by_every_writer(url, trained_template):
    """The races of concurrent writers, each made to happen: the experiment created by someone else between
    look and create; our run deleted under us by a writer that finished first; two complete copies."""
    from zsl_bench.records import find_records

    records = find_records(ProjectPaths(trained_template).runs)
    root = Path(trained_template) / "mlartifacts"
    c = tracking.client(url)
    exp_id = tracking.ensure_experiment(url, root)
    assert tracking.ensure_experiment(url, root) == exp_id
    assert c.get_experiment(exp_id).artifact_location.startswith("mlflow-artifacts:/")   # the server chose

    class LateLook:   # sees no experiment, as a writer does that looked just before another created it
        looked = False

        def __getattr__(self, name):
            return getattr(c, name)

        def get_experiment_by_name(self, name):
            if not self.looked:
                self.looked = True
                return None
            return c.get_experiment_by_name(name)

    assert tracking._experiment_id(LateLook(), tracking.experiment_name(), root, local=False) == exp_id

    record = records[0]
    assert tracking._mirror_one(c, exp_id, record) == 1   # a writer that finished first …

    class Overtaken:   # … deletes our unfinished run (`_keep_one`) before we mark it finished
        def __getattr__(self, name):
            return getattr(c, name)

        def set_terminated(self, run_id, **kw):
            c.delete_run(run_id)
            return c.set_terminated(run_id, **kw)

    assert tracking._mirror_one(Overtaken(), exp_id, record) == 0
    assert len(_mirrored(url)[record.run_key]) == 1

    tracking._write_run(c, exp_id, record)   # two complete copies: every writer keeps the smallest run id
    copies = sorted(r.info.run_id for r in _mirrored(url)[record.run_key])
    assert len(copies) == 2
    assert tracking.sync(records, url, root) == (3, 0)
    _exactly_one_complete_run_each(url, records)
    assert _mirrored(url)[record.run_key][0].info.run_id == copies[0]

    # Two writers a moment apart: the one that saw the other's run unfinished deletes it, the other deletes
    # the first's as the larger id; the record is left with no run, and the writer that finds so restores.
    tracking._write_run(c, exp_id, record)
    view = _mirrored(url)[record.run_key]   # what the second writer saw: both complete
    for run in view:
        c.delete_run(run.info.run_id)
    tracking._keep_one(c, exp_id, record.run_key, view)
    (kept,) = _mirrored(url)[record.run_key]
    assert kept.info.run_id == min(r.info.run_id for r in view)


def _mirror_worker(folders: list[str], uri: str, artifact_root: str, start) -> None:
    """One `sync` process (spawned): reads its records, waits for the others, then mirrors them."""
    from zsl_bench.records import RunRecord
    from zsl_bench.tracking import sync

    records = [RunRecord.read(Path(f)) for f in folders]
    start.wait(timeout=120)
    sync(records, uri, Path(artifact_root))


def _run_concurrently(subsets: list[list], uri: str, artifact_root: Path) -> list[int]:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(len(subsets))
    procs = [ctx.Process(target=_mirror_worker, args=([str(r["_folder"]) for r in subset], uri, str(artifact_root),
                                                      start)) for subset in subsets]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    return [p.exitcode for p in procs]


def test_concurrent_mirrors_lose_nothing_and_duplicate_nothing(url, server, trained_template):
    """Writers start together on a server with no experiment yet (all of them race to create it). Disjoint
    writers both land, each record once; overlapping writers never fail, and after a final sync every
    record has exactly one complete run and compare reads the records' numbers."""
    from zsl_bench.records import find_records
    from zsl_bench.run_results import from_mlflow, load_results

    records = find_records(ProjectPaths(trained_template).runs)
    root = Path(trained_template) / "mlartifacts"   # unused by a server: nothing is written there
    assert len(records) == 4
    assert _run_concurrently([records[:2], records[2:]], url, root) == [0, 0]
    _exactly_one_complete_run_each(url, records)

    c = tracking.client(url)
    exp = c.get_experiment_by_name(tracking.experiment_name())
    c.rename_experiment(exp.experiment_id, f"{exp.name}-old-{uuid.uuid4().hex[:8]}")
    assert _run_concurrently([records, records, records[1:3]], url, root) == [0, 0, 0]
    by_key = _mirrored(url)
    assert set(by_key) == {r.run_key for r in records}
    assert tracking.sync(records, url, root)[1] == 0
    _exactly_one_complete_run_each(url, records)
    assert not root.exists()

    mirrored = {r.run_key: r.metrics for r in from_mlflow(url)}
    assert mirrored == {r.run_key: r.metrics for r in load_results(Path(trained_template) / "runs", None,
                                                                   "records")[0]}
