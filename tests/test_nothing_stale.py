"""Nothing stale, nothing lost: run identity includes the code, every view shows the current runs, and faults
leave the project consistent (issue 13)."""
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, checkout_env, pipeline_checkout
from zsl_bench import regress
from zsl_bench.method import Method
from zsl_bench.registry import _REGISTRY, register_method
from zsl_bench.runner import RunRequest, code_fingerprint, execute

PLUGIN = '''
import numpy as np
from zsl_bench.method import Method


class Ridge(Method):
    device = "cpu"
    profiles = {{"*": {{"ridge": 1.0}}}}

    def fit(self, train, ctx):
        x = np.asarray(train.x, dtype=np.float64)
        target = {target}
        self.W = np.linalg.solve(x.T @ x + self.hparams["ridge"] * np.eye(x.shape[1]), x.T @ target)

    def score(self, x, semantics):
        return np.asarray(x, dtype=np.float64) @ self.W @ semantics.att.T

    def state_dict(self):
        return {{"W": self.W}}

    def load_state_dict(self, state):
        self.W = np.asarray(state["W"])
'''


def load_plugin(folder, target: str) -> type[Method]:
    """A one-file method plugin written to `folder` and imported, registered as `test-ridge`."""
    path = folder / "ridge_plugin.py"
    path.write_text(PLUGIN.format(target=target))
    spec = importlib.util.spec_from_file_location("ridge_plugin", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["ridge_plugin"] = module
    spec.loader.exec_module(module)
    _REGISTRY.pop("test-ridge", None)   # a new version of the same method, not a second one
    return register_method("test-ridge")(module.Ridge)


def test_changing_a_methods_code_changes_its_runs_identity_and_the_run_is_not_reused(project_copy, tmp_path):
    from zsl_bench.code_identity import changed_modules
    from zsl_bench.paths import ProjectPaths
    from zsl_bench.records import RunRecord

    paths = ProjectPaths(project_copy)
    request = RunRequest(dataset="synthetic", backbone="resnet10t", method="test-ridge", seed=0, search=False, device="cpu")
    code_before = code_fingerprint(load_plugin(tmp_path, "train.semantics.att[train.y]"))
    first = execute(request, paths, progress=False)
    assert execute(request, paths, progress=False) == first, "same code, same everything: reused"
    after = load_plugin(tmp_path, "2.0 * train.semantics.att[train.y] - 0.5")   # the method's code changed
    assert changed_modules(code_before, code_fingerprint(after)) == [(tmp_path / "ridge_plugin.py").as_posix()]
    second = execute(request, paths, progress=False)
    assert second != first and second.parent == first.parent
    old, new = RunRecord.read(first), RunRecord.read(second)
    assert changed_modules(old["code"], new["code"]) == [(tmp_path / "ridge_plugin.py").as_posix()]
    assert old.metrics("val") != new.metrics("val"), "the new code's numbers, not the old run's"


def test_variants_share_their_base_methods_code():
    from zsl_bench.registry import get_method

    assert code_fingerprint(get_method("mgmrn.levels1")) == code_fingerprint(get_method("mgmrn"))
    assert code_fingerprint(get_method("mgmrn")) != code_fingerprint(get_method("dazle"))


def test_the_train_and_ablate_stages_deps_are_the_code_their_runs_hash():
    """dvc.yaml's code deps of the stages that run methods come from code_identity.stage_code, the closure
    run keys hash (`python scripts/dvc_deps.py` rewrites them)."""
    import yaml

    from zsl_bench.code_identity import stage_code

    stages_ = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for stage in ("train", "ablate"):
        deps = stages_[stage]["do"]["deps"]
        listed = sorted(d for d in deps if d.startswith(("zsl_bench/", "pipelines/")))
        expected = stage_code(f"zsl_bench_pipelines.{stage}")
        assert listed == expected, (f"dvc.yaml {stage}: run `python scripts/dvc_deps.py` (missing "
                                    f"{sorted(set(expected) - set(listed))}, extra {sorted(set(listed) - set(expected))})")
        assert "methods" in deps or "methods/${ablate.method}" in deps


@pytest.fixture
def source_copy(tmp_path, monkeypatch):
    """The project's source folders copied to tmp_path, with code_identity reading them there."""
    from zsl_bench import code_identity

    for sub in ("zsl_bench", "methods", "pipelines"):
        shutil.copytree(REPO / sub, tmp_path / sub, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(code_identity, "ROOT", tmp_path)
    return tmp_path


def _keys_now() -> dict[str, str]:
    """The code part of every registered method's run key, read from the source as it is now."""
    from zsl_bench.records import run_key
    from zsl_bench.registry import available_methods, get_method

    return {m: run_key(code_fingerprint(get_method(m))) for m in available_methods()}


def test_a_docstring_or_comment_edit_rekeys_nothing_a_policy_retrains_nothing(source_copy):
    before = _keys_now()
    provenance = source_copy / "zsl_bench" / "provenance.py"
    text = provenance.read_text()
    start = text.index('"""') + 3
    provenance.write_text(text[:start] + "Reworded. " + text[start:] + "\n# a comment at the end\n")
    blocks = source_copy / "zsl_bench" / "map_families.py"
    blocks.write_text(blocks.read_text().replace("\n\n\n", "\n\n\n# a comment between definitions\n\n\n", 1))
    policies = source_copy / "zsl_bench" / "policies.py"   # a new policy: executed by runs, part of no key
    policies.write_text(policies.read_text() + "\n\nclass Newest(Last):\n    name = 'newest'\n")
    assert _keys_now() == before


def test_a_one_character_change_rekeys_exactly_the_runs_that_import_the_module(source_copy):
    from zsl_bench.code_identity import run_modules
    from zsl_bench.registry import available_methods, get_method

    before = _keys_now()
    blocks = source_copy / "zsl_bench" / "map_families.py"
    text = blocks.read_text()
    i = text.index("1e-300")   # a constant in executed code: one character changes
    blocks.write_text(text[:i] + "1e-301" + text[i + 6:])
    after = _keys_now()
    importers = {m for m in available_methods() if "zsl_bench.map_families" in run_modules(get_method(m).__module__)}
    assert {m for m in before if before[m] != after[m]} == importers
    assert {"dazle", "transzero", "mgmrn"} <= importers and not importers & {"eszsl", "sae", "ale", "fclswgan"}


def test_regress_reads_only_the_runs_of_this_code(trained_project, tmp_path):
    """A run folder left by other code in the same slot (another key, even a newer one) is never read."""
    from zsl_bench.records import find_run_folders

    repo = tmp_path / "repo"
    (repo / "regress").mkdir(parents=True)
    shutil.copyfile(trained_project / "params.yaml", repo / "regress" / "params.yaml")
    assert regress.regress(repo, trained_project, update=True, progress=False)[0] == 0
    slot = trained_project / "runs" / "synthetic" / "resnet10t" / "train" / "ale" / "seed0"
    (current,) = find_run_folders(slot)
    stale = slot / "0000000000000000"
    shutil.copytree(current, stale)
    record = json.loads((stale / "record.json").read_text())
    record["run_key"] = "0000000000000000"
    when = json.loads((stale / "provenance.json").read_text())
    (stale / "provenance.json").write_text(json.dumps({**when, "created_unix": when["created_unix"] + 1e6}))
    for row in record["traces"]["test"]:   # numbers no current run has: seen if the stale folder were read
        row.update({k: 0.99 for k in row if k.startswith(("H", "T1"))})
    (stale / "record.json").write_text(json.dumps(record))
    code, text = regress.regress(repo, trained_project, progress=False)
    assert code == 0 and "exact mode: all numbers identical" in text, text
    assert np.isfinite(json.loads((repo / "regress" / "golden.json").read_text())["datasets"]["synthetic"]["ale"]
                       ["seeds"]["0"]["H"])


def test_runs_outside_params_yaml_are_named_never_averaged(trained_project):
    """An extra seed trained by hand is left out of compare and of the report, with a one-line notice; the
    Δ row and the method rows then agree with the reports. An unknown dataset is refused."""
    import subprocess

    from zsl_bench import stages
    from zsl_bench.params import load_params
    from zsl_bench.paths import ProjectPaths

    paths = ProjectPaths(trained_project)
    stages.train_run("synthetic", "ale", 7, load_params(paths), paths, progress=False)
    # A scoring variant read off a configured run (as Mg-MRN's per-branch inference sits beside its run) is
    # part of that run: neither counted nor named as outside.
    import shutil

    (configured,) = [p for p in paths.run_slot("synthetic", "resnet10t", "ale", 0).iterdir() if (p / "done").exists()]
    variant = shutil.copytree(configured, configured.parent / ("f" * len(configured.name)))
    record = json.loads((variant / "record.json").read_text())
    record.update(method="ale.variant", run_key=variant.name,
                  score_variant_of={"method": "ale", "run_key": configured.name, "overrides": {}})
    (variant / "record.json").write_text(json.dumps(record))

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "zsl_bench.cli", *args], capture_output=True, text=True,
                              cwd=trained_project)

    out = cli("compare", "eszsl", "ale", "--format", "json")
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)["datasets"][0]["rows"]}
    assert rows["ale"]["n"] == 2 and rows["eszsl"]["n"] == 2
    assert "1 run(s) below runs/ are outside params.yaml and not counted: ale/synthetic/resnet10t/seed7" in out.stderr
    report = cli("report", "--no-mlflow")
    assert report.returncode == 0 and "ale/synthetic/resnet10t/seed7" in report.stderr
    assert "| ale | " in (trained_project / "reports" / "results.md").read_text()
    assert "| 2 | pooled vectors, frozen backbone | no |" in (trained_project / "reports" / "results.md").read_text()
    bad = cli("compare", "eszsl", "--dataset", "CUBB")
    assert bad.returncode == 2 and "unknown dataset 'CUBB'" in bad.stderr and "Traceback" not in bad.stderr


