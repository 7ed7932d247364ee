#!/usr/bin/env python
"""Record a benchmark's step times where `zsl-bench plan` reads them: each method folder's step_times.json,
under the device kind the benchmark ran on (zsl_bench/plan.py).

Reads the JSON that `bench_attention_family.py` prints (and `gpu_check.py` writes to benchmarks/results/):
{"results": {"<method> <precision>": {"step_s_median", "batch", "peak_gpu_memory_GiB", ...}}}. An entry that
failed (an "error") is not recorded; the others replace what the folder held for that kind and precision.

    python benchmarks/record_step_times.py benchmarks/results/attention_family_image_h100.json \\
        --device-kind h100-80gb --shapes "CUB: ResNet-101 fine-tuned end to end, 448 px (APN 224 px)"
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ABOUT = ("Seconds per training step (one batch through the method's update) by device kind and precision, "
         "measured by the benchmark named in `source`; read by `zsl-bench plan`. Written by "
         "benchmarks/record_step_times.py: do not edit by hand.")


def entries(result: dict) -> dict[tuple[str, str], dict]:
    """(method, precision) → what step_times.json keeps of a successful measurement."""
    out = {}
    for label, m in result["results"].items():
        if "error" in m or "step_s_median" not in m:
            continue
        method, _, precision = label.rpartition(" ")
        keep = {"step_s": m["step_s_median"], "batch": m.get("batch"), "steps_timed": m.get("steps")}
        for src, dst in (("peak_gpu_memory_GiB", "peak_memory_GiB"),
                         ("peak_gpu_memory_half_batch_GiB", "peak_memory_half_batch_GiB")):
            if m.get(src) is not None:
                keep[dst] = m[src]
        out[method, precision or m.get("precision", "fp32")] = keep
    return out


def record(result_file: Path, kind: str, shapes: str, methods_dir: Path = HERE.parent / "methods") -> list[Path]:
    result = json.loads(Path(result_file).read_text())
    written = {}
    for (method, precision), entry in entries(result).items():
        folder = methods_dir / method.split(".")[0]
        if not folder.is_dir():
            raise SystemExit(f"{result_file}: method {method!r} has no folder {folder}")
        path = folder / "step_times.json"
        table = written.get(path) or (json.loads(path.read_text()) if path.is_file() else {})
        table["_about"] = ABOUT
        row = table.setdefault(kind, {}).setdefault(method, {})
        row.update({"shapes": shapes, "source": str(Path(result_file).resolve().relative_to(HERE.parent)),
                    precision: entry})
        written[path] = table
    for path, table in written.items():
        path.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    return sorted(written)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("result", type=Path, help="a benchmark's JSON output")
    ap.add_argument("--device-kind", help="the kind it ran on, as `zsl-bench plan` names kinds (default: the "
                    "result's own `device_kind`)")
    ap.add_argument("--shapes", help="what the steps were measured at (default: the result's own `shapes`)")
    args = ap.parse_args(argv)
    result = json.loads(args.result.read_text())
    kind, shapes = args.device_kind or result.get("device_kind"), args.shapes or result.get("shapes")
    if not kind or not shapes:
        ap.error(f"{args.result} names no device_kind or shapes: give --device-kind and --shapes")
    for path in record(args.result, kind, shapes):
        print(f"wrote {path.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
