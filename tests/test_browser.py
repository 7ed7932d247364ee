"""The MLflow mirror as a user sees it: `mlflow ui` on 127.0.0.1, read by headless Chromium."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from zsl_bench import report_stage
from zsl_bench.params import load_params
from zsl_bench.paths import ProjectPaths

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="no `chromium` binary (Debian: apt-get install chromium; "
                                                          ".ci/run installs it)")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_ui(trained_project):
    paths = ProjectPaths(trained_project)
    params = load_params(paths)
    params["tracking"]["mlflow"] = True
    report_stage.report(params, paths, progress=False)   # the report stage mirrors the runs and logs the report
    port = _free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen([str(mlflow), "ui", "--backend-store-uri", paths.tracking_uri,
                               "--host", "127.0.0.1", "--port", str(port)],
                              env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.time() > deadline:
                pytest.fail(f"mlflow ui did not start: {server.stderr.read()[-2000:] if server.poll() else 'timeout'}")
            time.sleep(1)
        yield url, paths
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _page_text(url: str) -> str:
    """The page after its scripts ran (Chromium's virtual time lets the app fetch and render the runs)."""
    out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          "--virtual-time-budget=30000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=180)
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", out.stdout, flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_mlflow_ui_lists_the_pipeline_runs_by_name(mlflow_ui):
    from zsl_bench.run_results import from_mlflow
    from zsl_bench.tracking import client, experiment_name

    url, paths = mlflow_ui
    exp_id = client(paths.tracking_uri).get_experiment_by_name(experiment_name()).experiment_id
    text = _page_text(f"{url}/#/experiments/{exp_id}/runs")
    names = {f"{r.method}/{r.dataset}/seed{r.seed}" for r in from_mlflow(paths.tracking_uri)}
    assert names == {f"{m}/synthetic/seed{s}" for m in ("eszsl", "ale") for s in (0, 1)}
    missing = [n for n in names if n not in text]
    assert not missing, f"runs not shown by the MLflow UI: {missing}; page began: {text[:500]}"
    assert "report/synthetic" in text
