"""The MLflow mirror as a user sees it: `mlflow ui` on 127.0.0.1, clicked through by Playwright driving
the system's headless Chromium (no browser download: Playwright is only the driver)."""
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
pytest.importorskip("playwright", reason="Playwright drives the browser (pip install -e \".[dev]\")")


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


def _browser():
    from playwright.sync_api import sync_playwright

    return sync_playwright()


def test_mlflow_ui_from_the_home_page_groups_runs_by_method_and_shows_val_h_in_percent(mlflow_ui):
    """As a user would: open the home page, choose "Model training" (MLflow 3 opens in GenAI mode; the
    switch is the step `tracking.ui_hint` names), follow the experiment's link to the runs table (short run
    names, the dataset in its Dataset column), group the runs by the `method` tag, add the val.H column and
    read it (each run's, and MLflow's mean per group), then open one run and read its metrics."""
    from zsl_bench.records import find_records
    from zsl_bench.tracking import experiment_name

    url, paths = mlflow_ui
    records = {f"{r.method} s{r.seed}": r for r in find_records(paths.runs)}
    assert set(records) == {f"{m} s{s}" for m in ("eszsl", "ale") for s in (0, 1)}
    with _browser() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(f"{url}/")
        page.get_by_role("button", name="Model training").click()
        page.get_by_role("link", name=experiment_name()).first.click()
        for name in [*records, "report/synthetic"]:
            page.get_by_role("link", name=name).first.wait_for()
        assert "/runs" in page.url, page.url
        page.get_by_text("synthetic (", exact=False).first.wait_for()   # the Dataset column: an MLflow dataset input

        if page.get_by_role("button", name="Close").count():   # MLflow 3.17's assistant panel takes the width
            page.get_by_role("button", name="Close").first.click()
        page.get_by_role("button", name="Group by").click()
        page.get_by_text("method", exact=True).first.click()
        page.keyboard.press("Escape")
        page.get_by_role("button", name="Columns", exact=True).click()
        page.get_by_placeholder("Search").last.fill("val.H")
        page.get_by_text("val.H", exact=True).first.click()
        page.keyboard.press("Escape")
        for method in ("ale", "eszsl"):
            page.get_by_text(f"Group: {method}", exact=True).first.wait_for()
        table = page.inner_text("body")

        name = "eszsl s0"
        page.get_by_role("link", name=name).first.click()
        page.get_by_text("val.H", exact=True).first.wait_for()
        text = page.inner_text("body")
        browser.close()
    for method in ("ale", "eszsl"):
        hs = [records[f"{method} s{s}"].metrics("val")["H"] for s in (0, 1)]
        assert all(f"{h:g}" in table for h in hs), f"{method}'s val.H {hs} not in the grouped table"
        assert f"{sum(hs) / 2:.3f}"[:-1] in table, f"{method}'s group mean of val.H not shown"
    shown = {k: float(v) for k, v in re.findall(r"\b(val\.(?:T1|U|S|H|AUSUC))\s+([-\d.]+)", text)}
    expected = {f"val.{k}": v for k, v in records[name].metrics("val").items()}
    assert shown == expected, f"the run page shows {shown}, the record (in %) holds {expected}"
    assert all(v > 1.0 for v in shown.values()), "accuracies are shown in percent, as in every table"
