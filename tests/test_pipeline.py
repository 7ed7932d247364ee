"""End to end on a tiny generated dataset: runs, records, independent recomputation, reports, MLflow."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, checkout_env, pipeline_checkout, write_params
from zsl_bench import report_stage, stages
from zsl_bench.code_identity import READS_TRACES_ONLY, module_file, relative
from zsl_bench.io import DataError
from zsl_bench.params import load_params
from zsl_bench.paths import ProjectPaths
from zsl_bench.records import RunRecord, find_records, write_run


def test_runs_write_complete_records_and_predictions(trained_project):
    records = find_records(trained_project / "runs")
    assert len(records) == 4
    r = next(x for x in records if x["method"] == "ale" and x["seed"] == 1)
    for key in ("run_key", "protocol_version", "config", "seeds", "environment", "data", "selection"):
        assert key in r
    assert r["data"]["features"]["backbone"]["trained_on"]["split"] == "fold1_train"
    assert r["environment"]["python"] and r.peak_rss_mb > 0 and r.wall_s > 0 and r.created_unix > 0
    # Time, memory and host live in provenance.json, outside the record DVC hashes.
    assert not {"resources", "created_unix"} & set(json.loads((r.folder / "record.json").read_text()))
    for policy in ("val", "oracle", "last"):
        assert {"T1", "U", "S", "H", "AUSUC"} <= set(r["selection"][policy]["metrics"])
    # ALE's epoch is chosen on validation; ESZSL has no epochs.
    assert isinstance(r["selection"]["val"]["epoch"], int)
    e = next(x for x in records if x["method"] == "eszsl")
    assert e["selection"]["val"]["epoch"] is None
    with np.load(f"{r['_folder']}/predictions.npz") as p:
        n, c = p["scores_val"].shape
        assert c == len(p["class_ids"]) == len(p["seen_class_mask"])
        assert n == len(p["labels"]) == len(p["unseen_sample_mask"])
        assert p["unseen_sample_mask"].sum() == (~p["seen_class_mask"][p["labels"]]).sum()


def test_independent_script_recomputes_every_recorded_metric(trained_project):
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "recompute_metrics.py"),
                          str(trained_project / "runs"), "--tolerance", "1e-6", "--progress-every", "0"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "4 run folders" in out.stdout
    assert "GZSL evaluations for the brute-force AUSUCs" in out.stderr and "s left" in out.stderr   # long on AWA2


def test_recompute_script_catches_a_tampered_record(trained_project):
    folder = find_records(trained_project / "runs")[0]["_folder"]
    record = json.loads(open(f"{folder}/record.json").read())
    record["selection"]["val"]["metrics"]["H"] += 0.01
    open(f"{folder}/record.json", "w").write(json.dumps(record))
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "recompute_metrics.py"), folder],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "MISMATCH" in out.stdout and "val.H" in out.stdout


def test_a_done_run_is_found_again_not_rerun(trained_project):
    paths = ProjectPaths(trained_project)
    first = stages.train_run("synthetic", "eszsl", 0, load_params(paths), paths, progress=False)
    mtime = (first / "record.json").stat().st_mtime_ns
    again = stages.train_run("synthetic", "eszsl", 0, load_params(paths), paths, progress=False)
    assert again == first and (again / "record.json").stat().st_mtime_ns == mtime


def test_val_selection_never_reads_the_test_sweep(trained_project):
    """Perturbing test scores cannot move the val choice: it is fixed before the test sweep starts."""
    r = next(x for x in find_records(trained_project / "runs") if x["method"] == "ale" and x["seed"] == 0)
    best_val = max(r["traces"]["validation"], key=lambda t: t["H"])
    assert (best_val["config_id"], best_val["epoch"]) == (r["selection"]["val"]["config_id"],
                                                           r["selection"]["val"]["epoch"])
    assert r["selection"]["val"]["metrics"]["gamma"] == pytest.approx(best_val["gamma"])
    # and the oracle is at least as good as val on test, by construction
    assert r["selection"]["oracle"]["metrics"]["H"] >= r["selection"]["val"]["metrics"]["H"] - 1e-12


def test_report_and_compare(trained_project):
    paths = ProjectPaths(trained_project)
    written = report_stage.report(load_params(paths), paths)
    md = (trained_project / "reports" / "results.md").read_text()
    assert [p.name for p in written][:5] == ["results.md", "results.csv", "results.tex", "overlap.md", "ablation.md"]
    assert "Pretraining overlap" in (trained_project / "reports" / "overlap.md").read_text()
    assert "| ale |" in md and "| eszsl |" in md and "ddof = 1" in md and "selection: val" in md
    assert "Std 0 for eszsl" in md
    assert "0 ablation runs" in (trained_project / "reports" / "ablation.md").read_text()
    csv = (trained_project / "reports" / "results.csv").read_text().splitlines()
    assert csv[0].startswith("dataset,backbone,method,policy") and len(csv) == 1 + 2 * 4

    index = (trained_project / "reports" / "README.md").read_text()
    for name in ("results.md", "results.tex", "ablation.md", "figures/synthetic-resnet10t_seen_unseen_curves.png",
                 "figures/synthetic-resnet10t_accuracy_vs_cost.png"):
        assert f"[`{name}`]" in index and (trained_project / "reports" / name).is_file()
    tex = (trained_project / "reports" / "results.tex").read_text()
    assert tex.count(r"\begin{tabular}") == 4 and r"$\pm$" in tex and "ddof" in tex


def test_mlflow_mirror_lists_runs_once(trained_project):
    from mlflow.tracking import MlflowClient

    from zsl_bench.tracking import experiment_name, sync

    paths = ProjectPaths(trained_project)
    records = find_records(paths.runs)
    assert sync(records, paths.tracking_uri, paths.mlflow_artifacts) == (4, 0)
    assert sync(records, paths.tracking_uri, paths.mlflow_artifacts) == (0, 0)  # idempotent
    client = MlflowClient(tracking_uri=paths.tracking_uri)
    exp = client.get_experiment_by_name(experiment_name())
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 4
    run = next(x for x in runs if x.data.tags["method"] == "ale" and x.data.tags["seed"] == "0")
    assert run.info.run_name == "ale s0"
    assert run.data.tags["selection"] == "val" and run.data.tags["protocol_version"]
    rec = next(x for x in records if x["method"] == "ale" and x["seed"] == 0)
    assert run.data.metrics["val.H"] == rec.metrics("val")["H"] == round(100 * rec["selection"]["val"]["metrics"]["H"], 4)
    assert run.data.metrics["val.gamma"] == rec["selection"]["val"]["metrics"]["gamma"]   # γ is not a percent
    # what a reader of the runs table needs at once: the headline under short names, tags to group by, and
    # the dataset as an MLflow dataset input (the Dataset column and its filter)
    assert {k: run.data.metrics[k] for k in ("T1", "U", "S", "H", "AUSUC")} == rec.metrics("val")
    assert {k: run.data.tags[k] for k in ("method", "dataset", "seed", "input", "backbone", "precision")} == \
        {"method": "ale", "dataset": "synthetic", "seed": "0", "input": "vector", "backbone": "resnet10t",
         "precision": "fp32"}
    (given,) = run.inputs.dataset_inputs
    assert (given.dataset.name, given.dataset.digest) == ("synthetic", rec["data"]["dataset_fingerprint"][:16])


def test_a_failed_write_leaves_no_run_folder(tmp_path, monkeypatch):
    import zsl_bench.records as records

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(records, "write_json", boom)
    with pytest.raises(OSError):
        write_run(tmp_path / "slot" / "key", {"schema_version": 1}, {"x": np.zeros(2)}, {"W": np.zeros(2)})
    assert not (tmp_path / "slot" / "key").exists()
    assert list((tmp_path / "slot").iterdir()) == []


def test_unknown_source_and_missing_params_fail_clearly(tmp_path):
    write_params(tmp_path)
    paths = ProjectPaths(tmp_path)
    params = load_params(paths)
    params["sources"]["nowhere"] = {}
    with pytest.raises(DataError, match="unknown dataset 'nowhere'; zsl-bench's datasets are .*synthetic"):
        stages.prepare("nowhere", params, paths, progress=False)
    with pytest.raises(DataError, match="unknown dataset 'nowhere'"):
        stages.backbone("nowhere", params, paths, progress=False)
    params["sources"]["CUB"] = {}
    with pytest.raises(DataError, match=r"params.yaml: no backbone.CUB or extract.CUB section for dataset CUB"):
        stages.backbone("CUB", params, paths, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="params.yaml: not found"):
        load_params(ProjectPaths(empty))


def test_record_schema_mismatch_is_reported(trained_project):
    folder = find_records(trained_project / "runs")[0]["_folder"]
    record = json.loads(open(f"{folder}/record.json").read())
    record["schema_version"] = 99
    open(f"{folder}/record.json", "w").write(json.dumps(record))
    with pytest.raises(DataError, match="schema version 99"):
        RunRecord.read(folder)


# What every stage script imports to read params.yaml and apply the error policy; it cannot change a
# stage's outputs. (The check of params.yaml imports no method; what it does import — the data sources and
# the settings dataclasses — is in every stage's deps.)
ERROR_POLICY = ("pipelines/__init__.py", "pipelines/_common.py", "zsl_bench/errors.py", "zsl_bench/params.py",
                "zsl_bench/import_log.py", "zsl_bench/__init__.py", "methods/__init__.py")   # and package markers


def stage_deps(dvc_yaml: dict, stage: str, args: list[str], params: dict) -> list[str]:
    """The deps of one expanded stage (foreach item or matrix item) of dvc.yaml."""
    spec = dvc_yaml["stages"][stage]
    deps = (spec.get("do") or spec)["deps"]
    out = []
    for d in deps:
        d = d.replace("${ablate.method}", params["ablate"]["method"])
        if spec.get("foreach") == "${features}":   # per (dataset, backbone): the stage's args are both
            d = d.replace("${item.dataset}", args[0]).replace("${item.backbone}", args[1])
        else:
            d = d.replace("${item}", args[0] if args else "")
        out.append(d)
    return out


@pytest.mark.slow
def test_dvc_repro_runs_everything_then_nothing_and_stage_deps_cover_imports(tiny_project, tmp_path):
    """The real pipeline definition on the tiny configuration, in a fresh git + DVC repository. Each stage
    logs the project files it imported; every one must be a declared dep of that stage (or only check
    params.yaml), so a stale output cannot happen silently. A method's hyperparameter changed in
    params.yaml re-runs exactly that method's train stages (and the report). A cold rerun of the unchanged
    tree (every output and DVC's cache deleted) rewrites neither dvc.lock nor any report but the one figure
    that plots measured time."""
    import json
    import os

    import yaml

    root = pipeline_checkout(tmp_path / "repo")
    write_params(root, methods=("eszsl", "sae"), seeds=(0,))
    log = tmp_path / "imports.jsonl"
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path), "ZSL_BENCH_IMPORT_LOG": str(log)}
    env = {**checkout_env(root), **env}

    def sh(*cmd):
        out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env, timeout=600)
        assert out.returncode == 0, f"{cmd}: {out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        return out.stdout + out.stderr

    sh("git", "init", "-q")
    sh(sys.executable, "-m", "dvc", "init", "-q")
    first = sh(sys.executable, "-m", "dvc", "repro")
    assert "Running stage 'report'" in first
    assert (root / "reports" / "results.md").is_file()
    second = sh(sys.executable, "-m", "dvc", "repro")
    # nothing re-runs but the mirror's check (always run: DVC skips the report stage when reports/ matches)
    assert re.findall(r"Running stage '([^']+)'", second) == ["mirror"]

    def snapshot():
        files = [root / "dvc.lock", *sorted((root / "reports").rglob("*"))]
        return {f.relative_to(root).as_posix(): f.read_bytes() for f in files if f.is_file()}

    before = snapshot()
    for out in ("data", "features", "runs", "reports", ".dvc/cache"):
        shutil.rmtree(root / out)
    cold = sh(sys.executable, "-m", "dvc", "repro")
    assert "Running stage 'backbone@synthetic-resnet10t'" in cold and "Running stage 'train@synthetic-resnet10t'" in cold
    after = snapshot()
    assert set(after) == set(before)
    changed = sorted(k for k in before if before[k] != after[k])
    assert changed == ["reports/figures/synthetic-resnet10t_accuracy_vs_cost.png"], \
        f"a cold rerun of an unchanged tree rewrote {changed}: run-to-run noise inside a DVC output"

    dvc_yaml = yaml.safe_load((root / "dvc.yaml").read_text())
    params = yaml.safe_load((root / "params.yaml").read_text())
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert {e["stage"] for e in entries} >= {"prepare", "backbone", "extract", "train", "report"}
    uncovered = {}
    for e in entries:
        deps = stage_deps(dvc_yaml, e["stage"], e["args"], params)
        # the stages that run methods leave out, by design, the modules that only read traces (policies.py)
        reads_traces = {relative(module_file(m)) for m in READS_TRACES_ONLY} if e["stage"] in ("train", "ablate") else set()
        missing = [f for f in e["files"] if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)
                   and f not in ERROR_POLICY and f not in reads_traces]
        if missing:
            uncovered[e["stage"]] = sorted(set(uncovered.get(e["stage"], [])) | set(missing))
    assert not uncovered, f"stages import files their dvc.yaml deps do not list: {uncovered}"
    report = next(e for e in entries if e["stage"] == "report")
    assert not {"zsl_bench/runner.py", "zsl_bench/model_views.py", "zsl_bench/feature_extraction.py",
                "zsl_bench/evaluator.py", "zsl_bench/torch_methods.py", "zsl_bench/map_families.py"} & set(report["files"]), \
        "the report stage reads run folders only: it never builds a model"

    def run_folders(method):
        return {p: (p / "record.json").stat().st_ino
                for p in (root / "runs" / "synthetic" / "resnet10t" / "train" / method / "seed0").iterdir() if p.is_dir()}

    eszsl_before = run_folders("eszsl")
    params["methods"]["sae"] = {"hparams": {"synthetic": {"lambda": 0.5}}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    third = sh(sys.executable, "-m", "dvc", "repro")
    ran = sorted(set(re.findall(r"Running stage '([^']+)'", third)))
    # the ablate stage reads the train stage's runs (its official rows may be them), so it reruns too, finding
    # every one of its runs by its key
    assert ran == ["ablate@synthetic-resnet10t", "mirror", "report", "train@synthetic-resnet10t"], ran
    assert run_folders("eszsl") == eszsl_before, "an unchanged method was retrained, not found by its key"
    (old_sae,) = [p for p in (root / "runs" / "synthetic" / "resnet10t" / "train" / "sae" / "seed0").iterdir()   # the older key pruned
                  if json.loads((p / "record.json").read_text())["method"] == "sae"]   # (not its scoring variant)

    # Killed after the run folder was written but before DVC recorded the stage: the rerun adopts the
    # complete folder (same inode, not retrained) instead of deleting it and training again.
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    del lock["stages"]["train@synthetic-resnet10t"]
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    (folder,) = [p for p in (root / "runs" / "synthetic" / "resnet10t" / "train" / "eszsl" / "seed0").iterdir()]
    inode = (folder / "record.json").stat().st_ino
    fourth = sh(sys.executable, "-m", "dvc", "repro")
    assert "Running stage 'train@synthetic-resnet10t'" in fourth
    assert (folder / "record.json").stat().st_ino == inode and old_sae.is_dir()

    # A second backbone is a new pair of stages: nothing of the first backbone's re-runs.
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["features"]["synthetic-vit"] = {"dataset": "synthetic", "backbone": "vit"}
    params["backbone"]["synthetic"]["vit"] = {"arch": "vit_tiny_patch16_224", "input_size": 32, "epochs": 1,
                                              "model_kwargs": {"depth": 2, "embed_dim": 32, "num_heads": 2,
                                                               "patch_size": 8}}
    params["extract"]["synthetic"]["vit"] = {"levels": ["blocks.0", "blocks.1"], "input_size": 32}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    fifth = sh(sys.executable, "-m", "dvc", "repro")
    ran = sorted(set(re.findall(r"Running stage '([^']+)'", fifth)))
    assert ran == ["ablate@synthetic-vit", "backbone@synthetic-vit", "extract@synthetic-vit", "mirror", "report",
                   "train@synthetic-vit"], ran
    results = (root / "reports" / "results.md").read_text()
    assert "## synthetic/resnet10t — selection: val" in results and "## synthetic/vit — selection: val" in results


def test_runs_that_searched_no_hyperparameters_say_so(project_copy):
    """`train.search: none` (or `--no-search`): the tables and compare mark the method and say what it means."""
    from zsl_bench.table_cells import NOT_SEARCHED_NOTE
    from zsl_bench.run_results import load_results

    paths = ProjectPaths(project_copy)
    params = load_params(paths)
    params["train"]["search"] = False
    for seed in (0, 1):
        stages.train_run("synthetic", "eszsl", seed, params, paths, progress=False)
    params["train"]["search"] = True
    for seed in (0, 1):
        stages.train_run("synthetic", "ale", seed, params, paths, progress=False)
    report_stage.report(params, paths, progress=False)
    text = (project_copy / "reports" / "results.md").read_text()
    rows = {line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")}
    assert {"eszsl †", "ale"} <= rows and "ale †" not in rows
    assert NOT_SEARCHED_NOTE in text
    assert r"eszsl \dag{}" in (project_copy / "reports" / "results.tex").read_text()
    from zsl_bench.compare import RENDERERS, compare

    results, _ = load_results(paths.runs, None, "records")
    out = RENDERERS["md"](compare(results, ["eszsl", "ale"]), ["eszsl", "ale"], "test")
    assert "eszsl †" in out and NOT_SEARCHED_NOTE in out


def test_the_train_stage_applies_one_thread_rule_to_torch_and_blas(project_copy, monkeypatch):
    """ZSL_BENCH_THREADS (else the cores this process may use) sets torch's and BLAS's pools in every stage,
    vector methods included; the run records the count it ran with."""
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    from zsl_bench.records import RunRecord
    from zsl_bench.runtime import THREADS_ENV

    paths = ProjectPaths(project_copy)
    params = load_params(paths)
    before = torch.get_num_threads()
    monkeypatch.setenv(THREADS_ENV, "1")
    try:
        with threadpool_limits(limits=None):   # gives this process its BLAS pools back afterwards
            folder = stages.train_run("synthetic", "eszsl", 0, params, paths, progress=False)
            blas = {p["internal_api"]: p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}
            assert blas and set(blas.values()) == {1}, blas
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert RunRecord.read(folder)["environment"]["threads"] == 1


def test_a_method_the_features_cannot_serve_is_skipped_and_every_table_says_why(region_project, tmp_path):
    """Imported vectors (backbone source xlsa17_res101) hold no maps: a map method's train stage records a skip
    with its reason instead of failing, the report is written, and results.md, results.csv and compare show
    the reason in the method's cells; once the store can serve it, the skip marker goes."""
    from zsl_bench.compare import RENDERERS, compare
    from zsl_bench.records import SKIPPED_FILE
    from tests.conftest import copy_project
    from zsl_bench.run_results import load_results

    project_copy = copy_project(region_project, tmp_path / "project")
    paths = ProjectPaths(project_copy)
    index_file = paths.features("synthetic", "resnet10t") / "index.json"
    original = index_file.read_text()
    index = json.loads(original)
    index["arrays"] = {"pooled": index["arrays"]["pooled"]}
    index["backbone_spec"] = {**index["backbone_spec"], "source": "xlsa17_res101"}
    index_file.write_text(json.dumps(index))
    params = load_params(paths)
    params["train"].update(methods=["eszsl", "dazle"], seeds=[0])
    params["methods"]["dazle"] = {}
    for method in ("eszsl", "dazle"):
        stages.train_run("synthetic", method, 0, params, paths, progress=False)
    slot = paths.run_slot("synthetic", "resnet10t", "dazle", 0)
    assert (slot / SKIPPED_FILE).is_file() and not [p for p in slot.iterdir() if p.is_dir()]
    report_stage.report(params, paths, progress=False)
    text = (project_copy / "reports" / "results.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| dazle |"))
    assert "— (skipped: dazle needs layer4, and synthetic's features are imported from xlsa17_res101" in row
    assert "skipped: dazle needs layer4" in (project_copy / "reports" / "results.csv").read_text()
    results, _ = load_results(paths.runs, None, "records")
    skipped, _ = report_stage.skipped_runs(params, paths)
    out = RENDERERS["md"](compare(results, ["eszsl", "dazle"], skipped=skipped), ["eszsl", "dazle"], "test")
    assert "skipped: dazle needs layer4" in out

    index_file.write_text(original)   # the maps are back: dazle runs, and its slot is no longer marked
    stages.train_run("synthetic", "dazle", 0, params, paths, progress=False)
    assert not (slot / SKIPPED_FILE).exists()


