"""Tables from run records: a row per method, mean ± std over seeds, n, and the selection policy.

Every number says what it is: accuracies are per-class mean top-1 in %, AUSUC × 100, `±` is the
sample standard deviation over seeds (ddof = 1), n is the number of seeds. An empty cell says why.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from zsl_bench.metrics import mean_std
from zsl_bench.protocol import PROTOCOL_VERSION, TABLE_METRICS
from zsl_bench.policies import HEADLINE_POLICY, POLICIES
from zsl_bench.records import newest_per_seed
from zsl_bench.run_results import RunResult
from zsl_bench.table_cells import INPUT_REGIMES, NOT_SEARCHED_NOTE, STD_NOTE, Cell, method_label, precision_label


def long_table(records: list[dict]):
    """One row per (record, policy): dataset, method, seed, policy and the five table metrics in %."""
    import pandas as pd

    rows = []
    for r in map(RunResult.from_record, records):
        for policy in POLICIES:
            rows.append({"dataset": r.feature_set, "method": r.method, "seed": r.seed, "policy": policy,
                         "uses_unseen_semantics": r.uses_unseen_semantics, "run_key": r.run_key, "wall_s": r.wall_s,
                         "searched": r.searched, "input": INPUT_REGIMES.get(r.input_kind, r.input_kind),
                         "precision": r.precision, **r.metrics[policy]})
    return pd.DataFrame(rows, columns=["dataset", "method", "seed", "policy", "uses_unseen_semantics", "run_key",
                                       "wall_s", "searched", "input", "precision", *TABLE_METRICS])


def summary(df, policy: str, skipped: dict | None = None):
    """Per (dataset, method): mean, std (ddof = 1) and n of each metric under `policy` (metrics.mean_std);
    plus a row with a `note` for each (dataset, method) in `skipped` (→ why) that has no run."""
    import pandas as pd

    rows = []
    have = set(zip(df["dataset"], df["method"])) if len(df) else set()
    for (dataset, method), reason in sorted((skipped or {}).items()):
        if (dataset, method) not in have:
            rows.append({"dataset": dataset, "method": method, **{f"{m}_{k}": math.nan for m in TABLE_METRICS
                                                                  for k in ("mean", "std")},
                         **{f"{m}_count": 0 for m in TABLE_METRICS}, "n": 0, "uses_unseen_semantics": None,
                         "hparams_searched": True, "input": "", "precision": "fp32", "note": f"skipped: {reason}"})
    for (dataset, method), g in df[df["policy"] == policy].groupby(["dataset", "method"], sort=True):
        row = {"dataset": dataset, "method": method}
        for m in TABLE_METRICS:
            row[f"{m}_mean"], row[f"{m}_std"], row[f"{m}_count"] = mean_std(g[m].to_numpy())
        rows.append({**row, "n": g["seed"].nunique(), "uses_unseen_semantics": bool(g["uses_unseen_semantics"].iloc[0]),
                     "hparams_searched": bool(g["searched"].all()), "input": g["input"].iloc[0],
                     "precision": precision_label(g["precision"]), "note": ""})
    return pd.DataFrame(rows).sort_values(["dataset", "method"], kind="stable", ignore_index=True)


def cell(mean: float, std: float, count: int) -> str:
    return Cell(mean, std, count, note="0 seeds run").text()


def metric_cells(row) -> list[str]:
    """The five metric cells of a summary row; a skipped method says why once, in its first cell."""
    if row.get("note"):
        return [f"— ({row['note']})", *["—"] * (len(TABLE_METRICS) - 1)]
    return [cell(row[f"{m}_mean"], row[f"{m}_std"], int(row[f"{m}_count"])) for m in TABLE_METRICS]


def markdown_table(summary_df, dataset: str, overlap_flag: str = "none") -> str:
    """`overlap_flag`: the section's pretraining overlap (overlap.py), on every row: a row's number may
    include unseen classes the backbone saw in pretraining, whatever the method."""
    head = "| method | T1 | U | S | H | AUSUC | n | input | unseen semantics in training | pretraining overlap |"
    lines = [head, "|" + "---|" * 10]
    for _, row in summary_df[summary_df["dataset"] == dataset].iterrows():
        semantics = "—" if row["uses_unseen_semantics"] is None else "yes" if row["uses_unseen_semantics"] else "no"
        lines.append(f"| {method_label(row)} | " + " | ".join(metric_cells(row))
                     + f" | {int(row['n'])} | {row['input'] or '—'} | {semantics} | {overlap_flag} |")
    return "\n".join(lines)


def deterministic_methods(df) -> list[str]:
    """Methods whose every metric is identical (to 1e-9) across ≥ 2 seeds: closed forms, std 0 by construction."""
    out = []
    sub = df[df["policy"] == HEADLINE_POLICY]
    for (_, method), g in sub.groupby(["dataset", "method"]):
        if len(g) > 1 and all(np.nanstd(g[m].to_numpy()) < 1e-9 for m in TABLE_METRICS):
            out.append(method)
    return sorted(set(out))


def setup_lines(records: list[dict]) -> list[str]:
    lines = []
    for dataset in sorted({r.feature_set for r in records}):
        r = next(x for x in records if x.feature_set == dataset)
        f = r["data"]["features"]
        bb = f["backbone"]
        trained = bb.get("trained_on")
        origin = (f"trained here on {trained['split']} ({trained['n_images']} images of {len(trained['classes'])} "
                  "seen classes; no validation-unseen, test or unseen-class image)" if trained else
                  f"pretrained on {bb.get('pretraining_data')}")
        arrays = sorted({a for x in records if x.feature_set == dataset for a in x["data"]["features"].get("arrays", [])})
        lines.append(f"- **{dataset}**: features from `{bb.get('arch')}`, {origin}; input {f['input_size']} px "
                     f"({', '.join(arrays)}); dataset fingerprint `{r['data']['dataset_fingerprint'][:12]}`; "
                     f"validation fold{'s' * (len(r['config']['folds']) > 1)} {', '.join(map(str, r['config']['folds']))} "
                     f"(`train.folds: {r['config']['folds_requested']}`), selection metric "
                     f"{r['config']['selection_metric']} (mean over folds), search {r['config']['search']}.")
    return lines


def _datasets(df, skipped: dict | None) -> list[str]:
    return sorted(set(df["dataset"].unique()) | {d for d, _ in (skipped or {})})


def overlap_summaries(records: list) -> dict[str, dict]:
    """`<dataset>/<backbone>` → its pretraining overlap (zsl_bench.overlap), from the unseen class names and
    the backbone's pretraining data every record keeps."""
    from zsl_bench.overlap import overlap_summary

    out = {}
    for r in records:
        classes = r["data"].get("classes")
        if r.feature_set not in out and classes:
            out[r.feature_set] = overlap_summary(
                r.dataset, r.backbone, r["data"]["features"]["backbone"].get("pretraining_data") or "none",
                classes["test_unseen"], classes["val_unseen"])
    return out


