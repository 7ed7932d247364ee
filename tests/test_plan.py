"""`zsl-bench plan`: the steps it counts are the steps the methods' loops run, its time comes from the
source it names, runs record what was planned for them, and its memory advice follows the model it states."""
import json

import pytest
import yaml

from tests.conftest import copy_project
from zsl_bench import plan
from zsl_bench.params import load_params
from zsl_bench.paths import ProjectPaths

# Short schedules so that each run trains in seconds; each keeps its method's own sampler and cadence.
SHORT = {"dazle": {"epochs": 2}, "rezsl": {"epochs": 2, "batches_per_epoch": 0}, "mgmrn": {"epochs": 1},
         "fclswgan": {"epochs": 2, "pretrain_epochs": 1, "classifier_epochs": 1, "ngh": 32, "ndh": 32},
         "ale": {"epochs": 2}}


def _configure(root, methods, seeds=(0,)):
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"].update(methods=list(methods), seeds=list(seeds), search="none")
    params["methods"] = {m: {"hparams": {"synthetic": SHORT.get(m, {})}} for m in (*methods, "mgmrn")}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return load_params(ProjectPaths(root))


def test_the_counted_steps_are_the_steps_each_loop_runs(region_project, tmp_path, monkeypatch):
    """Each schedule kind through a real fit: DAZLE's checkpoint steps, ReZSL's episodes of n / (ways ×
    shots), Mg-MRN's own loop (three branch updates per step), f-CLSWGAN's critic iterations. The plan's count
    for the run equals the sum of the last steps of every fit's loop, and a new run's provenance records it."""
    from zsl_bench import stages
    from zsl_bench.records import RunRecord
    from zsl_bench.training import TrainLoop

    root = copy_project(region_project, tmp_path / "project")
    methods = ("dazle", "rezsl", "mgmrn", "fclswgan")
    params = _configure(root, methods)
    paths = ProjectPaths(root)
    ran: list[int] = []
    original = TrainLoop.run
    monkeypatch.setattr(TrainLoop, "run", lambda self, stream, update, checkpoints, **kw: (
        ran.append(max(checkpoints)), original(self, stream, update, checkpoints, **kw))[1])
    for method in methods:
        ran.clear()
        folder = stages.train_run("synthetic", method, 0, params, paths, progress=False)
        counted = plan.run_facts(RunRecord.read(folder), paths)["steps"]
        assert len(ran) == 2 and counted == sum(ran), (method, ran, counted)   # fold 1 + the trainval refit
        recorded = json.loads((folder / "provenance.json").read_text())[plan.PLAN_KEY]
        assert recorded["steps"] == counted and recorded["device_kind"] == plan.device_kind("cpu")
        assert recorded["feature_set"] == "synthetic/resnet10t" and recorded["precision"] == "fp32"


def test_plan_counts_what_is_left_and_times_it_from_the_runs_made_here(region_project, tmp_path, capsys):
    """After one of two seeds ran, the plan says one run done and one to run, and times the one left from
    the finished run's own wall time ÷ its steps (labelled); a method never run here and never benchmarked on
    this kind is listed as unmeasured, not guessed."""
    from zsl_bench import stages
    from zsl_bench.cli import main

    root = copy_project(region_project, tmp_path / "project")
    params = _configure(root, ("ale", "eszsl"), seeds=(0, 1))
    paths = ProjectPaths(root)
    done = stages.train_run("synthetic", "ale", 0, params, paths, progress=False)
    p = plan.plan(params, paths)
    ale = [r for r in p.runs if r.method == "ale"]
    assert [r.done for r in ale] == [True, False] and all(r.exact for r in ale)
    prov = json.loads((done / "provenance.json").read_text())
    assert ale[1].rate.whole_run and ale[1].rate.step_s == pytest.approx(prov["resources"]["wall_s"] / ale[0].steps)
    assert ale[1].rate.source == f"1 run here on {plan.device_kind('cpu')}"
    assert all(r.rate is None for r in p.runs if r.method == "eszsl")
    monkeypatch_cwd = pytest.MonkeyPatch()
    monkeypatch_cwd.chdir(root)
    try:
        assert main(["plan", "--devices", "2"]) == 0
    finally:
        monkeypatch_cwd.undo()
    out = capsys.readouterr().out
    assert "# Plan: 4 runs (1 done, 3 to run)" in out
    assert "| train | synthetic/resnet10t | ale | 1 of 2 |" in out and "[1] 1 run here on cpu-" in out
    assert "not estimated: eszsl (no step time measured on this kind" in out
    assert f"On 2 devices at once" in out


