"""A run killed at a checkpoint resumes from it and ends bit for bit where an uninterrupted run ends.

Each run is a separate process with one thread (`ZSL_BENCH_THREADS=1`), as the train stage would be; the
killed one is stopped by SIGKILL right after its N-th journal snapshot (journal.KILL_ENV), which gives it
no chance to clean up, as a preemption or an out-of-memory kill would not."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from zsl_bench.journal import EVENTS, KILL_ENV, SNAPSHOT
from zsl_bench.provenance import read_provenance

pytestmark = pytest.mark.slow

RUN = """
import sys
from pathlib import Path
from zsl_bench.paths import ProjectPaths
from zsl_bench.runner import RunRequest, execute
from zsl_bench.runtime import limit_threads
limit_threads()
root, slot, method = sys.argv[1:4]
# a learning-rate step every epoch (Mg-MRN, ReZSL), APN's warm-up ending after the first epoch: a resumed fit
# must restore what each schedule and APN's per-epoch fresh optimizer depend on
hparams = {{"mgmrn": {{"epochs": 3, "lr_step": 1}}, "rezsl": {{"epochs": 3, "lr_step": 1}},
           "apn": {{"epochs": 3, "pretrain_epoch": 0}}}}.get(method, {{"epochs": 3}})
print(execute(RunRequest(dataset="synthetic", backbone="resnet10t", method=method, seed=0, search="none", device="cpu", hparam_overrides=hparams),
              ProjectPaths(Path(root)), progress=False, slot=Path(slot)))
"""


def run(root: Path, slot: Path, method: str, kill_after: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "ZSL_BENCH_THREADS": "1"}
    env.pop(KILL_ENV, None)
    if kill_after:
        env[KILL_ENV] = str(kill_after)
    return subprocess.run([sys.executable, "-c", RUN.format(), str(root), str(slot), method], env=env,
                          capture_output=True, text=True, timeout=600)


def run_folder(slot: Path, method: str) -> Path:
    """The method's own run folder (Mg-MRN's per-branch scoring variants sit beside it)."""
    (folder,) = [p for p in slot.iterdir() if (p / "done").exists()
                 and json.loads((p / "record.json").read_text())["method"] == method]
    return folder


# Snapshots: one per checkpoint of a fit and one when it ends. Validation (fold 1, 3 epochs) writes 1–4, the
# refit on trainval 5–8: 2 stops mid-way through the validation fit, 6 mid-way through the test fit (for
# f-CLSWGAN, after its second generator epoch and that epoch's final classifiers: their epochs take no snapshot).
@pytest.mark.parametrize("method,kill_after", [("transzero", 2), ("mgmrn", 6), ("fclswgan", 6), ("rezsl", 2),
                                               ("apn", 6)])
def test_a_killed_run_resumes_bit_for_bit(region_project, tmp_path, method, kill_after):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    done = run(region_project, whole, method)
    assert done.returncode == 0, done.stderr[-3000:]

    killed = run(region_project, resumed, method, kill_after=kill_after)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (journal,) = [p for p in resumed.iterdir() if p.name.endswith(".partial")]
    assert (journal / SNAPSHOT).is_file() and (journal / EVENTS).is_file()
    assert not any((p / "done").exists() for p in resumed.iterdir())

    again = run(region_project, resumed, method)
    assert again.returncode == 0, again.stderr[-3000:]
    a, b = run_folder(whole, method), run_folder(resumed, method)
    assert a.name == b.name, "the same run key"
    assert not journal.exists(), "the journal is removed once the run folder is written"
    assert json.loads((a / "record.json").read_text()) == json.loads((b / "record.json").read_text())
    with np.load(a / "predictions.npz") as pa, np.load(b / "predictions.npz") as pb:
        assert sorted(pa.files) == sorted(pb.files)
        for k in pa.files:
            np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)
    sa, sb = torch.load(a / "state.pt"), torch.load(b / "state.pt")
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert read_provenance(a)["resumed"] == []
    (resume,) = read_provenance(b)["resumed"]
    assert resume["done"] + resume["checkpoints"] > 0, "it continued from where it was killed"


def test_a_numpy_method_restarts_its_interrupted_fit(region_project, tmp_path):
    """ALE trains without the shared loop: a fit killed half-way is redone from its start (the fits finished
    before are kept), with the same numbers."""
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert run(region_project, whole, "ale").returncode == 0
    assert run(region_project, resumed, "ale", kill_after=1).returncode == -signal.SIGKILL
    again = run(region_project, resumed, "ale")
    assert again.returncode == 0, again.stderr[-3000:]
    a, b = run_folder(whole, "ale"), run_folder(resumed, "ale")
    assert json.loads((a / "record.json").read_text()) == json.loads((b / "record.json").read_text())
    assert read_provenance(b)["resumed"][0]["done"] == 1