def test_report_writes_the_comparisons_params_yaml_names(trained_project):
    """`compare.<name>` → reports/comparisons.md: `zsl-bench compare`'s tables (val and paper), the paired Δ
    per seed with its bootstrap interval, under the question asked."""
    paths = ProjectPaths(trained_project)
    params = load_params(paths)
    params["compare"] = {"ranking-or-ridge": {"methods": ["eszsl", "ale"], "question": "Does ranking beat ridge?"}}
    written = report_stage.report(params, paths)
    text = (trained_project / "reports" / "comparisons.md").read_text()
    assert "comparisons.md" in [p.name for p in written]
    assert "# ranking-or-ridge: eszsl vs ale" in text and "Does ranking beat ridge?" in text
    assert "## val · synthetic" in text and "## paper · synthetic" in text
    assert text.count("| Δ ale − eszsl") == 2 and "95 % paired bootstrap" in text
    assert "[`comparisons.md`]" in (trained_project / "reports" / "README.md").read_text()


def test_a_comparison_of_methods_not_trained_is_skipped_with_one_line(trained_project):
    """Restricting train.methods leaves the `compare` section valid (it was a config error that stopped every
    command): the report skips a comparison naming a method that is not trained, saying which, and still
    writes the others; a comparison of fewer than two methods, or an unknown key, is still an error."""
    from zsl_bench.io import ConfigError
    from zsl_bench.params import validate

    paths = ProjectPaths(trained_project)
    params = load_params(paths)
    params["compare"] = {"q": {"methods": ["eszsl", "mgmrn"], "question": ""},
                         "r": {"methods": ["eszsl", "ale"], "question": ""}}
    validate(params, trained_project / "params.yaml")
    report_stage.report(params, paths)
    text = (trained_project / "reports" / "comparisons.md").read_text()
    assert "# q: eszsl vs mgmrn\n\n\n\n— skipped: mgmrn not in train.methods" in text
    assert "# r: eszsl vs ale" in text and text.count("| Δ ale − eszsl") == 2
    # The release-only quick start replaces `features`: a row on a backbone params.yaml still describes but
    # `features` leaves out is skipped the same way (that was an error stopping `dvc repro` at its first stage).
    params["backbone"]["synthetic"]["vit"] = {}
    params["compare"] = {"own": {"methods": ["eszsl@vit", "ale@resnet10t"], "question": ""},
                         "r": {"methods": ["eszsl", "ale"], "question": ""}}
    validate(params, trained_project / "params.yaml")
    report_stage.report(params, paths)
    text = (trained_project / "reports" / "comparisons.md").read_text()
    assert "# own: eszsl@vit vs ale@resnet10t\n\n\n\n— skipped: backbone vit not in `features`" in text
    assert text.count("| Δ ale − eszsl") == 2
    params["compare"] = {"q": {"methods": ["eszsl"], "question": ""}}
    with pytest.raises(ConfigError, match="compare.q.methods must name two or more methods"):
        validate(params, trained_project / "params.yaml")
    params["compare"] = {"q": {"methods": ["eszsl"], "sorted": True}}
    with pytest.raises(ConfigError, match="unknown key compare.q.sorted"):
        validate(params, trained_project / "params.yaml")