def results_markdown(records: list[dict], skipped: dict | None = None, overlap: dict | None = None) -> str:
    """`overlap`: `overlap_summaries(records)`, when the caller has it already (it also writes overlap.md)."""
    from zsl_bench.overlap import headline

    df = long_table(records)
    overlap = overlap_summaries(records) if overlap is None else overlap
    parts = [
        "# Results",
        "",
        f"Generated from {len(records)} run records by the `report` stage of `dvc repro`; do not edit by hand.",
        f"Protocol `{PROTOCOL_VERSION}` (GBU proposed split). T1 = ZSL per-class top-1 on unseen classes; "
        "U / S / H = GZSL per-class top-1 on unseen / seen test images over all classes, and their harmonic mean; "
        "AUSUC = area under the seen–unseen curve (exact, over every γ). All in %, "
        f"{STD_NOTE}.",
        "",
    ]
    for policy in POLICIES:
        s = summary(df, policy, skipped)
        for dataset in _datasets(df, skipped):
            parts += [f"## {dataset} — selection: {POLICIES[policy].title}", ""]
            if overlap.get(dataset, {}).get("flag", "none") != "none":   # the backbone may have seen unseen classes
                parts += [f"Pretraining overlap: **{overlap[dataset]['flag']}**: {headline(overlap[dataset])} "
                          "(overlap.md).", ""]
            parts += [markdown_table(s, dataset, overlap.get(dataset, {}).get("flag", "none")), ""]
            if not s[s["dataset"] == dataset]["hparams_searched"].all():
                parts += [NOT_SEARCHED_NOTE, ""]
    det = deterministic_methods(df)
    if det:
        parts += [f"Std 0 for {', '.join(det)}: closed-form fits are deterministic given the features, so seeds "
                  "cannot change them; their spread would come from data and backbone, which are fixed here.", ""]
    parts += ["## Setup", "", *setup_lines(records), ""]
    return "\n".join(parts)