def test_a_mirror_killed_half_way_is_ignored_then_repaired(trained_project):
    """A run left RUNNING without metrics or artifacts (the mirror was killed) is not read as a result, and
    the next sync replaces it; compare from MLflow and from records then agree, n included. MLflow's run
    times are the run's own."""
    from mlflow.tracking import MlflowClient

    from zsl_bench.compare import RENDERERS, compare
    from zsl_bench.paths import ProjectPaths
    from zsl_bench.records import find_records
    from zsl_bench.run_results import load_results
    from zsl_bench.tracking import MIRROR_VERSION, experiment_name, record_tags, sync

    paths = ProjectPaths(trained_project)
    records = find_records(paths.runs)
    assert sync(records, paths.tracking_uri, paths.mlflow_artifacts) == (4, 0)
    c = MlflowClient(tracking_uri=paths.tracking_uri)
    exp = c.get_experiment_by_name(experiment_name())
    victim = next(r for r in records if r.method == "ale" and r.seed == 1)
    (complete,) = c.search_runs([exp.experiment_id], filter_string=f"tags.run_key = '{victim.run_key}'")
    assert complete.info.end_time - complete.info.start_time == int(1000 * victim.wall_s)
    c.delete_run(complete.info.run_id)   # as if a re-mirror had been killed after deleting the old run …
    broken = c.create_run(exp.experiment_id, tags=record_tags(victim))   # … and before finishing the new one
    assert broken.data.tags["zsl_bench.mirror_version"] == MIRROR_VERSION

    half, _ = load_results(paths.runs, paths.tracking_uri, "mlflow")
    table = compare(half, ["eszsl", "ale"])[0]
    assert {r.name: r.n for r in table.rows if r.kind == "method"} == {"eszsl": 2, "ale": 1}
    assert table.rows[1].cells["H"].n == 1, "n is what was averaged"

    assert sync(records, paths.tracking_uri, paths.mlflow_artifacts) == (1, 0)
    assert c.get_run(broken.info.run_id).info.lifecycle_stage == "deleted"
    from_mlflow, _ = load_results(paths.runs, paths.tracking_uri, "mlflow")
    from_records, _ = load_results(paths.runs, None, "records")
    for fmt in ("md", "json"):
        assert (RENDERERS[fmt](compare(from_mlflow, ["eszsl", "ale"]), ["eszsl", "ale"], "X")
                == RENDERERS[fmt](compare(from_records, ["eszsl", "ale"]), ["eszsl", "ale"], "X"))


