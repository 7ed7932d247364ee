#!/usr/bin/env python
"""`dvc repro` from scratch, timed per stage and per method: the main job's profile (README "The main job").

Clones the repository's committed state (HEAD) into a fresh folder, so nothing made before is reused, runs
one `dvc repro` there as a user would, and times each stage from the moment DVC announces it ("Running stage
…") to the next announcement (the last one to the end); then sums each method's run times from the run
records' provenance (`wall_s`: what a worker spent on that run; the pool runs `launch.workers` of them at
once; scoring variants read off a run are not runs). Prints markdown tables.

    python benchmarks/profile_repro.py [--keep DIR] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def method_times(root: Path) -> dict[str, dict]:
    """method (and `ablation <variant>`) → {runs, wall_s} from the run folders' provenance.json."""
    totals: dict[str, dict] = defaultdict(lambda: {"runs": 0, "wall_s": 0.0})
    for prov in root.glob("runs/*/*/*/seed*/*/provenance.json"):
        if json.loads((prov.parent / "record.json").read_text()).get("score_variant_of"):
            continue
        stage, method = prov.parts[-5], prov.parts[-4]
        key = method if stage == "train" else f"ablation {method}"
        totals[key]["runs"] += 1
        totals[key]["wall_s"] += json.loads(prov.read_text())["resources"]["wall_s"]
    return dict(totals)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", type=Path, help="clone into this (new) folder and keep it")
    ap.add_argument("--json", type=Path, help="also write the profile here")
    args = ap.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="zslb-profile-")) / "repo"
    subprocess.run(["git", "clone", "-q", str(REPO), str(work)], check=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    stages, t_all = {}, time.perf_counter()
    current, since = None, t_all
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=work, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        found = re.match(r"Running stage '([^']+)'", line)
        if found:
            now = time.perf_counter()
            if current:
                stages[current] = round(now - since, 1)
                print(f"{current:24s} {stages[current]:7.1f} s", flush=True)
            current, since = found.group(1), now
    if proc.wait() != 0:
        raise SystemExit(f"dvc repro failed in {work}")
    stages[current] = round(time.perf_counter() - since, 1)
    print(f"{current:24s} {stages[current]:7.1f} s", flush=True)
    total = round(time.perf_counter() - t_all, 1)
    methods = method_times(work)
    result = {"total_s": total, "stages_s": stages, "methods": methods, "cores": os.cpu_count()}
    print(f"\n| stage | wall (s) |\n|---|---|")
    for stage, s in stages.items():
        print(f"| {stage} | {s:.0f} |")
    print(f"| **total** | **{total:.0f}** |\n\n| method | runs | run time, summed (s) |\n|---|---|---|")
    for name, m in sorted(methods.items(), key=lambda kv: -kv[1]["wall_s"]):
        print(f"| {name} | {m['runs']} | {m['wall_s']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
