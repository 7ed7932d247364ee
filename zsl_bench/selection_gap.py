"""Selection inflation: how much each method's published rule gains by looking at test.

Per dataset and method, `paper` − `val` and `oracle` − `val` in T1 and H (points: mean over seeds of the
per-seed difference), each with a 95 % paired bootstrap interval over test images (bootstrap.py: the same
resample scores both policies of a run, so the interval is about the test draw, not the training noise).
Only re-evaluation can make this table: the three policies are read off the same runs' traces and kept
scores (policies.py), so it comes from existing runs with nothing retrained.
"""
from __future__ import annotations

import math
from pathlib import Path

from zsl_bench.bootstrap import TestScores, paired_intervals
from zsl_bench.policies import HEADLINE_POLICY, ORACLE_POLICY, PAPER_POLICY, POLICIES, ScoresNotKept
from zsl_bench.records import RunRecord

AGAINST = (PAPER_POLICY, ORACLE_POLICY)   # each set against the headline
METRICS = ("T1", "H")
FILE = "selection_gap.md"


def gap_rows(records: list[RunRecord]) -> list[dict]:
    """One row per (dataset, method, policy in AGAINST): n seeds, and per metric the mean gap (points, %) with
    its interval, or the reason there is none."""
    by_method: dict[tuple, list[RunRecord]] = {}
    for r in records:
        by_method.setdefault((r.feature_set, r.method), []).append(r)
    rows = []
    for (dataset, method), runs in sorted(by_method.items()):
        predictions = {}   # each run's predictions.npz read once, for every policy
        for policy in AGAINST:
            applies = [r for r in runs if r.policy(policy) is not None]
            row = {"dataset": dataset, "method": method, "policy": policy, "n": len(applies)}
            if not applies:
                rows.append({**row, "note": f"no {policy} rule declared"})
                continue
            for k in METRICS:
                row[k] = sum(r.metrics(policy)[k] - r.metrics(HEADLINE_POLICY)[k] for r in applies) / len(applies)
            try:
                for r in applies:
                    predictions.setdefault(r.seed, r.predictions())
                scores = {p: {r.seed: TestScores.of(predictions[r.seed], p) for r in applies}
                          for p in (policy, HEADLINE_POLICY)}
                intervals = paired_intervals(scores[policy], scores[HEADLINE_POLICY])
            except ScoresNotKept as e:
                intervals = str(e)
            if isinstance(intervals, str):
                row["note"] = f"no interval: {intervals}"
            else:
                row.update({f"{k}_ci": (intervals[k].low, intervals[k].high) for k in METRICS})
            rows.append(row)
    return rows


def _cell(row: dict, k: str) -> str:
    if k not in row or not math.isfinite(row[k]):
        return "—"
    ci = row.get(f"{k}_ci")
    return f"{row[k]:+.1f} [{ci[0]:+.1f}, {ci[1]:+.1f}]" if ci else f"{row[k]:+.1f}"


def markdown(rows: list[dict]) -> str:
    parts = ["# Selection inflation: what looking at test buys", "",
             f"Per method: `paper` − `val` and `oracle` − `val`, in points of T1 and H (mean over seeds of the "
             f"per-seed difference; n = seeds), with a 95 % paired bootstrap interval over test images "
             f"({HEADLINE_POLICY}: {POLICIES[HEADLINE_POLICY].title}). `paper` is each method's published rule "
             "(its README); where it selects on test, the gap is how much of a published number comes from that "
             "choice. `oracle` bounds every policy from above. All from existing runs: policies are read off "
             "their recorded traces, nothing retrained.", ""]
    for dataset in sorted({r["dataset"] for r in rows}):
        parts += [f"## {dataset}", "",
                  "| method | n | paper − val T1 | paper − val H | oracle − val T1 | oracle − val H |",
                  "|---|---|---|---|---|---|"]
        by_method: dict[str, dict[str, dict]] = {}
        for r in rows:
            if r["dataset"] == dataset:
                by_method.setdefault(r["method"], {})[r["policy"]] = r
        for method, pol in by_method.items():
            cells = [_cell(pol[p], k) if p in pol else "—" for p in AGAINST for k in METRICS]
            n = max(r["n"] for r in pol.values())
            parts.append(f"| {method} | {n} | " + " | ".join(cells) + " |")
        notes = sorted({f"{m} ({p}): {r['note']}" for m, pol in by_method.items() for p, r in pol.items()
                        if "note" in r})
        parts += ["", *(f"- {n}" for n in notes), ""] if notes else [""]
    return "\n".join(parts).rstrip() + "\n"


def figure(rows: list[dict], dataset: str, path: Path) -> Path:
    """Gaps in H per method: `paper` − `val` and `oracle` − `val` with their intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mine = [r for r in rows if r["dataset"] == dataset]
    methods = sorted({r["method"] for r in mine})
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(methods) + 1.6))
    for j, (policy, colour) in enumerate(zip(AGAINST, ("#1f77b4", "#7f7f7f"))):
        ys, xs, lo, hi = [], [], [], []
        for i, m in enumerate(methods):
            r = next((x for x in mine if x["method"] == m and x["policy"] == policy), None)
            if r and "H" in r:
                ci = r.get("H_ci", (r["H"], r["H"]))
                ys.append(i + (j - 0.5) * 0.35)
                xs.append(r["H"])
                lo.append(r["H"] - ci[0])
                hi.append(ci[1] - r["H"])
        ax.errorbar(xs, ys, xerr=[lo, hi], fmt="o", color=colour, capsize=3, label=f"{policy} − {HEADLINE_POLICY}")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(methods)), methods)
    ax.set_xlabel("gap in H (points), 95 % paired bootstrap interval")
    ax.set_title(f"{dataset}: selection inflation (H), mean over seeds")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_selection_gap(records: list[RunRecord], out_dir: Path) -> list[Path]:
    """reports/selection_gap.md and figures/selection_gap_<dataset>.png from `records` (the current runs)."""
    rows = gap_rows(records)
    out = Path(out_dir) / FILE
    out.write_text(markdown(rows))
    return [out, *(figure(rows, d, Path(out_dir) / "figures" / f"selection_gap_{d.replace('/', '-')}.png")
                   for d in sorted({r["dataset"] for r in rows}))]
