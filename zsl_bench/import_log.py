"""Test instrumentation: which files of this project a stage process imports (tests/test_pipeline.py checks
them against the stage's deps in dvc.yaml). Does nothing unless ZSL_BENCH_IMPORT_LOG names a file."""
from __future__ import annotations

import os

IMPORT_LOG_ENV = "ZSL_BENCH_IMPORT_LOG"   # tests: the project files each stage process imported


def log_imports(stage: str, args) -> None:
    """With ZSL_BENCH_IMPORT_LOG set: append one JSON line naming the stage, its arguments and every file
    of this project the process imported (tests/test_pipeline.py checks them against dvc.yaml's deps)."""
    import json
    import sys
    from pathlib import Path

    log = os.environ.get(IMPORT_LOG_ENV)
    if not log:
        return
    root = Path(__file__).resolve().parents[1]
    paths = [Path(m.__file__) for m in list(sys.modules.values()) if getattr(m, "__file__", None)]
    files = sorted({p.resolve().relative_to(root).as_posix() for p in paths if p.is_absolute()
                    and p.resolve().is_relative_to(root) and "site-packages" not in p.parts})
    with open(log, "a") as f:
        f.write(json.dumps({"stage": stage, "args": [str(a) for a in args], "files": files}) + "\n")
