"""One error policy for the CLI and the DVC stage scripts.

- A user error (`DataError` and its kinds: bad params.yaml, a missing or damaged file, an unknown method)
  ends with one line naming the file and the problem, exit code 2.
- Ctrl-C ends with one line, exit code 130 (finished runs are kept: the next `dvc repro` adopts them).
- Anything else is a bug: Python's traceback, exit code 1.
`--debug` (or ZSL_BENCH_DEBUG=1) shows the traceback of user errors too.
"""
from __future__ import annotations

import os
import sys
import traceback

from zsl_bench.io import DataError

DEBUG_ENV = "ZSL_BENCH_DEBUG"
USER_ERROR, INTERRUPTED = 2, 130


def guarded(label: str, fn, *args, debug: bool = False) -> int:
    """Call `fn(*args)` under the policy; returns its exit code (0 when it returns None)."""
    debug = debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        code = fn(*args)
    except DataError as e:
        if debug:
            traceback.print_exc()
        print(f"{label}: error: {e}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        print(f"{label}: interrupted; rerun `dvc repro` (or the command) to continue", file=sys.stderr)
        return INTERRUPTED
    return int(code or 0)
