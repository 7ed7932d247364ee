"""The README's release-only quick start, end to end: xlsa17-layout releases of CUB, SUN and AWA2 built from
the real split files, served over local HTTP, and `dvc repro` with the quick start's keys and nothing else
(the mirror stands in for the authors' host)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, SHARED_METADATA, checkout_env, pipeline_checkout
from tests.httpserver import FileServer
from tests.real_layouts import metadata_archives, release_from_metadata, xlsa17_zip

STORED_PREFIX = {"CUB": "/p1/p2/p3/MSc/", "SUN": "/p1/p2/p3/MSc/data/SUN/", "AWA2": "/p1/p2/p3/data/"}
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not SHARED_METADATA.is_dir(), reason=f"real dataset metadata not available at {SHARED_METADATA} (it sits beside "
                                         "the repository in the development workspace; CI clones do not have it)")]


def quick_start_keys() -> dict:
    """The YAML block of the README's release-only quick start."""
    section = (REPO / "README.md").read_text().split("## Release-only quick start", 1)[1]
    return yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))


def merge(base: dict, keys: dict, whole=("datasets", "features")) -> dict:
    """What "`datasets` and `features` replace those sections; under `sources` each key replaces the value
    there and the rest stays" means."""
    out = dict(base)
    for k, v in keys.items():
        out[k] = (merge(base[k], v, ()) if k not in whole and isinstance(v, dict) and isinstance(base.get(k), dict)
                  else v)
    return out


def test_the_release_only_quick_start_runs_dvc_repro_end_to_end(tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    releases = [release_from_metadata(SHARED_METADATA / n, n, STORED_PREFIX[n], noise=3.0) for n in ("CUB", "SUN", "AWA2")]
    (www / "xlsa17.zip").write_bytes(xlsa17_zip(releases))
    for name, data in metadata_archives(SHARED_METADATA).items():   # SUN's and AWA2's attribute names
        (www / name).write_bytes(data)
    root = pipeline_checkout(tmp_path / "repo")
    keys = quick_start_keys()
    assert set(keys) == {"datasets", "features", "sources"}
    params = merge(yaml.safe_load((REPO / "params.yaml").read_text()), keys)
    params["tracking"]["mlflow"] = False   # not what this test is about; the mirror has its own tests
    # The generative methods' official schedules (56–400 generator epochs of 4096-unit networks) take hours per
    # run on 2 CPU cores: their release path is measured by benchmarks/bench_generative.py instead.
    params["train"]["methods"] = [m for m in params["train"]["methods"] if m not in ("fclswgan", "tfvaegan")]
    with FileServer(www) as server:
        for ds in params["datasets"]:
            params["sources"][ds]["mirror"] = server.url   # stands in for the authors' host (no internet here)
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        env = {**checkout_env(root), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HOME": str(tmp_path)}
        for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"],
                    [sys.executable, "-m", "dvc", "repro"]):
            out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env, timeout=1800)
            assert out.returncode == 0, f"{cmd}: {out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        assert [n for n, _ in server.requests].count("xlsa17.zip") == 1, "one download serves all three"
    log = out.stdout + out.stderr
    for ds in ("CUB", "SUN", "AWA2"):
        assert f"skipped dazle on {ds}/xlsa17: " in log
    results = (root / "reports" / "results.md").read_text()
    tables = re.findall(r"## (\w+)/xlsa17 — selection: val[^\n]*\n\n(?:Pretraining overlap[^\n]*\n\n)?((?:\|[^\n]*\n)+)",
                        results)
    assert {ds for ds, _ in tables} == {"CUB", "SUN", "AWA2"}
    for ds, table in tables:
        cells = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in table.splitlines()[2:]}
        for m in ("eszsl", "sae", "ale"):
            t1 = float(cells[m].split()[0])
            assert t1 > 2 * 100 / {"CUB": 50, "SUN": 72, "AWA2": 10}[ds], f"{m} on {ds}: T1 {t1} (chance × 2)"
        for m in ("dazle", "transzero", "mgmrn"):
            assert cells[m].startswith("— (skipped: ") and "xlsa17_res101" in cells[m], cells[m]
    ablation = (root / "reports" / "ablation.md").read_text()
    assert ablation.count("— (skipped: ") == 3, ablation