def results_latex(records: list[dict], skipped: dict | None = None, overlap: dict | None = None) -> str:
    """The tables of results.md as LaTeX (booktabs), one per selection policy and dataset."""
    from zsl_bench.latex import latex_table

    df = long_table(records)
    overlap = overlap_summaries(records) if overlap is None else overlap
    parts = [f"% Generated by the report stage of `dvc repro` from {len(records)} run records; do not edit by hand.",
             f"% Protocol {PROTOCOL_VERSION}. All in %, {STD_NOTE}. Needs \\usepackage{{booktabs}}.", ""]
    for policy in POLICIES:
        s = summary(df, policy, skipped)
        for dataset in _datasets(df, skipped):
            rows = [[method_label(row), *metric_cells(row), str(int(row["n"]))]
                    for _, row in s[s["dataset"] == dataset].iterrows()]
            searched = s[s["dataset"] == dataset]["hparams_searched"].all()
            parts.append(latex_table(["method", *TABLE_METRICS, "n"], rows,
                                     f"{dataset}, selection {POLICIES[policy].title}. {STD_NOTE}."
                                     + ("" if searched else f" {NOT_SEARCHED_NOTE}")
                                     + (f" Pretraining overlap: {flag} (every row; overlap.md)."
                                        if (flag := overlap.get(dataset, {}).get("flag", "none")) != "none" else ""),
                                     f"tab:{dataset}-{policy}"))
    return "\n".join(parts)


def results_csv(records: list[dict], skipped: dict | None = None, overlap: dict | None = None):
    df = long_table(records)
    overlap = overlap_summaries(records) if overlap is None else overlap
    frames = []
    for policy in POLICIES:
        s = summary(df, policy, skipped)
        s.insert(2, "policy", policy)
        frames.append(s)
    import pandas as pd

    out = pd.concat(frames, ignore_index=True)
    out["pretraining_overlap"] = [overlap.get(label, {}).get("flag", "none") for label in out["dataset"]]
    # The tables group by `<dataset>/<backbone>`; the CSV keeps the two apart.
    pair = out["dataset"].str.partition("/")
    out["dataset"] = pair[0]
    out.insert(1, "backbone", pair[2])
    out["std_definition"] = "sample std over seeds, ddof=1"
    out["units"] = "percent"
    return out


def variant_changes(record: dict, reference: dict) -> str:
    """What a variant changes from the reference configuration, read off the recorded hyperparameters."""
    if "score_variant_of" in record:
        changed = record["score_variant_of"]["overrides"]
        return ", ".join(f"{k}={v}" for k, v in changed.items()) + " (same fitted models)"
    mine, ref = record["config"]["configs"][0], reference["config"]["configs"][0]   # the defaults
    changed = {k: v for k, v in mine.items() if ref.get(k) != v}
    return ", ".join(f"{k}={v}" for k, v in sorted(changed.items())) or "—"


