"""`zsl-bench regress`: passes on its own golden file, fails readably on a perturbed one."""
import json
import math
import shutil

import pytest

from tests.conftest import REPO
from zsl_bench import regress
from zsl_bench.protocol import TABLE_METRICS


@pytest.fixture
def fake_repo(trained_project, tmp_path):
    """A repository whose CI configuration is the trained tiny project's params (its runs are reused)."""
    repo = tmp_path / "repo"
    (repo / "regress").mkdir(parents=True)
    shutil.copyfile(trained_project / "params.yaml", repo / "regress" / "params.yaml")
    return repo, trained_project


def test_regress_passes_on_its_golden_file_and_fails_on_a_perturbed_one(fake_repo):
    repo, workdir = fake_repo
    code, text = regress.regress(repo, workdir, update=True, progress=False)
    assert code == 0 and "wrote" in text
    golden_file = repo / "regress" / "golden.json"
    golden = json.loads(golden_file.read_text())
    assert set(golden["datasets"]["synthetic"]) == {"eszsl", "ale"}
    assert golden["datasets"]["synthetic"]["eszsl"]["n"] == 2

    code, text = regress.regress(repo, workdir, progress=False)
    assert code == 0, text
    assert "all numbers within tolerance" in text and "MOVED" not in text

    ale = golden["datasets"]["synthetic"]["ale"]
    ale["mean"]["H"] += ale["tolerance"]["H"] + 0.5
    golden_file.write_text(json.dumps(golden))
    code, text = regress.regress(repo, workdir, progress=False)
    assert code == 1
    moved = [line for line in text.splitlines() if line.endswith("MOVED")]
    assert len(moved) == 1 and moved[0].split()[:2] == ["synthetic/ale", "H"]
    assert "FAILED, 1 number(s) moved" in text and "zsl-bench regress --update" in text

    (repo / "regress" / "params.yaml").write_text((repo / "regress" / "params.yaml").read_text() + "\n# edited\n")
    code, text = regress.regress(repo, workdir, progress=False)
    assert code == 1 and "changed since" in text


def test_a_missing_method_fails_and_an_extra_one_is_reported():
    row = {"n": 3, "mean": dict.fromkeys(TABLE_METRICS, 10.0), "tolerance": dict.fromkeys(TABLE_METRICS, 1.0)}
    golden = {"datasets": {"synthetic": {"ale": row, "sae": row}}}
    now = {"synthetic": {"ale": row, "dazle": row}}
    ok, lines = regress.check(now, golden)
    assert not ok
    assert any("synthetic/sae" in line and "missing: 0 of 3 seeds ran" in line for line in lines)
    assert any("not in the golden file" in line and "synthetic/dazle" in line for line in lines)


def test_tolerance_rule():
    assert regress.tolerance(0.0, 3) == regress.FLOOR            # closed forms: seeds cannot move them
    assert regress.tolerance(3.0, 3) == pytest.approx(2 * 3.0 * math.sqrt(2 / 3))
    assert regress.tolerance(float("nan"), 1) == regress.FLOOR


def test_the_committed_golden_file_belongs_to_the_committed_configuration():
    params_file, golden_file = regress.config_paths(REPO)
    golden = json.loads(golden_file.read_text())
    import yaml

    params = yaml.safe_load(params_file.read_text())
    assert golden["config_sha256"] == regress._digest(params_file), "refresh with `zsl-bench regress --update`"
    methods = golden["datasets"]["synthetic"]
    assert sorted(methods) == sorted(params["train"]["methods"])
    for name, m in methods.items():
        assert m["n"] == len(params["train"]["seeds"]) == len(m["seeds"])
        for k in TABLE_METRICS:
            assert m["tolerance"][k] == pytest.approx(regress.tolerance(m["std"][k], m["n"]), abs=1e-3), (name, k)
