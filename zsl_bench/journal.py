"""A run's journal: what an interrupted run had done, so that running the same request again continues it.

It lives beside the run folder it will become (`<slot>/.<run key>.partial/`: hidden, never a run folder) and
is removed once that folder is written. Two files:

- `events.pkl`, appended at every checkpoint: what the evaluator recorded there (validation rows and
  curves, test rows), so the journal grows with the run rather than with its square;
- `snapshot.pt`, replaced atomically at every checkpoint of a fit that can resume (`training.TrainLoop`) and
  after every finished fit: the sweeps done, the fit in progress (its checkpoints and its loop's state), the
  test sweep's keepers, and how many bytes of `events.pkl` belong to it (a kill between the two writes leaves
  events that the snapshot does not count: they are cut off on load).

A fit without a resumable loop (the numpy methods) restarts from its beginning. Under torchrun only rank 0
writes; every process reads the same journal.
"""
from __future__ import annotations

import os
import pickle
import shutil
import signal
import time
from pathlib import Path

SNAPSHOT, EVENTS = "snapshot.pt", "events.pkl"
# Test instrumentation: SIGKILL this process right after its N-th snapshot (tests/test_resume.py kills a run
# exactly there, as a preemption or an out-of-memory kill would, with no chance to clean up).
KILL_ENV = "ZSL_BENCH_KILL_AFTER_SNAPSHOTS"
FORMAT = 1


def journal_folder(run_folder: Path) -> Path:
    return run_folder.parent / f".{run_folder.name}.partial"


class RunJournal:
    def __init__(self, folder: Path | None, writer: bool = True):
        self.folder, self.writer = (Path(folder) if folder else None), writer
        self.saves = 0
        self.resumed: list[dict] = []   # earlier interruptions this run continued from (for provenance.json)

    def load(self) -> tuple[dict | None, list]:
        """(snapshot, its events) of an interrupted run, or (None, []) for a fresh one."""
        if self.folder is None or not (self.folder / SNAPSHOT).is_file():
            return None, []
        import torch

        snapshot = torch.load(self.folder / SNAPSHOT, weights_only=False)
        if snapshot.get("format") != FORMAT:
            return None, []
        events = []
        if snapshot["events_bytes"]:
            with open(self.folder / EVENTS, "rb") as f:
                while f.tell() < snapshot["events_bytes"]:
                    events.append(pickle.load(f))
        if self.writer and (self.folder / EVENTS).exists():   # drop events written after the snapshot (a kill between the two writes)
            with open(self.folder / EVENTS, "r+b") as f:
                f.truncate(snapshot["events_bytes"])
        self.resumed = snapshot.get("resumed", []) + [{"at_unix": time.time(), "done": len(snapshot["done"]),
                                                         "checkpoints": len((snapshot["current"] or {}).get("checkpoints", []))}]
        return snapshot, events

    def append(self, event) -> None:
        if self.folder is None or not self.writer:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / EVENTS, "ab") as f:
            pickle.dump(event, f, protocol=pickle.HIGHEST_PROTOCOL)

    def save(self, snapshot: dict) -> None:
        if self.folder is None or not self.writer:
            return
        import torch

        self.folder.mkdir(parents=True, exist_ok=True)
        events = self.folder / EVENTS
        full = {**snapshot, "format": FORMAT, "resumed": self.resumed,
                "events_bytes": events.stat().st_size if events.exists() else 0}
        tmp = self.folder / f".{SNAPSHOT}.{os.getpid()}"
        torch.save(full, tmp)
        os.replace(tmp, self.folder / SNAPSHOT)
        self.saves += 1
        if os.environ.get(KILL_ENV) and self.saves == int(os.environ[KILL_ENV]):
            os.kill(os.getpid(), signal.SIGKILL)

    def clear(self) -> None:
        if self.folder is not None and self.writer:
            shutil.rmtree(self.folder, ignore_errors=True)
