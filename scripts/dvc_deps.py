"""Rewrite the code deps of dvc.yaml's train and ablate stages from zsl_bench.code_identity.stage_code (the same
closure run keys hash): `python scripts/dvc_deps.py` after adding or moving a module; tests/test_nothing_stale.py
fails, naming the files, while they differ."""
from __future__ import annotations

import re
import sys
from pathlib import Path

from zsl_bench.code_identity import ROOT, stage_code

STAGES = {"train": "zsl_bench_pipelines.train", "ablate": "zsl_bench_pipelines.ablate"}
CODE_LINE = re.compile(r"^(\s+)- (zsl_bench|pipelines)/\S+\s*$")


def rewrite(text: str) -> str:
    lines, out, stage = text.split("\n"), [], None
    for line in lines:
        top = re.match(r"^  (\w+):", line)
        if top:
            stage = top.group(1)
        m = CODE_LINE.match(line)
        if stage in STAGES and m:
            if not out[-1].strip().startswith("- ") or not CODE_LINE.match(out[-1]):   # first code line: the list
                out += [f"{m.group(1)}- {f}" for f in stage_code(STAGES[stage])]
            continue
        out.append(line)
    return "\n".join(out)


if __name__ == "__main__":
    path = ROOT / "dvc.yaml"
    new = rewrite(path.read_text())
    changed = new != path.read_text()
    path.write_text(new)
    print(f"{path}: {'rewritten' if changed else 'already current'}", file=sys.stderr)
