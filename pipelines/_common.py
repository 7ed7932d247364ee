"""DVC stage entry points: each reads params.yaml and calls `zsl_bench.stages`; no logic here."""
from __future__ import annotations

import sys

from zsl_bench.errors import guarded
from zsl_bench.import_log import log_imports
from zsl_bench.params import load_params
from zsl_bench.paths import ProjectPaths


def run_stage(fn, *args, **named) -> None:
    """Call a stage with the project's params under zsl_bench.errors' policy (user errors: one line, exit 2)."""
    def call():
        paths = ProjectPaths.here()
        fn(*args, load_params(paths), paths, **named)

    code = guarded(f"stage {fn.__name__}", call)
    log_imports(fn.__name__, [*args, *named.values()])   # the stage's dataset (and backbone): which deps apply
    sys.exit(code)
