"""CLI smoke tests: the installed `zsl-bench` command, as a user types it."""
import shutil
import subprocess
import sys

import pytest

from tests.conftest import write_params

EXE = shutil.which("zsl-bench") or f"{sys.prefix}/bin/zsl-bench"


def run(*args, cwd=None):
    return subprocess.run([EXE, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_help_explains_the_verbs_without_importing_heavy_libraries():
    out = run("--help")
    assert out.returncode == 0
    for verb in ("compare", "report", "train", "methods", "dvc repro", "mlflow ui"):
        assert verb in out.stdout
    # --help must not pay for torch / mlflow / pandas imports
    probe = subprocess.run([sys.executable, "-X", "importtime", "-c",
                            "import sys; from zsl_bench.cli import main; "
                            "sys.argv=['zsl-bench','--help']\ntry: main()\nexcept SystemExit: pass"],
                           capture_output=True, text=True)
    imported = probe.stderr
    for heavy in ("torch", "mlflow", "pandas", "timm"):
        assert f" {heavy}\n" not in imported and f"| {heavy}\n" not in imported, f"--help imports {heavy}"


def test_methods_lists_the_plugins():
    out = run("methods")
    assert out.returncode == 0
    assert "eszsl" in out.stdout and "uses_unseen_semantics=false" in out.stdout


def test_compare_train_and_report_in_a_project(project_copy):
    assert run("train", "--method", "eszsl", "--seed", "0", "--no-search", cwd=project_copy).returncode == 0
    assert run("train", "--method", "sae", "--seed", "0", "--no-search", cwd=project_copy).returncode == 0
    out = run("compare", "eszsl", "sae", cwd=project_copy)
    assert out.returncode == 0, out.stderr
    assert "selection val (headline)" in out.stdout and "sae − eszsl" in out.stdout
    out = run("compare", "eszsl", "sae", "--selection", "oracle", cwd=project_copy)
    assert "oracle: test-selected" in out.stdout
    write_params(project_copy, methods=("eszsl", "sae"), seeds=(0,))
    out = run("report", "--no-mlflow", cwd=project_copy)
    assert out.returncode == 0, out.stderr
    assert (project_copy / "reports" / "results.md").is_file()


def test_errors_are_one_clear_line(tmp_path):
    out = run("report", cwd=tmp_path)
    assert out.returncode == 2
    assert "params.yaml: not found" in out.stderr and "Traceback" not in out.stderr
    write_params(tmp_path)
    out = run("train", "--method", "nope", cwd=tmp_path)
    assert out.returncode == 2 and "unknown method 'nope'" in out.stderr
    out = run("train", "--method", "eszsl", cwd=tmp_path)
    assert out.returncode == 2 and "run the prepare stage first" in out.stderr
    # a dataset that does not exist is named as such, not as a stage to run (issue 27, item 6)
    out = run("train", "--method", "eszsl", "--dataset", "NOSUCH", cwd=tmp_path)
    assert out.returncode == 2 and "unknown dataset 'NOSUCH'; zsl-bench's datasets are" in out.stderr
    assert "prepare stage" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    out = run("prepare", "NOSUCH", cwd=tmp_path)
    assert out.returncode == 2 and "unknown dataset 'NOSUCH'" in out.stderr and "missing key" not in out.stderr
    out = run("prepare", "CUB", cwd=tmp_path)   # a real dataset this params.yaml has no sections for
    assert out.returncode == 2 and "no sources.CUB or backbone.CUB or extract.CUB section" in out.stderr
    # negative seeds name no run slot: refused before anything is written (item 5)
    out = run("train", "--method", "eszsl", "--seed", "-1", cwd=tmp_path)
    assert out.returncode == 2 and "--seed must be a non-negative integer, not -1" in out.stderr
    assert not (tmp_path / "runs").exists()
    out = run("compare", "eszsl", "ale", cwd=tmp_path)
    assert out.returncode == 1 and "no runs of eszsl, ale found" in out.stderr and "dvc repro" in out.stderr


@pytest.mark.parametrize("stage", ["prepare", "backbone", "extract"])
def test_pipeline_stage_scripts_report_bad_input(tmp_path, stage):
    write_params(tmp_path)
    out = subprocess.run([sys.executable, "-m", f"zsl_bench_pipelines.{stage}", "nowhere"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "nowhere" in out.stderr


BAD_PARAMS = [
    (lambda p: p["train"].update(seeds=[0], sede=1), "unknown key train.sede; allowed: methods, seeds, folds"),
    (lambda p: p["train"].update(folds="one"), "train.folds must be auto or a list of fold numbers"),
    (lambda p: p["train"].update(search="random:x"), "train.search must be grid, none or random:N"),
    (lambda p: p["train"].update(methods=["eszsl", "nosuch"]), "unknown method 'nosuch'; available: "),
    (lambda p: p["train"].update(methods=["eszsl", "nosuch.image"]), "unknown method 'nosuch.image'; available: "),
    (lambda p: p["train"].update(methods=["eszsl", "mgmrn.imag"]), "train.methods: mgmrn has no variant 'imag'"),
    (lambda p: p["extract"]["synthetic"]["resnet10t"].update(input_sise=64),
     "unknown key extract.synthetic.resnet10t.input_sise"),
    (lambda p: p["features"].update({"synthetic-vit": {"dataset": "synthetic", "backbone": "vit"}}),
     "features.synthetic-vit: no backbone.synthetic.vit section"),
    (lambda p: p["features"].update({"vit": {"dataset": "synthetic", "backbone": "vit"}}),
     "features.vit: the entry of (synthetic, vit) is named synthetic-vit"),
    (lambda p: p.update(features={}), "dataset synthetic has no entry in `features`"),
    (lambda p: p["backbone"]["synthetic"].update({"vit/b": {}}), "backbone.synthetic.vit/b: a backbone name is"),
    (lambda p: p["ablate"].update(backbones="first"), "ablate.backbones must be default"),
    (lambda p: p["sources"]["synthetic"].update(n_clases=3), "unknown key sources.synthetic.n_clases"),
    (lambda p: p.update(trian={}), "unknown section 'trian'"),
    (lambda p: p["methods"].update(ale={"hparams": {"synthetic": {"lr": 0.1, "epoch": 3}}}),
     "methods.ale.hparams.synthetic: method ale has no hyperparameter 'epoch'"),
    (lambda p: p["methods"].pop("ale"), "missing methods.ale (write `ale: {}` under `methods:`"),
    (lambda p: p["train"].update(seeds=[0, 1, -1]), "train.seeds must be non-negative integers"),
    (lambda p: p["ablate"].update(seeds=[-2]), "ablate.seeds must be non-negative integers"),
    (lambda p: p.update(compare={"own": {"methods": ["eszsl@resnet10t", "ale"]}}),
     "compare.own.methods: name every row METHOD@BACKBONE with a backbone params.yaml describes (resnet10t), or none"),
    (lambda p: p.update(compare={"own": {"methods": ["eszsl@resnet10t", "ale@swin"]}}),
     "compare.own.methods: name every row METHOD@BACKBONE"),
]


def _bad_params(root, edit):
    import yaml

    write_params(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    edit(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.mark.parametrize("edit,message", BAD_PARAMS)
def test_the_params_check_names_the_file_the_key_and_what_is_allowed(tmp_path, edit, message):
    from zsl_bench.io import ConfigError
    from zsl_bench.params import check_method_settings, load_params
    from zsl_bench.paths import ProjectPaths

    _bad_params(tmp_path, edit)
    with pytest.raises(ConfigError) as e:   # hyperparameter names: checked by the stages that run methods
        check_method_settings(load_params(ProjectPaths(tmp_path)), tmp_path / "params.yaml")
    assert message in str(e.value) and str(tmp_path / "params.yaml") in str(e.value)


def test_train_methods_may_name_a_variant_such_as_image_mode(tmp_path):
    """`mgmrn.image` (Mg-MRN fine-tuning its backbone, for GPUs) is a train stage method like any other: its
    base's `methods` entry configures it, and it gets its own slot."""
    import yaml

    from zsl_bench.params import check_method_settings, load_params
    from zsl_bench.paths import ProjectPaths
    from zsl_bench.stages import train_jobs

    write_params(tmp_path)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["train"]["methods"] = ["eszsl", "mgmrn.image"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    loaded = load_params(ProjectPaths(tmp_path))
    check_method_settings(loaded, tmp_path / "params.yaml")
    jobs = train_jobs("synthetic", loaded, ProjectPaths(tmp_path), inputs_checked=False)
    assert [j.request.method for j in jobs] == ["eszsl", "eszsl", "mgmrn.image", "mgmrn.image"]
    assert jobs[-1].slot.endswith("mgmrn.image/seed1") and jobs[-1].request.defaults["mode"] == "image"


@pytest.mark.parametrize("stage", ["prepare synthetic", "train synthetic eszsl 0"])
def test_a_bad_params_file_stops_every_stage_with_one_line_and_exit_2(tmp_path, stage):
    edit, message = BAD_PARAMS[0]
    _bad_params(tmp_path, edit)
    out = subprocess.run([sys.executable, "-m", f"zsl_bench_pipelines.{stage.split()[0]}", *stage.split()[1:]], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and str(tmp_path / "params.yaml") in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists(), "no work before the check"


def test_unknown_methods_are_refused_and_debug_shows_the_traceback(tmp_path):
    write_params(tmp_path)
    out = run("compare", "nosuchmethod", "eszsl", cwd=tmp_path)
    assert out.returncode == 2 and "unknown method 'nosuchmethod'; available: " in out.stderr
    assert "Traceback" not in out.stderr
    out = run("--debug", "compare", "nosuchmethod", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" in out.stderr


def test_datasets_explains_every_source_on_a_fresh_clone(tmp_path):
    out = run("datasets", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    for expected in ("CUB: missing", "SUN: missing", "AWA2: missing", "synthetic: missing",
                     "zsl-bench download CUB", "CUB_200_2011.tgz: missing, 1.2 GB", "generated offline"):
        assert expected in out.stdout
    out = run("download", "synthetic", cwd=tmp_path)
    assert out.returncode == 0 and "nothing to download" in out.stdout
    out = run("download", "MNIST", cwd=tmp_path)
    assert out.returncode == 2 and "MNIST" in out.stderr


def test_backbone_and_extract_verbs_run_their_stage(tiny_project, tmp_path):
    """`zsl-bench backbone DS` and `zsl-bench extract DS`: the stages dvc.yaml runs, typed by hand."""
    import json

    from tests.conftest import copy_project

    root = copy_project(tiny_project, tmp_path / "project")
    for d in ("data/backbones", "features"):
        shutil.rmtree(root / d)
    out = run("backbone", "synthetic", cwd=root)
    assert out.returncode == 0, out.stderr
    spec = json.loads((root / "data" / "backbones" / "synthetic" / "resnet10t" / "backbone.json").read_text())["spec"]
    assert spec["source"] == "train_on_seen" and "epochs" in spec and "weights_file" not in spec
    out = run("extract", "synthetic", cwd=root)
    assert out.returncode == 0, out.stderr
    assert (root / "features" / "synthetic" / "resnet10t" / "index.json").is_file()
    assert run("extract", "nowhere", cwd=root).returncode == 2


def test_an_imported_backbone_records_only_what_applies():
    from zsl_bench.backbone import BackboneSpec

    recorded = BackboneSpec(arch="resnet101.tv_in1k", source="xlsa17_res101", epochs=12, lr=0.1).applicable()
    assert set(recorded) == {"arch", "source", "pretraining_data"} and recorded["arch"].startswith("resnet101 (Caffe")
    assert "lr" not in BackboneSpec(source="pretrained").applicable()