def ablation_markdown(records: list[dict], method: str, skipped: dict | None = None) -> str:
    """One table per dataset: the official configuration, its A/A replicate (the noise floor), then each
    variant, with each row's paired ΔH, its 95 % interval and the smallest ΔH it could have detected
    (zsl_bench.paired_power); `skipped` (dataset, method) → why a method or variant did not run there."""
    from zsl_bench import paired_power
    from zsl_bench.records import REPLICATE_LABEL

    df = long_table(records)
    skipped = {k: v for k, v in (skipped or {}).items() if k[1] == method or k[1].startswith(method + ".")}
    s = summary(df, HEADLINE_POLICY, skipped)
    aa = method + REPLICATE_LABEL
    parts = [f"# Ablations of {method}", "",
             "Generated by the `report` stage of `dvc repro` from the runs of the `ablate` stage; do not edit by hand. "
             "Each row changes one switch from the official configuration (first row) and runs on the same seeds "
             "with common random numbers: every part the switch leaves in place starts from the same weights and "
             "sees the same batches, so ΔH, the paired difference to the official run of the same seed, is the "
             "switch's. The A/A row is the official configuration on an independent random stream: the largest "
             "|mean ΔH| it reaches at 95 % is the **A/A floor**. ΔH: mean ± std over seeds [95 % t interval of the "
             "mean]; **detectable**: the smallest true |ΔH| this row detects with 80 % power at α = 0.05 given its "
             "spread and n; **verdict**: separated when the interval excludes 0 and |ΔH| exceeds the A/A floor. "
             "Per-branch inference rows are read off the official runs' own checkpoints (same fitted models). "
             f"Every row ran in the same worker pool with the same thread settings. Selection policy: "
             f"{POLICIES[HEADLINE_POLICY].title}. All in %, {STD_NOTE}.", ""]
    for dataset in _datasets(df, skipped):
        official = next((r for r in records if r.method == method and r.feature_set == dataset), None)
        if official is None:
            why = skipped.get((dataset, method)) or next((v for (d, _), v in skipped.items() if d == dataset), None)
            parts += [f"## {dataset}", "", f"— (skipped: {why})" if why else
                      f"— ({method} itself has no run: nothing to compare with)", ""]
            continue
        sub = df[(df["dataset"] == dataset) & (df["policy"] == HEADLINE_POLICY)]
        ref = sub[sub["method"] == method].set_index("seed")["H"]
        rest = sorted((set(sub["method"]) | {m for d, m in skipped if d == dataset}) - {method, aa})
        names = [method, *([aa] if aa in set(sub["method"]) else []), *rest]
        deltas = {}
        for name in names:
            mine = sub[sub["method"] == name].set_index("seed")["H"]
            common = sorted(set(mine.index) & set(ref.index))
            deltas[name] = paired_power.paired_delta((mine.loc[common] - ref.loc[common]).to_numpy(dtype=float))
        floor = paired_power.noise_floor(deltas[aa]) if aa in deltas else math.nan
        parts += [f"## {dataset}", "", f"Input regime: {INPUT_REGIMES.get(official['method_info']['input_kind'])}. "
                  + (f"A/A floor: {floor:.1f} H points." if math.isfinite(floor) else "A/A floor: — (no A/A pairs)"), "",
                  "| variant | changes | T1 | U | S | H | AUSUC | ΔH [95 % CI] | detectable | verdict | n |",
                  "|" + "---|" * 11]
        for name in names:
            row = s[(s["dataset"] == dataset) & (s["method"] == name)].iloc[0]
            cells = metric_cells(row)
            if row["note"]:
                parts.append(f"| {name} | — | " + " | ".join(cells) + " | — | — | — | 0 |")
                continue
            d = deltas[name]
            delta = "—" if name == method else "— (no common seed)" if not d.n else d.text(signed=True)
            detectable = paired_power.detectable(d)
            power = "—" if name == method or not math.isfinite(detectable) else f"{detectable:.1f}"
            verdict = "—" if name in (method, aa) or not d.n else paired_power.verdict(d, floor)
            example = next(r for r in records if r.method == name and r.feature_set == dataset)
            changes = ("official configuration" if name == method else
                       "none: another random stream (A/A)" if name == aa else variant_changes(example, official))
            parts.append(f"| {name} | {changes} | " + " | ".join(cells)
                         + f" | {delta} | {power} | {verdict} | {int(row['n'])} |")
        parts += ["", *positive_control(records, dataset, method, names)]
    return "\n".join(parts)


def positive_control(records: list, dataset: str, method: str, names: list[str]) -> list[str]:
    """The ablation read against the dataset's ground truth (zsl_bench.twin_pairs): within-pair accuracy on
    twin classes told apart only by fine or only by coarse attributes, per row, with the paired Δ to the
    official run. Nothing when the dataset declares no pairs."""
    from zsl_bench import paired_power, twin_pairs

    mine = [r for r in records if r.feature_set == dataset]
    official = next(r for r in mine if r.method == method)
    kinds = twin_pairs.pair_kinds(official)
    if not kinds:
        return []
    pairs = official["data"]["class_pairs"]
    acc = {}   # (name, seed) → kind → %
    for r in mine:
        if r.method in names:
            acc[r.method, r.seed] = twin_pairs.pair_accuracy(r.predictions(), pairs, HEADLINE_POLICY)
    described = "; ".join(f"{k}: {', '.join(next(p for p in pairs if p['kind'] == k)['groups'])}" for k in kinds)
    out = ["Positive control: within-pair accuracy on twin unseen classes that differ only in one kind of "
           f"attribute group ({len(pairs)} pairs declared by the dataset; {described}). For a test image of one "
           "twin: is its own class scored above the other twin (chance 50 %)? Per class, then over the pair "
           f"classes; scores of the {HEADLINE_POLICY}-selected T1 checkpoint; Δ paired with the official run of "
           "the same seed [95 % t interval]. A row that drops the level carrying a kind's detail should lose on "
           "that kind only.", "",
           "| variant | " + " | ".join(f"{k} pairs | Δ {k}" for k in kinds) + " | n |",
           "|" + "---|" * (2 + 2 * len(kinds))]
    for name in names:
        seeds = sorted(s for n, s in acc if n == name)
        if not seeds:
            continue
        cells = []
        for k in kinds:
            cells.append(cell(*mean_std([acc[name, s].get(k, math.nan) for s in seeds])))
            common = [s for s in seeds if (method, s) in acc]
            d = paired_power.paired_delta([acc[name, s][k] - acc[method, s][k] for s in common])
            cells.append("—" if name == method else d.text(signed=True))
        out.append(f"| {name} | " + " | ".join(cells) + f" | {len(seeds)} |")
    return out + [""]