def _cli(cwd, *args):
    import subprocess

    return subprocess.run([sys.executable, "-m", "zsl_bench.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_a_damaged_predictions_file_is_named_and_the_previous_reports_stay(trained_project):
    out = _cli(trained_project, "report", "--no-mlflow")
    assert out.returncode == 0, out.stderr
    before = {p.relative_to(trained_project): p.read_bytes() for p in (trained_project / "reports").rglob("*")
              if p.is_file()}
    assert any(p.suffix == ".png" for p in before)
    victim = sorted((trained_project / "runs").rglob("predictions.npz"))[0]
    victim.write_bytes(victim.read_bytes()[:100])   # truncated
    for args in (("report", "--no-mlflow"), ("compare", "eszsl", "ale", "--source", "records")):
        out = _cli(trained_project, *args)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        (line,) = [x for x in out.stderr.splitlines() if "error:" in x]   # (progress bars may precede it)
        assert str(victim) in line and "not a readable .npz" in line and "rerun" in line
    after = {p.relative_to(trained_project): p.read_bytes() for p in (trained_project / "reports").rglob("*")
             if p.is_file()}
    assert after == before, "reports/ untouched: tables and figures as they were"
    assert not list(trained_project.glob(".reports.tmp-*")), "no half-built folder left behind"


def test_a_missing_configured_run_refuses_the_report(trained_project):
    out = _cli(trained_project, "report", "--no-mlflow")
    assert out.returncode == 0
    table = (trained_project / "reports" / "results.md").read_text()
    shutil.rmtree(trained_project / "runs" / "synthetic" / "resnet10t" / "train" / "ale" / "seed1")   # as DVC does before a rerun
    out = _cli(trained_project, "report", "--no-mlflow")
    assert out.returncode == 2 and "ale/synthetic/resnet10t/seed1" in out.stderr and "dvc repro" in out.stderr
    assert (trained_project / "reports" / "results.md").read_text() == table


def test_a_truncated_feature_array_stops_a_run_before_training(trained_project):
    from zsl_bench.io import DataError

    pooled = trained_project / "features" / "synthetic" / "resnet10t" / "pooled.npy"
    pooled.write_bytes(pooled.read_bytes()[:-64])
    out = subprocess_run_train(trained_project)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert str(pooled) in out.stderr and "truncated" in out.stderr and "extract" in out.stderr
    assert issubclass(DataError, Exception)


def subprocess_run_train(root):
    import subprocess

    shutil.rmtree(root / "runs" / "synthetic" / "resnet10t" / "train" / "sae", ignore_errors=True)
    return subprocess.run([sys.executable, "-m", "zsl_bench_pipelines.train", "synthetic", "eszsl", "3"], capture_output=True,
                          text=True, cwd=root)


def test_ctrl_c_ends_with_one_line():
    from zsl_bench.errors import guarded

    def interrupted():
        raise KeyboardInterrupt

    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = guarded("stage train", interrupted)
    assert code == 130 and err.getvalue() == "stage train: interrupted; rerun `dvc repro` (or the command) to continue\n"


@pytest.mark.slow
def test_a_method_code_change_moves_every_view(tmp_path):
    """Finding 1-3 end to end, as a contributor meets them: a method folder under methods/ (registered the
    way `pip install -e .` registers one), `dvc repro` with its ablation and the MLflow mirror, a golden file
    from `zsl-bench regress --update`. Then only the method's code changes and `dvc repro` runs again:
    results.md, ablation.md, compare from the records and from MLflow, and regress all show the new code's
    numbers (the two compare sources agreeing), none the old."""
    import os
    import subprocess

    import yaml

    from tests.conftest import write_params

    root = pipeline_checkout(tmp_path / "repo")
    method_file = root / "methods" / "ridge" / "__init__.py"
    method_file.parent.mkdir()
    method_file.write_text(PLUGIN.format(target="train.semantics.att[train.y]")
                           + '    variants = {"strong": {"ridge": 30.0}}\n')
    site = tmp_path / "site" / "ridge_method-0.1.dist-info"   # what pip writes for an entry point
    site.mkdir(parents=True)
    (site / "METADATA").write_text("Metadata-Version: 2.1\nName: ridge-method\nVersion: 0.1\n")
    (site / "entry_points.txt").write_text("[zsl_bench.methods]\nridge = zsl_bench_methods.ridge:Ridge\n")
    write_params(root, methods=("ridge",), seeds=(0, 1))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["ablate"] = {"method": "ridge", "variants": ["strong"], "seeds": [0]}
    params["launch"] = {"launcher": "local", "workers": 1}
    params["tracking"]["mlflow"] = True
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "regress").mkdir()
    shutil.copy(root / "params.yaml", root / "regress" / "params.yaml")
    env = {**checkout_env(root, site.parent), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "HOME": str(tmp_path), "MLFLOW_TRACKING_URI": ""}

    def sh(*cmd, ok=(0,)):
        out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env, timeout=900)
        assert out.returncode in ok, f"{cmd}: {out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        return out.returncode, out.stdout

    def views() -> dict[str, str]:
        zsl = [sys.executable, "-m", "zsl_bench.cli"]
        return {"results.md": (root / "reports" / "results.md").read_text(),
                "ablation.md": (root / "reports" / "ablation.md").read_text(),
                "compare records": sh(*zsl, "compare", "ridge", "--source", "records")[1],
                "compare mlflow": sh(*zsl, "compare", "ridge", "--source", "mlflow")[1]}

    sh("git", "init", "-q")
    sh(sys.executable, "-m", "dvc", "init", "-q")
    sh(sys.executable, "-m", "dvc", "repro")
    sh(sys.executable, "-m", "zsl_bench.cli", "regress", "--update")
    assert sh(sys.executable, "-m", "zsl_bench.cli", "regress")[1].rstrip().endswith("all numbers identical")
    before = views()

    method_file.write_text(method_file.read_text().replace("target = train.semantics.att[train.y]",
                                                           "target = 3.0 * train.semantics.att[train.y] ** 2"))
    _, repro = sh(sys.executable, "-m", "dvc", "repro")
    assert "Running stage 'ablate@synthetic-resnet10t'" in repro and "Running stage 'train@synthetic-resnet10t'" in repro
    after = views()
    unchanged = [name for name in before if before[name] == after[name]]
    assert not unchanged, f"still showing the old code's numbers: {unchanged}"

    def rows(text: str) -> list[str]:   # the table rows, without the line naming the source
        return [line for line in text.splitlines() if line.startswith("| ridge")]
    assert rows(after["compare records"]) == rows(after["compare mlflow"]) != rows(before["compare records"])
    code, text = sh(sys.executable, "-m", "zsl_bench.cli", "regress", ok=(1,))
    assert "MOVED" in text and "FAILED in exact mode" in text
