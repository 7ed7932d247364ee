"""`zsl-bench compare A B [C ...]`: the methods side by side and their per-seed paired differences."""
from __future__ import annotations

import math

import numpy as np

from zsl_bench.report import POLICY_TITLES, STD_NOTE, cell, latest_per_seed, long_table, summary
from zsl_bench.tracking import TABLE_METRICS


def paired_differences(df, dataset: str, policy: str, a: str, b: str) -> dict[str, tuple[float, float, int]]:
    """Per metric: mean and std (ddof = 1) of (a − b) over the seeds both methods ran, and that n."""
    sub = df[(df["dataset"] == dataset) & (df["policy"] == policy)]
    left = sub[sub["method"] == a].set_index("seed")
    right = sub[sub["method"] == b].set_index("seed")
    seeds = sorted(set(left.index) & set(right.index))
    out = {}
    for m in TABLE_METRICS:
        d = (left.loc[seeds, m] - right.loc[seeds, m]).to_numpy(dtype=float) if seeds else np.array([])
        out[m] = (float(d.mean()) if len(d) else math.nan, float(d.std(ddof=1)) if len(d) > 1 else math.nan, len(d))
    return out


def compare_text(records: list[dict], methods: list[str], dataset: str | None = None, policy: str = "val") -> str:
    records = latest_per_seed(records)
    df = long_table(records)
    datasets = [dataset] if dataset else sorted(df["dataset"].unique()) if len(df) else []
    if not datasets:
        return "no run records found: run `dvc repro` (or `zsl-bench train`) first"
    lines = []
    for ds in datasets:
        s = summary(df, policy)
        s = s[s["dataset"] == ds].set_index("method")
        lines += [f"dataset {ds} · selection {POLICY_TITLES[policy]}",
                  f"values in %, {STD_NOTE}", ""]
        width = max(len(m) for m in methods) + max(len(m) for m in methods) + 5  # room for 'b − a'
        lines.append("method".ljust(width) + "".join(m.rjust(14) for m in TABLE_METRICS) + "n".rjust(4))
        for method in methods:
            if method in s.index:
                row = s.loc[method]
                cells = [cell(row[f"{m}_mean"], row[f"{m}_std"], int(row[f"{m}_count"])) for m in TABLE_METRICS]
                n = int(row["n"])
            else:
                cells, n = ["— (0 seeds run)"] * len(TABLE_METRICS), 0
            lines.append(method.ljust(width) + "".join(c.rjust(14) for c in cells) + str(n).rjust(4))
        base = methods[0]
        for other in methods[1:]:
            diffs = paired_differences(df, ds, policy, other, base)
            n = max(v[2] for v in diffs.values())
            label = f"{other} − {base}"
            if n == 0:
                lines.append(f"{label}: no seed run by both, no paired difference")
                continue
            cells = [("—" if math.isnan(mu) else f"{mu:+.1f}" + ("" if math.isnan(sd) else f" ± {sd:.1f}"))
                     for mu, sd, _ in diffs.values()]
            lines.append(label.ljust(width) + "".join(c.rjust(14) for c in cells) + str(n).rjust(4)
                         + "   (paired over seeds)")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
