"""Where a list of runs executes: this machine's cores, one run per GPU, or a Slurm cluster (DomainBed's
`command_launchers`). Each launcher takes the jobs and params.yaml's `launch` settings and returns the run
folders in job order. Every job ends in `run_job`, which is `runner.execute` with the stage's thread rule:
a run folder is content-addressed (`<slot>/<run key>/`), so whichever process, GPU or cluster node wrote it,
`dvc repro` finds it by its key and adopts it without retraining. No scheduler of ours: the pool is the
standard library's, the cluster is Slurm's through submitit.

Keep the imports at the top of this module light (submitit takes 50 ms): the ablate stage and every worker
import it.
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import submitit

from zsl_bench.io import ConfigError, DataError
from zsl_bench.params import CLUSTERS, LAUNCHER_NAMES   # params.yaml's check reads them there, without submitit

# params.yaml's `launch` section as it is when the file has none (keep equal to params.yaml's defaults).
SLURM_DEFAULTS = {"partition": None, "timeout_min": 720, "gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 32,
                  "array_parallelism": 32, "cluster": None, "folder": ".submitit"}
DEFAULTS = {"launcher": "local", "workers": None, "gpus": None, "slurm": SLURM_DEFAULTS}
RUN_STARTED = "zsl-bench job:"                  # first line a Slurm job prints, with its attempt number


@dataclass(frozen=True)
class Job:
    """One run: `runner.execute(request, ProjectPaths(root), slot=slot)` under `threads` torch/BLAS threads
    (None: the launcher's rule)."""
    request: object          # runner.RunRequest
    root: str
    slot: str
    threads: int | None = None

    def describe(self) -> str:
        r = self.request
        return f"{r.method}{' (A/A)' if r.replicate else ''} on {r.dataset}, seed {r.seed}"


LOCKS = ".zsl-bench-locks"   # below the project root (git-ignored, outside every DVC output)


@contextmanager
def slot_lock(root: Path, slot: Path):
    """One process at a time makes a run slot: a second identical `zsl-bench train` (or job) waits for the
    first, saying so in one line, and then finds its run by its key instead of training it again (on a GPU
    cluster that is hours). An advisory `flock` on a file under <root>/.zsl-bench-locks; released when the
    process ends, however it ends. Under torchrun only rank 0 takes it (every rank runs the same slot)."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    import fcntl
    import hashlib
    import socket

    locks = Path(root) / LOCKS
    locks.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(str(Path(slot).resolve()).encode()).hexdigest()[:16]
    with open(locks / f"{name}.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            print(f"{slot}: {holder} is making this run; waiting for it, then reading its result", file=sys.stderr)
            fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_job(job: Job) -> str:
    """The one entry point of every job, in whatever process runs it: the thread rule, then the run (or the
    folder found by its key). A job logs its imports for its stage, train or ablate (tests check dvc.yaml's
    deps against them: zsl_bench/import_log.py)."""
    from zsl_bench.import_log import log_imports
    from zsl_bench.paths import ProjectPaths
    from zsl_bench.plan import record_actual
    from zsl_bench.runner import execute
    from zsl_bench.runtime import limit_threads

    limit_threads(job.threads)
    started, paths = time.time(), ProjectPaths(Path(job.root))
    with slot_lock(Path(job.root), Path(job.slot)):
        folder = str(execute(job.request, paths, progress=False, slot=Path(job.slot)))
        record_actual(Path(folder), paths, since=started)   # the plan's count beside the wall time it took
    log_imports({"ablation": "ablate"}.get(job.request.stage, job.request.stage),
                [job.request.dataset, job.request.backbone])
    return folder


def launch_settings(params: dict) -> dict:
    """params.yaml's `launch` section with the defaults filled in (a file without one runs locally)."""
    given = params.get("launch") or {}
    return {**DEFAULTS, **given, "slurm": {**SLURM_DEFAULTS, **(given.get("slurm") or {})}}


def launch(jobs: list[Job], params: dict, launcher: str | None = None, progress: bool = True,
           desc: str = "runs") -> list[Path]:
    """Run `jobs` with `launcher` (default: params.yaml's `launch.launcher`); the run folders in job order."""
    settings = launch_settings(params)
    name = launcher or settings["launcher"]
    if name not in LAUNCHERS:
        raise ConfigError(f"unknown launcher {name!r}; launchers: {', '.join(LAUNCHERS)}")
    if not jobs:
        return []
    return LAUNCHERS[name](list(jobs), settings, progress=progress, desc=desc)


def _with_threads(jobs: list[Job], threads: int | None) -> list[Job]:
    return [j if j.threads is not None else replace(j, threads=threads) for j in jobs]


# --- local: a process pool on this machine --------------------------------------------------------------

def local(jobs: list[Job], settings: dict, progress: bool = True, desc: str = "runs", target=run_job) -> list[Path]:
    """`launch.workers` runs at a time (null: `default_workers` of the usable cores) in spawned processes,
    each with ZSL_BENCH_THREADS torch and BLAS threads when set, else cores // workers (small models use two
    threads badly, two processes well). Runs in parallel and threads per run are two settings: the thread
    variable never shrinks the pool. The bar counts runs as they finish, in any order; the folders come back
    in the jobs' order."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm import tqdm

    from zsl_bench.runtime import THREADS_ENV, usable_cores

    cores = usable_cores()
    workers = int(settings.get("workers") or default_workers(cores))
    threads = int(os.environ[THREADS_ENV]) if os.environ.get(THREADS_ENV) else cores // workers
    jobs = _with_threads(jobs, max(1, threads))
    with ProcessPoolExecutor(max_workers=max(1, min(workers, len(jobs))),
                             mp_context=multiprocessing.get_context("spawn")) as pool, \
            tqdm(total=len(jobs), unit="run", desc=f"{desc} ({workers} workers)", disable=not progress) as bar:
        futures = [pool.submit(target, job) for job in jobs]
        for done in as_completed(futures):
            done.result()   # a failed run stops the launch here, whichever finished first
            bar.update()
        return [Path(f.result()) for f in futures]


def default_workers(cores: int) -> int:
    """`launch.workers: null`: one per core on a CPU machine; one in all where torch sees a GPU, which every
    run would otherwise share (`multi_gpu` spreads runs over GPUs)."""
    import torch

    return 1 if torch.cuda.is_available() else cores


# --- multi_gpu: one run per visible GPU at a time ----------------------------------------------------------

def visible_gpus(requested=None) -> list[str]:
    """The GPUs runs may use: `launch.gpus` when set, else CUDA_VISIBLE_DEVICES when set, else every device
    torch sees (asked in a subprocess, so this process never initialises CUDA)."""
    import subprocess

    if requested is not None:
        return [str(g) for g in requested]
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
                         capture_output=True, text=True)
    return [str(i) for i in range(int(out.stdout.strip() or 0))] if out.returncode == 0 else []


def multi_gpu(jobs: list[Job], settings: dict, progress: bool = True, desc: str = "runs",
              target=run_job) -> list[Path]:
    """One run per GPU at a time, each in its own process started with CUDA_VISIBLE_DEVICES set to that GPU
    (so torch in it sees one device, `cuda:0`, from its first import), cores // GPUs threads each. A job's
    output goes to a log file; a failed job is reported with its log once the others are done."""
    import pickle
    import shutil
    import subprocess
    import tempfile
    import time
    from collections import deque

    from tqdm import tqdm

    from zsl_bench.runtime import thread_count

    gpus = visible_gpus(settings.get("gpus"))
    if not gpus:
        raise DataError("multi_gpu launcher: no GPU visible (CUDA_VISIBLE_DEVICES="
                        f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')!s}, and torch sees no CUDA device); "
                        "use --launcher local, or list the GPUs in params.yaml's launch.gpus")
    if any(getattr(j.request, "device", "auto") == "cpu" for j in jobs):
        print("multi_gpu launcher: train.device is cpu, so the runs will not use the GPUs", file=sys.stderr)
    jobs = _with_threads(jobs, max(1, thread_count() // len(gpus)))
    logs = Path(tempfile.mkdtemp(prefix="zsl-bench-multi-gpu-"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([p for p in sys.path if p] +
                                                       [os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    pending, free, running = deque(enumerate(jobs)), list(gpus), {}
    results: list[str | None] = [None] * len(jobs)
    failures = []
    bar = tqdm(total=len(jobs), unit="run", desc=f"{desc} ({len(gpus)} GPUs)", disable=not progress)
    try:
        while pending or running:
            while pending and free:
                i, job = pending.popleft()
                gpu = free.pop(0)
                (logs / f"job{i}.pkl").write_bytes(pickle.dumps((target, job)))
                with open(logs / f"job{i}.log", "w") as log:
                    proc = subprocess.Popen([sys.executable, "-m", "zsl_bench.launchers", str(logs / f"job{i}.pkl"),
                                             str(logs / f"job{i}.out")], stdout=log, stderr=subprocess.STDOUT,
                                            env={**env, "CUDA_VISIBLE_DEVICES": gpu})
                running[i] = (proc, gpu)
            for i, (proc, gpu) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[i]
                free.append(gpu)
                bar.update()
                if proc.returncode == 0:
                    results[i] = (logs / f"job{i}.out").read_text()
                else:
                    failures.append((i, gpu, proc.returncode))
            time.sleep(0.2)
    finally:
        bar.close()
        for proc, _ in running.values():   # interrupted: stop the runs this launcher started
            proc.terminate()
        for proc, _ in running.values():
            proc.wait()
    if failures:
        i, gpu, code = failures[0]
        log = logs / f"job{i}.log"
        raise JobFailed(f"multi_gpu launcher: {len(failures)} of {len(jobs)} jobs failed; job {i} "
                        f"({jobs[i].describe()}, GPU {gpu}) exited with {code}: {_last_line(log.read_text())}; "
                        f"log: {log}")
    shutil.rmtree(logs)
    return [Path(r) for r in results]


def _gpu_worker(job_file: str, out_file: str) -> None:
    """`python -m zsl_bench.launchers JOB.pkl OUT`: one multi_gpu job in a process of its own."""
    import pickle

    target, job = pickle.loads(Path(job_file).read_bytes())
    Path(out_file).write_text(str(target(job)))


# --- slurm: a job array through submitit ----------------------------------------------------------------------

class JobFailed(DataError):
    """A launched run failed; the message names the job and its log (the traceback is in the log)."""


def _last_line(text: str) -> str:
    lines = [x.strip() for x in text.splitlines() if x.strip() and not set(x.strip()) <= {"-"}]
    errors = [x for x in lines if "Error" in x or "Exception" in x]
    return (errors or lines or ["(empty log)"])[-1]


class RequeueableRun(submitit.helpers.Checkpointable):
    """One Slurm array task. On preemption or timeout Slurm signals it, submitit pickles it with its arguments
    (`checkpoint`) and requeues it; the rerun calls `runner.execute` on the same request, which finds the run
    folder if it was written and otherwise runs it again (continuing from the run's own checkpoint where the
    runner keeps one)."""

    def __init__(self, target=run_job):
        self.target = target
        self.attempt = 0

    def __call__(self, job: Job) -> str:
        self.attempt += 1
        print(f"{RUN_STARTED} {job.describe()} -> {job.slot} (attempt {self.attempt})", flush=True)
        return self.target(job)


def submit_slurm(jobs: list[Job], settings: dict, target=run_job):
    """Submit `jobs` as one job array; returns (executor, submitit jobs)."""
    s = settings["slurm"]
    if s["cluster"] not in CLUSTERS:
        raise ConfigError(f"launch.slurm.cluster must be null, slurm, local or debug, not {s['cluster']!r}")
    folder = Path(s["folder"]).expanduser()
    folder = folder if folder.is_absolute() else Path(jobs[0].root) / folder
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=s["cluster"])
    executor.update_parameters(name="zsl-bench", timeout_min=int(s["timeout_min"]),
                               gpus_per_node=int(s["gpus_per_node"]), cpus_per_task=int(s["cpus_per_task"]),
                               mem_gb=s["mem_gb"], slurm_partition=s["partition"],
                               slurm_array_parallelism=int(s["array_parallelism"]))
    if executor.cluster != "slurm":
        print(f"slurm launcher: running the job array with submitit's {executor.cluster} executor "
              f"({'no sbatch here' if s['cluster'] is None else 'launch.slurm.cluster'}): every job at once, "
              "on this machine", file=sys.stderr)
    submitted = executor.map_array(RequeueableRun(target), _with_threads(jobs, None))
    ids = f"{submitted[0].job_id}…{submitted[-1].job_id}" if len(submitted) > 1 else submitted[0].job_id
    print(f"slurm launcher: {len(submitted)} jobs submitted ({executor.cluster}, job ids {ids}); "
          f"logs: {folder}/<job id>/", file=sys.stderr)
    return executor, submitted


def wait_slurm(submitted, jobs: list[Job], progress: bool = True, desc: str = "runs", poll_s: float = 15.0
               ) -> list[Path]:
    """Wait for every job; the run folders in job order, or JobFailed naming the first failure and its log."""
    from tqdm import tqdm

    for _ in tqdm(submitit.helpers.as_completed(submitted, poll_frequency=poll_s), total=len(submitted),
                  unit="run", desc=f"{desc} (submitit)", disable=not progress):
        pass
    results, failures = [], []
    for i, sjob in enumerate(submitted):
        try:
            results.append(Path(sjob.result()))
        except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError) as e:
            failures.append((i, sjob, e))
    if failures:
        i, sjob, e = failures[0]
        raise JobFailed(f"slurm launcher: {len(failures)} of {len(submitted)} jobs failed; job {sjob.job_id} "
                        f"({jobs[i].describe()}): {_last_line(str(e).split('You can check full logs')[0])}; "
                        f"log: {sjob.paths.stderr}")
    return results


def slurm(jobs: list[Job], settings: dict, progress: bool = True, desc: str = "runs", target=run_job) -> list[Path]:
    """A submitit job array (`launch.slurm`: partition, timeout_min, gpus_per_node, cpus_per_task, mem_gb,
    array_parallelism); each task a `RequeueableRun`, requeued on preemption or timeout. Waits for all."""
    executor, submitted = submit_slurm(jobs, settings, target)
    return wait_slurm(submitted, jobs, progress, desc, poll_s=15.0 if executor.cluster == "slurm" else 0.5)


LAUNCHERS = {"local": local, "multi_gpu": multi_gpu, "slurm": slurm}
assert tuple(LAUNCHERS) == LAUNCHER_NAMES, "a launcher is added here and named in params.LAUNCHER_NAMES"


if __name__ == "__main__":
    _gpu_worker(*sys.argv[1:3])