def test_the_train_stage_keeps_runs_a_user_made_by_hand(trained_project, capfd):
    """`zsl-bench train --seed 7` is one more run outside DVC (README): a train stage re-run keeps it and says
    so in one line, while a slot the stage itself made and params.yaml no longer names is removed."""
    paths = ProjectPaths(trained_project)
    params = load_params(paths)
    stages.train("synthetic", params, paths, progress=False)       # the stage makes (adopts) seeds 0 and 1
    by_hand = stages.train_run("synthetic", "ale", 7, params, paths, progress=False)
    params["train"]["seeds"] = [0]
    capfd.readouterr()
    stages.train("synthetic", params, paths, progress=False)
    assert by_hand.is_dir(), "a run made by hand was deleted"
    assert "kept 1 run slot(s) made outside params.yaml (ale/seed7)" in capfd.readouterr().err
    assert not paths.run_slot("synthetic", "resnet10t", "ale", 1).exists() and not paths.run_slot("synthetic", "resnet10t", "eszsl", 1).exists()
    assert paths.run_slot("synthetic", "resnet10t", "eszsl", 0).is_dir()


def test_the_mirror_stage_rebuilds_a_missing_mirror_and_is_a_no_op_when_current(trained_project):
    """A fresh clone's `dvc repro` skips the report stage (the committed reports match), which used to leave
    no MLflow mirror at all. The `mirror` stage (always run) rebuilds it from runs/ and reports/; run again it
    adds nothing and keeps the same report run. (Each step in its own process, as DVC runs them.)"""
    import os

    import yaml
    from mlflow.tracking import MlflowClient

    from zsl_bench.run_results import from_mlflow
    from zsl_bench.tracking import experiment_name

    paths = ProjectPaths(trained_project)
    params_file = trained_project / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["tracking"] = {"mlflow": True, "uri": None}
    params_file.write_text(yaml.safe_dump(params))

    def stage(name):
        out = subprocess.run([sys.executable, "-m", f"zsl_bench_pipelines.{name}"], cwd=trained_project, capture_output=True,
                             text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stderr

    stage("report")
    shutil.rmtree(paths.mlflow_artifacts, ignore_errors=True)
    paths.mlflow_db.unlink()                                   # as in a fresh clone: reports/ but no mirror
    assert "MLflow mirror: 4 run(s) added, 0 removed" in stage("mirror")
    assert sorted((r.method, r.seed) for r in from_mlflow(paths.tracking_uri)) == \
        [("ale", 0), ("ale", 1), ("eszsl", 0), ("eszsl", 1)]
    client = MlflowClient(tracking_uri=paths.tracking_uri)
    exp = client.get_experiment_by_name(experiment_name())
    reports_run = lambda: [r.info.run_id for r in client.search_runs([exp.experiment_id])   # noqa: E731
                           if r.data.tags.get("report_dataset") == "synthetic"]
    first = reports_run()
    assert len(first) == 1
    assert "MLflow mirror: 0 run(s) added, 0 removed" in stage("mirror") and reports_run() == first


def test_a_scoring_variant_s_record_states_the_settings_its_numbers_used(project_copy):
    """`sae.raw-w` scores SAE's fitted models with W as fitted: its record says `w_norm: none` wherever it
    lists a configuration (every policy's hparams, config.configs), not the method's `rows`."""
    paths = ProjectPaths(project_copy)
    folder = stages.train_run("synthetic", "sae", 0, load_params(paths), paths, progress=False)
    by_method = {r["method"]: r for r in find_records(folder.parent)}
    variant, base = by_method["sae.raw-w"], by_method["sae"]
    for record, w_norm in ((variant, "none"), (base, "rows")):
        listed = [*record["config"]["configs"],
                  *(c for c in record["selected_configs"].values() for c in (c.values() if set(c) <= {"T1", "H", "AUSUC"} else [c]))]
        assert {c["w_norm"] for c in listed} == {w_norm}, (record["method"], listed)
    assert variant["score_variant_of"]["overrides"] == {"w_norm": "none"}
