"""`zsl-bench regress`: exact mode in the golden file's environment (any move fails, an injected degradation
included), statistical mode elsewhere (an environment-only change passes), `--update` prints what moved and
refuses another environment's file, and nothing in the work folder outlives the code that made it."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO, checkout_env, pipeline_checkout
from zsl_bench import float_environment, regress
from zsl_bench.protocol import TABLE_METRICS


@pytest.fixture(scope="module")
def updated(tiny_project, tmp_path_factory):
    """A repository whose CI configuration is the tiny project's params (ESZSL and ALE, seeds 0 and 1, no
    search, float64 backbone), its
    golden file written by `regress --update` (calibration included), and the work folder it used."""
    base = tmp_path_factory.mktemp("regress")
    repo, workdir = base / "repo", base / "work"
    (repo / "regress").mkdir(parents=True)
    params = yaml.safe_load((tiny_project / "params.yaml").read_text())
    params["train"]["search"] = "none"   # defaults only, and a float64 backbone, as in the real CI configuration
    params["backbone"]["synthetic"]["resnet10t"]["precision"] = "fp64"
    (repo / "regress" / "params.yaml").write_text(yaml.safe_dump(params))
    code, text = regress.regress(repo, workdir, update=True, progress=False)
    assert code == 0 and "new golden file" in text, text
    return repo, workdir


def _golden(repo):
    return json.loads((repo / "regress" / "golden.json").read_text())


def test_update_records_every_seed_the_environment_and_measured_tolerances(updated):
    repo, _ = updated
    golden = _golden(repo)
    assert golden["version"] == regress.GOLDEN_VERSION
    assert not float_environment.differences(golden["environment"], float_environment.fingerprint(regress.THREADS))
    perturbed = golden["statistical"]["perturbation"]["fingerprint"]
    assert perturbed["threads"] == 2 and perturbed["torch_cpu_capability"] == "DEFAULT"
    for method in ("eszsl", "ale"):
        m = golden["datasets"]["synthetic"][method]
        assert sorted(m["seeds"]) == sorted(m["last_seeds"]) == ["0", "1"]
        for k in TABLE_METRICS:
            assert len(m["environment_deltas"][k]) == 2
            assert m["tolerance"][k] == regress.tolerance(m["environment_deltas"][k])


def test_exact_mode_passes_unchanged_and_fails_an_injected_degradation(updated, tmp_path):
    src, workdir = updated
    repo = tmp_path / "repo"
    shutil.copytree(src, repo)
    code, text = regress.regress(repo, workdir, progress=False)
    assert code == 0, text
    assert text.splitlines()[0].startswith("regress: exact mode (this environment is the golden file's")
    assert "all numbers identical" in text and "MOVED" not in text
    assert sum(line.startswith("synthetic/") for line in text.splitlines()) == 8   # 2 methods × 2 seeds × 2 policies

    # A degradation a code change could make: ALE's learning rate halved. The configuration is edited
    # to make it, and the golden file told the configuration is the same (as it would be for a code change).
    params_file = repo / "regress" / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params.setdefault("methods", {})["ale"] = {"hparams": {"synthetic": {"lr": 0.05}}}
    params_file.write_text(yaml.safe_dump(params))
    golden = _golden(repo)
    golden["config_sha256"] = regress._digest(params_file)
    (repo / "regress" / "golden.json").write_text(json.dumps(golden))
    code, text = regress.regress(repo, workdir, progress=False)
    assert code == 1 and "FAILED in exact mode" in text
    lines = text.splitlines()
    assert [ln.split()[:3] for ln in lines if "MOVED" in ln] == [
        ["synthetic/ale", "0", "val"], ["synthetic/ale", "1", "val"], ["synthetic/ale", "0", "last"],
        ["synthetic/ale", "1", "last"]]
    assert all(ln.endswith("same") for ln in lines if ln.startswith("synthetic/eszsl"))
    assert any(ln.startswith("synthetic/ale seed 0 ") and "→" in ln for ln in lines)   # the moved numbers, spelled out


def test_statistical_mode_passes_an_environment_only_change(updated):
    """Another machine, simulated: the configuration rerun in a process whose torch uses its unvectorised
    kernels, one thread, this machine's BLAS (the calibration used two threads and an older core's BLAS
    kernels as well). Its fingerprint differs, so regress would pick statistical mode, and that passes it."""
    repo, workdir = updated
    golden = _golden(repo)
    out = workdir / "other-machine.json"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    subprocess.run([sys.executable, "-m", "zsl_bench.regress", str(repo / "regress" / "params.yaml"),
                    str(workdir / "other-machine"), "1", str(out)], env=env, check=True, capture_output=True)
    other = json.loads(out.read_text())
    assert float_environment.differences(golden["environment"], other["environment"])
    ok, lines = regress.check_statistical(other["measured"], golden)
    assert ok, "\n".join(lines)


def test_update_says_what_moved_and_refuses_another_environments_file(updated, tmp_path):
    src, workdir = updated
    repo = tmp_path / "repo"
    shutil.copytree(src, repo)
    golden = _golden(repo)
    golden["environment"]["torch_cpu_capability"] = "AVX512"
    (repo / "regress" / "golden.json").write_text(json.dumps(golden))
    code, text = regress.regress(repo, workdir, update=True, progress=False)
    assert code == 1 and "another environment (torch_cpu_capability: AVX512 →" in text and "--adopt-environment" in text
    code, text = regress.regress(repo, workdir, progress=False)
    assert code == 0 and text.startswith("regress: statistical mode; the environment differs"), text

    old = _golden(src)["datasets"]
    new = json.loads(json.dumps(old))
    new["synthetic"]["ale"]["seeds"]["1"]["H"] += 1.5
    new["synthetic"]["ale"]["last_seeds"]["0"]["T1"] -= 1.0
    del new["synthetic"]["eszsl"]
    summary = regress.moved_summary({"datasets": old}, new)
    assert summary.splitlines() == ["synthetic/ale: val H +0.75 (1/2 seeds), last T1 -0.50 (1/2 seeds)",
                                    "synthetic/eszsl: removed"]
    assert regress.moved_summary({"datasets": old}, old) == "no number moved"


def test_a_missing_seed_fails_both_modes_and_an_extra_method_is_reported():
    seeds = {"0": dict.fromkeys(TABLE_METRICS, 10.0), "1": dict.fromkeys(TABLE_METRICS, 10.0)}
    row = {"seeds": seeds, "last_seeds": seeds, "tolerance": dict.fromkeys(TABLE_METRICS, 1.0)}
    golden = {"datasets": {"synthetic": {"ale": row}}}
    now = {"synthetic": {"ale": {"seeds": {"0": seeds["0"]}}, "dazle": row}}
    for check in (regress.check_exact, regress.check_statistical):
        ok, lines = check(now, golden)
        assert not ok and "synthetic/ale: missing: seed(s) 1 did not run" in lines
    assert "synthetic/dazle" in regress._extra(now, golden)[0]


def test_a_broken_line_in_the_backbone_code_makes_regress_fail(updated, tmp_path):
    """The work folder's backbone and features were made by the current code; a checkout whose backbone
    training raises must rebuild them (and so fail), not reuse them."""
    src, workdir = updated
    checkout = pipeline_checkout(tmp_path / "checkout")
    shutil.copytree(src / "regress", checkout / "regress")
    work = tmp_path / "work"
    shutil.copytree(workdir, work, symlinks=True, ignore=shutil.ignore_patterns("calibration*", "other-machine*"))
    backbone = checkout / "zsl_bench" / "backbone.py"
    text = backbone.read_text()
    head = "def train_backbone("
    at = text.index(":\n", text.index(head)) + 2
    body = text[at:]
    indent = body[:len(body) - len(body.lstrip())]
    backbone.write_text(text[:at] + f'{indent}raise RuntimeError("injected: a broken backbone")\n' + body)
    done = subprocess.run([sys.executable, "-m", "zsl_bench.cli", "regress", "--workdir", str(work)], cwd=checkout,
                          env=checkout_env(checkout), capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "injected: a broken backbone" in done.stderr, done.stderr[-3000:]
    assert not (work / regress.UPSTREAM_STAMP).exists()   # the next run rebuilds again


def test_the_committed_golden_file_belongs_to_the_committed_configuration():
    params_file, golden_file = regress.config_paths(REPO)
    golden = json.loads(golden_file.read_text())
    params = yaml.safe_load(params_file.read_text())
    assert golden["version"] == regress.GOLDEN_VERSION, "refresh with `zsl-bench regress --update`"
    assert golden["config_sha256"] == regress._digest(params_file), "refresh with `zsl-bench regress --update`"
    methods = golden["datasets"]["synthetic"]
    assert sorted(methods) == sorted(params["train"]["methods"])
    for name, m in methods.items():
        assert sorted(m["seeds"], key=int) == sorted(m["last_seeds"], key=int) == [str(s) for s in params["train"]["seeds"]]
        for k in TABLE_METRICS:
            assert m["tolerance"][k] == regress.tolerance(m["environment_deltas"][k]), (name, k)
            assert m["tolerance"][k] <= 2.0, f"{name} {k}: a 2-point change could pass statistical mode"