INDEX_LINES = (   # (file name pattern, one line saying what it is)
    (r"results\.md", "headline tables: every method, mean ± std over seeds, n, for each selection policy"),
    (r"results\.csv", "the same numbers, machine-readable (one row per dataset × method × policy)"),
    (r"results\.tex", "the same tables in LaTeX (booktabs), for a paper's results section"),
    (r"overlap\.md", "per dataset and backbone, which test-unseen and validation-unseen classes the backbone's "
                     "pretraining labels include (or may include: web-scale data), by a stated rule"),
    (r"ablation\.md", "ablations of params.yaml's `ablate.method`: one switch at a time, validation-selected, paired ΔH per seed"),
    (r"comparisons\.md", "params.yaml's `compare` questions: paired Δ per seed with bootstrap intervals, val and paper rules"),
    (r"selection_gap\.md", "selection inflation: paper − val and oracle − val in T1 and H, paired bootstrap intervals, "
     "from the same runs (policies re-read their traces)"),
    (r"figures/selection_gap_(.+)\.png", "{0}: selection inflation in H per method (paper − val, oracle − val)"),
    (r"figures/(.+)_seen_unseen_curves\.png", "{0}: GZSL seen–unseen curves per method, with AUSUC"),
    (r"figures/(.+)_unseen_per_class_accuracy\.png", "{0}: per-class top-1 on the unseen classes, per method"),
    (r"figures/(.+)_accuracy_vs_cost\.png", "{0}: H against measured wall time and against parameter count. "
     "The one output that changes on every rerun (it plots time): kept outside DVC's hashes (.dvcignore)"),
    (r"figures/(.+)_attention_(.+)\.png", "{0}: {1}'s attention maps over test images of unseen classes"),
)


def index_markdown(files: list[Path], out_dir: Path) -> str:
    """reports/README.md: one line per generated file."""
    import re

    lines = ["# reports/", "", "Generated by the `report` stage of `dvc repro` (or `zsl-bench report`); do not edit by "
             "hand. `zsl-bench compare A B` prints paired comparisons with bootstrap intervals from the same runs.", ""]
    for f in sorted(files, key=lambda f: (f.suffix == ".png", str(f))):
        rel = f.relative_to(out_dir).as_posix()
        for pattern, text in INDEX_LINES:
            m = re.fullmatch(pattern, rel)
            if m:
                lines.append(f"- [`{rel}`]({rel}): {text.format(*m.groups())}")
                break
        else:
            lines.append(f"- [`{rel}`]({rel})")
    return "\n".join(lines) + "\n"


def write_reports(records: list[dict], out_dir: Path, ablation: list[dict] | None = None,
                  ablation_method: str | None = None, skipped: dict | None = None,
                  skipped_ablation: dict | None = None) -> list[Path]:
    """results.md/.csv/.tex, overlap.md and ablation.md. `skipped` and `skipped_ablation`: (dataset, method) → why the
    method (or ablation variant) did not run there; a cell says so."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = newest_per_seed(records)
    md, csv, tex = out_dir / "results.md", out_dir / "results.csv", out_dir / "results.tex"
    from zsl_bench.overlap import overlap_markdown

    overlap = overlap_summaries(records)   # once: overlap.md and the line under each results heading
    md.write_text(results_markdown(records, skipped, overlap))
    results_csv(records, skipped, overlap).to_csv(csv, index=False, float_format="%.4f")
    tex.write_text(results_latex(records, skipped, overlap))
    (out_dir / "overlap.md").write_text(overlap_markdown(list(overlap.values())))
    written = [md, csv, tex, out_dir / "overlap.md"]
    if ablation_method:
        path = out_dir / "ablation.md"
        ablation_skips = {**(skipped or {}), **(skipped_ablation or {})}
        path.write_text(ablation_markdown(newest_per_seed(ablation or []), ablation_method, ablation_skips)
                        if ablation or skipped_ablation else
                        f"# Ablations of {ablation_method}\n\n— (0 ablation runs: run `dvc repro`)\n")
        written.append(path)
    return written