def test_before_the_data_exist_the_plan_counts_from_params_and_the_papers_split_sizes(tmp_path):
    """A CUB configuration on a fresh machine: every run counted from params.yaml, each validation fit at
    trainval's size (7,057 images: an upper bound, marked ≤), DAZLE's 20 epochs of ceil(7057 / 50) steps
    per fit; on an H100 the maps benchmark's step time (fp32's under precision auto → bf16, labelled)."""
    from zsl_bench.registry import get_method

    params = yaml.safe_load(open(plan.__file__.replace("zsl_bench/plan.py", "params.yaml")))
    params.update(datasets=["CUB"], features={"CUB-resnet101": {"dataset": "CUB", "backbone": "resnet101"}}, compare={})
    params["train"].update(methods=["dazle"], seeds=[0, 1, 2], precision="auto", search="none")
    p = plan.plan(params, ProjectPaths(tmp_path), kind="h100-80gb")
    dazle = [r for r in p.runs if r.method == "dazle"]
    assert len(dazle) == 3 and not any(r.done or r.exact for r in dazle)
    assert dazle[0].fits == 4 and dazle[0].steps == 4 * 20 * -(-7057 // 50)
    assert p.precision == "bf16" and "fp32's, none in bf16" in dazle[0].rate.source
    assert dazle[0].rate.step_s == plan.recorded_step_times("dazle")["h100-80gb"]["fp32"]["step_s"]
    assert plan.steps_of_fit(get_method("eszsl"), get_method("eszsl").default_hparams("CUB"), 7057) == 1
    assert any("not prepared and extracted yet" in n for n in p.notes)


def test_device_kinds_nearest_measurements_and_makespan():
    assert plan.gpu_kind("NVIDIA H100 80GB HBM3") == "h100-80gb"
    assert plan.gpu_kind("NVIDIA A100-SXM4-40GB") == "a100-40gb"
    assert plan.gpu_kind("Tesla V100-SXM2-16GB") == "v100-16gb" and plan.gpu_kind("NVIDIA H200") == "h200"
    assert plan.kind_memory_gib("h100-80gb") == pytest.approx(74.5, abs=0.1) and plan.kind_memory_gib("h200") is None
    rate = plan.benchmark_rate("mgmrn.image", "a100-40gb", "bf16")   # no A100 measurement: the H100's, labelled
    assert rate.source.startswith("benchmark on h100-80gb (none on a100-40gb)") and rate.batch == 16
    assert plan.benchmark_rate("mgmrn.image", "cpu-2core", "fp32") is None   # a GPU figure never stands for a CPU
    assert plan.makespan_s([5, 4, 3, 3, 3], 2) == 10 and plan.makespan_s([5, 4, 3, 3, 3], 1) == 18
    assert plan.makespan_s([], 4) == 0


def test_memory_advice_fits_or_names_the_micro_batch():
    fits = plan.Rate(0.1, "x", False, batch=16, peak_memory_gib=11.4)
    assert plan.micro_batch_advice(fits, 74.5) == "11.4 of 74 GiB at batch 16: fits"
    two_sizes = plan.Rate(0.1, "x", False, batch=16, peak_memory_gib=20.0, peak_memory_half_batch_gib=12.0)
    # 1 GiB per image over 4 GiB fixed; 90 % of 16 GiB leaves 10.4 GiB: 10 images per part.
    assert "set train.micro_batch: 10;" in plan.micro_batch_advice(two_sizes, 16.0)
    assert "memory taken ∝ batch" in plan.micro_batch_advice(plan.Rate(0.1, "x", False, batch=16, peak_memory_gib=20.0), 16.0)
    assert "does not fit" in plan.micro_batch_advice(two_sizes, 4.0)
    assert plan.micro_batch_advice(plan.Rate(0.1, "x", True), 80.0) == "—"


def test_step_times_files_are_what_the_recorder_writes(tmp_path):
    """benchmarks/record_step_times.py: a benchmark's JSON → each method folder's step_times.json, failed
    entries left out; the repository's files parse and name a source that exists."""
    import importlib.util

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("record_step_times", REPO / "benchmarks" / "record_step_times.py")
    rec = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rec)
    (tmp_path / "methods" / "mgmrn").mkdir(parents=True)
    result = tmp_path / "bench.json"
    result.write_text(json.dumps({"results": {
        "mgmrn.image bf16": {"step_s_median": 0.2, "steps": 5, "batch": 16, "peak_gpu_memory_GiB": 8.0,
                             "peak_gpu_memory_half_batch_GiB": 5.0},
        "mgmrn fp32": {"error": "CUDA out of memory"}}}))
    monkey = pytest.MonkeyPatch()
    monkey.setattr(rec, "HERE", tmp_path / "benchmarks")
    try:
        rec.record(result, "h100-80gb", "CUB", tmp_path / "methods")
    finally:
        monkey.undo()
    table = json.loads((tmp_path / "methods" / "mgmrn" / "step_times.json").read_text())
    assert table["h100-80gb"]["mgmrn.image"]["bf16"] == {"step_s": 0.2, "batch": 16, "steps_timed": 5,
                                                         "peak_memory_GiB": 8.0, "peak_memory_half_batch_GiB": 5.0}
    assert "mgmrn" not in table["h100-80gb"]
    for path in (REPO / "methods").glob("*/step_times.json"):
        for kind, methods in json.loads(path.read_text()).items():
            if not kind.startswith("_"):
                assert all((REPO / m["source"]).is_file() for m in methods.values()), path
