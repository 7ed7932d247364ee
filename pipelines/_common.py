from __future__ import annotations

import sys

from zsl_bench.io import DataError
from zsl_bench.params import load_params
from zsl_bench.paths import ProjectPaths


def run_stage(fn, *args) -> None:
    """Call a stage with the project's params; bad input ends with one clear line, exit code 2."""
    paths = ProjectPaths.here()
    try:
        fn(*args, load_params(paths), paths)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
