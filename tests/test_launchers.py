"""The launcher registry (zsl_bench/launchers.py) and `zsl-bench sweep`: every launcher writes the run folders
`runner.execute` writes in-process (same slots, same content keys), so `dvc repro` adopts them; the slurm
launcher (submitit's LocalExecutor here) requeues a preempted job, which then completes; multi_gpu gives each
worker its own CUDA_VISIBLE_DEVICES (two made-up ids: no CUDA is used); params.yaml's `launch` is checked."""
from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tests.conftest import copy_project
from zsl_bench.launchers import Job, run_job

SEEDS = (0, 1)
GPU_LOG_ENV = "ZSL_BENCH_TEST_GPU_LOG"


def _jobs(root: Path) -> list[Job]:
    """ESZSL on the tiny project, defaults only (the cheapest runs there are), seeds 0 and 1, in train slots."""
    from zsl_bench import stages
    from zsl_bench.params import load_params
    from zsl_bench.paths import ProjectPaths

    paths = ProjectPaths(root)
    params = load_params(paths)
    return [Job(replace(stages.run_request("synthetic", "eszsl", seed, params), search="none"), str(root),
                str(paths.run_slot("synthetic", "resnet10t", "eszsl", seed))) for seed in SEEDS]


def _relative(folders, root: Path) -> list[str]:
    return [Path(f).relative_to(root).as_posix() for f in folders]


@pytest.fixture(scope="module")
def in_process(tiny_project, tmp_path_factory) -> list[str]:
    """The run folders `runner.execute` writes in this process, relative to their project (a private copy)."""
    from zsl_bench.paths import ProjectPaths
    from zsl_bench.runner import execute

    root = copy_project(tiny_project, tmp_path_factory.mktemp("in_process") / "project")
    return _relative([execute(j.request, ProjectPaths(root), progress=False, slot=Path(j.slot)) for j in _jobs(root)],
                     root)


def test_sweep_with_the_local_launcher_writes_what_execute_writes_and_the_train_stage_adopts_it(
        project_copy, in_process, monkeypatch, capsys):
    import yaml

    from zsl_bench import stages
    from zsl_bench.cli import main
    from zsl_bench.params import load_params
    from zsl_bench.paths import ProjectPaths

    params_file = project_copy / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["train"].update(methods=["eszsl"], seeds=list(SEEDS), search="none")
    params["launch"] = {"launcher": "local", "workers": 2}
    params["tracking"]["mlflow"] = True   # the sweep creates the experiment before it fans out
    params_file.write_text(yaml.safe_dump(params))
    monkeypatch.chdir(project_copy)

    assert main(["sweep", "--only", "train", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 runs (2 train, 0 ablation) with the local launcher" in out
    assert "eszsl on synthetic, seed 1" in out and "runs/synthetic/resnet10t/train/eszsl/seed1" in out
    assert not (project_copy / "runs").exists() and not (project_copy / "mlflow.db").exists()

    assert main(["sweep", "--only", "train"]) == 0
    out = capsys.readouterr().out
    folders = [Path(line) for line in out.splitlines() if line.startswith(str(project_copy))]
    assert _relative(folders, project_copy) == in_process   # same slots, same content keys, in job order
    assert "`dvc repro` adopts them (no retraining)" in out
    from mlflow.tracking import MlflowClient

    from zsl_bench.tracking import experiment_name

    assert MlflowClient(f"sqlite:///{project_copy / 'mlflow.db'}").get_experiment_by_name(experiment_name())

    # What `dvc repro`'s train stage does with them: finds each folder by its key, trains nothing.
    paths = ProjectPaths(project_copy)
    mtime = (folders[1] / "record.json").stat().st_mtime_ns
    assert stages.train_run("synthetic", "eszsl", 1, load_params(paths), paths, progress=False) == folders[1]
    assert (folders[1] / "record.json").stat().st_mtime_ns == mtime


def _slurm_settings(tmp_path: Path) -> dict:
    from zsl_bench.launchers import launch_settings

    return launch_settings({"launch": {"launcher": "slurm", "slurm": {
        "cluster": "local", "gpus_per_node": 0, "cpus_per_task": 1, "timeout_min": 5,
        "folder": str(tmp_path / "submitit")}}})


def _preempt(job) -> None:
    """What Slurm does before preempting a job: SIGUSR2 to its task. (submitit 1.5's `LocalJob._interrupt`
    signals the local job's controller instead, which dies of it while the task runs on unsignalled.)"""
    import signal

    import psutil

    (task,) = psutil.Process(int(job.job_id)).children()   # the controller's one task: `python -m submitit…`
    task.send_signal(signal.SIGUSR2)


IN_RUN = "test job: in the run, waiting to be preempted"
PREEMPT_ENV = "ZSL_BENCH_TEST_PREEMPT_DIR"


def _preemptible(job: Job) -> str:
    """A job whose first attempt waits in `time.sleep` to be preempted, then runs. Python runs a signal
    handler between bytecodes of whatever the main thread executes; if that is a finalizer (`__del__`, which
    the imports and the run's garbage trigger at random moments) the handler's SystemExit is printed as
    "Exception ignored" and the job runs on, so a test that signals at a random moment is flaky. (On Slurm
    that case is still requeued: submitit calls `scontrol requeue` before it exits.)"""
    first = Path(os.environ[PREEMPT_ENV]) / f"seed{job.request.seed}"
    if job.request.seed == 0 and not first.exists():
        first.write_text("attempt 1")
        print(IN_RUN, flush=True)
        time.sleep(120)
    return run_job(job)


def test_slurm_launcher_runs_a_job_array_and_a_preempted_job_is_requeued_and_completes(project_copy, in_process,
                                                                                     tmp_path, monkeypatch):
    """submitit's LocalExecutor stands in for Slurm: the same job array, the same signal on preemption
    (SIGUSR2 to the task), the same requeue (the checkpointed callable reruns)."""
    from zsl_bench.launchers import submit_slurm, wait_slurm

    monkeypatch.setenv(PREEMPT_ENV, str(tmp_path))   # the job processes inherit the test's environment
    jobs = _jobs(project_copy)
    _, submitted = submit_slurm(jobs, _slurm_settings(tmp_path), target=_preemptible)
    assert len(submitted) == 2
    deadline = time.time() + 60
    while IN_RUN not in (submitted[0].stdout() or ""):
        assert time.time() < deadline, submitted[0].stderr()
        time.sleep(0.05)
    _preempt(submitted[0])
    folders = wait_slurm(submitted, jobs, progress=False, poll_s=0.2)
    assert _relative(folders, project_copy) == in_process
    log = submitted[0].stdout()
    assert "(attempt 1)" in log and "(attempt 2)" in log, log   # requeued: the same request ran again
    assert "Caught signal SIGUSR2" in submitted[0].stderr()   # (submitit's local environment calls it a timeout)
    assert "(attempt 2)" not in submitted[1].stdout()


def _fails(job: Job) -> str:
    from zsl_bench.io import DataError

    raise DataError(f"a made-up failure of {job.describe()}")


def test_slurm_launcher_names_a_failed_job_and_its_log(project_copy, tmp_path):
    from zsl_bench.launchers import JobFailed, slurm

    with pytest.raises(JobFailed, match=r"1 of 1 jobs failed; job \S+ \(eszsl on synthetic, seed 0\): .*"
                                        r"a made-up failure of eszsl on synthetic, seed 0; log: .*\.err"):
        slurm(_jobs(project_copy)[:1], _slurm_settings(tmp_path), progress=False, target=_fails)


def _record_gpu(job: Job) -> str:
    """A multi_gpu job that notes the GPU its process was given, then runs."""
    (Path(os.environ[GPU_LOG_ENV]) / f"seed{job.request.seed}").write_text(os.environ["CUDA_VISIBLE_DEVICES"])
    return run_job(job)


def test_multi_gpu_gives_each_worker_its_own_device(project_copy, in_process, tmp_path, monkeypatch):
    from zsl_bench.launchers import multi_gpu

    monkeypatch.setenv(GPU_LOG_ENV, str(tmp_path))
    folders = multi_gpu(_jobs(project_copy), {"gpus": ["7", "9"]}, progress=False, target=_record_gpu)
    assert _relative(folders, project_copy) == in_process
    assert sorted((tmp_path / f"seed{s}").read_text() for s in SEEDS) == ["7", "9"]   # one run per GPU at once


def test_multi_gpu_without_a_gpu_says_so(monkeypatch):
    from zsl_bench.io import DataError
    from zsl_bench.launchers import multi_gpu

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(DataError, match="multi_gpu launcher: no GPU visible .*--launcher local"):
        multi_gpu([Job(None, "/nowhere", "/nowhere")], {"gpus": None}, progress=False)


def test_the_ablate_stage_runs_through_the_configured_launcher(project_copy, monkeypatch):
    from zsl_bench import launchers, stages
    from zsl_bench.params import load_params
    from zsl_bench.paths import ProjectPaths

    calls = []

    def fake(jobs, settings, progress=True, desc="runs"):
        calls.append((jobs, settings, desc))
        for job in jobs:
            (Path(job.slot) / "key").mkdir(parents=True)
        return [Path(job.slot) / "key" for job in jobs]

    monkeypatch.setitem(launchers.LAUNCHERS, "slurm", fake)
    paths = ProjectPaths(project_copy)
    params = load_params(paths)
    params["ablate"].update(variants=["levels1"], seeds=[0])
    params["launch"] = {"launcher": "slurm", "slurm": {"partition": "gpu"}}
    folders = stages.ablate("synthetic", params, paths, progress=False)
    ((jobs, settings, desc),) = calls
    assert [(j.request.method, j.request.replicate, j.request.stage) for j in jobs] == [
        ("mgmrn", 0, "ablation"), ("mgmrn", 1, "ablation"), ("mgmrn.levels1", 0, "ablation")]
    assert settings["slurm"]["partition"] == "gpu" and settings["slurm"]["timeout_min"] > 0 and desc == "ablate mgmrn"
    assert folders == [Path(j.slot) / "key" for j in jobs]


@pytest.mark.parametrize("launch, message", [
    ({"launcher": "sge"}, "launch.launcher must be one of local, multi_gpu, slurm, not 'sge'"),
    ({"workers": 0}, "launch.workers must be a positive number"),
    ({"slurm": {"cluster": "pbs"}}, "launch.slurm.cluster must be null"),
    ({"slurm": {"partiton": "gpu"}}, "unknown key launch.slurm.partiton; allowed: partition, timeout_min"),
    ({"slurm": {"mem_gb": "32G"}}, r"launch.slurm.mem_gb must be int or float, not '32G'"),
    ({"gpus": [0, True]}, r"launch.gpus\[1\] must be a GPU index"),
])
def test_params_check_the_launch_section(tmp_path, launch, message):
    import yaml

    from tests.conftest import write_params
    from zsl_bench.io import ConfigError
    from zsl_bench.params import load_params
    from zsl_bench.paths import ProjectPaths

    write_params(tmp_path)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["launch"] = launch
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=f"^{tmp_path / 'params.yaml'}: {message}"):
        load_params(ProjectPaths(tmp_path))


def test_ablate_workers_moved_to_launch(tmp_path):
    import yaml

    from tests.conftest import write_params
    from zsl_bench.io import ConfigError
    from zsl_bench.launchers import launch_settings
    from zsl_bench.params import load_params
    from zsl_bench.paths import ProjectPaths

    write_params(tmp_path)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    del params["launch"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert launch_settings(load_params(ProjectPaths(tmp_path)))["launcher"] == "local"
    params["ablate"]["workers"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match="unknown key ablate.workers; allowed: method, variants, seeds"):
        load_params(ProjectPaths(tmp_path))


def test_the_defaults_in_code_are_params_yaml_s():
    import yaml

    from tests.conftest import REPO
    from zsl_bench.launchers import DEFAULTS

    assert yaml.safe_load((REPO / "params.yaml").read_text())["launch"] == DEFAULTS


def test_a_preempted_slurm_job_resumes_from_its_last_checkpoint(region_project, tmp_path):
    """The requeued task does not start over: TransZero, preempted once its journal has a checkpoint,
    continues from it (provenance.json says from where) and ends with the run key `runner.execute` gives."""
    from zsl_bench import stages
    from zsl_bench.journal import SNAPSHOT
    from zsl_bench.launchers import submit_slurm, wait_slurm
    from zsl_bench.params import load_params
    from zsl_bench.paths import ProjectPaths
    from zsl_bench.provenance import read_provenance

    root = copy_project(region_project, tmp_path / "project")
    paths = ProjectPaths(root)
    request = replace(stages.run_request("synthetic", "transzero", 0, load_params(paths)), search="none",
                      hparam_overrides={"epochs": 6})
    slot = paths.run_slot("synthetic", "resnet10t", "transzero", 0)
    job = Job(request, str(root), str(slot))
    _, (submitted,) = submit_slurm([job], _slurm_settings(tmp_path))
    deadline = time.time() + 120
    while not list(slot.glob(f".*.partial/{SNAPSHOT}")):   # a checkpoint is journalled
        assert time.time() < deadline and not submitted.done(), submitted.stderr()
        time.sleep(0.05)
    _preempt(submitted)
    (folder,) = wait_slurm([submitted], [job], progress=False, poll_s=0.2)
    assert "(attempt 2)" in submitted.stdout()
    resumed = read_provenance(Path(folder))["resumed"]
    assert len(resumed) == 1 and resumed[0]["done"] + resumed[0]["checkpoints"] >= 1, resumed
    assert not list(slot.glob(".*.partial")), "the journal is gone with the run's completion"


def _note_process(job: Job) -> str:
    """A local job that sleeps (seed 0 longest) and returns its process id, its threads and its end time."""
    time.sleep(3.0 if job.request.seed == 0 else 0.0)
    return f"{os.getpid()}:{job.threads}:{time.monotonic()}"


def test_the_local_pool_keeps_its_workers_under_zsl_bench_threads_and_counts_runs_as_they_finish(
        project_copy, monkeypatch):
    """ZSL_BENCH_THREADS sets threads per run, never the number of runs in parallel (it used to make the pool
    one worker); the bar moves when any run finishes, not only the first in list order."""
    import tqdm

    from zsl_bench import launchers

    updates = []

    class Bar(tqdm.tqdm):
        def update(self, n=1):
            updates.append(time.monotonic())
            return super().update(n)

    monkeypatch.setattr(tqdm, "tqdm", Bar)
    monkeypatch.setattr("zsl_bench.runtime.usable_cores", lambda: 2)
    monkeypatch.setattr(launchers, "default_workers", lambda cores: cores)   # a GPU machine picks 1
    monkeypatch.setenv("ZSL_BENCH_THREADS", "1")
    out = [str(p).split(":") for p in launchers.local(_jobs(project_copy), {"workers": None}, progress=True,
                                                       target=_note_process)]
    assert len({pid for pid, _, _ in out}) == 2, "two runs in parallel on two cores, whatever the thread variable"
    assert {threads for _, threads, _ in out} == {"1"}
    slow_end = float(out[0][2])
    assert len(updates) == 2 and updates[0] < slow_end, "the quick second run was counted before the slow first"


def test_two_identical_train_commands_train_once(project_copy):
    """Two `zsl-bench train` of the same run at once: one trains, the other says it waits and then reads the
    same folder (trained once: one run folder, the waiter's output points at it, no journal left)."""
    import subprocess
    import sys

    exe = Path(sys.executable).parent / "zsl-bench"
    cmd = [str(exe), "train", "--method", "ale", "--seed", "3"]
    procs = [subprocess.Popen(cmd, cwd=project_copy, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    folders = {o[0].strip().splitlines()[-1] for o in outs}
    assert len(folders) == 1
    waited = [o[1] for o in outs if "is making this run; waiting for it" in o[1]]
    assert len(waited) == 1, "exactly one of the two waited for the other"
    slot = project_copy / "runs" / "synthetic" / "resnet10t" / "train" / "ale" / "seed3"
    assert [p.name for p in slot.iterdir()] == [Path(folders.pop()).name]
