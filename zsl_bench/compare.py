"""`zsl-bench compare A B [C ...]`: which method is better, by how much, and how sure we are.

Per dataset and metric: mean ± std over seeds (ddof = 1) and n for each method; for each other method
the per-seed paired difference to the first (mean ± std over the seeds both ran) with a 95 % paired
bootstrap interval over test images (`bootstrap.py`), marked `*` where it excludes 0; on real datasets
each method's published numbers, labelled as such, with their source. Rendered as md, csv, latex or json.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field

from zsl_bench import bootstrap
from zsl_bench.latex import escape, latex_table
from zsl_bench.metrics import mean_std
from zsl_bench.protocol import TABLE_METRICS
from zsl_bench.registry import published
from zsl_bench.policies import HEADLINE_POLICY, PAPER_POLICY, POLICIES, ScoresNotKept
from zsl_bench.table_cells import NOT_SEARCHED, NOT_SEARCHED_NOTE, STD_NOTE, Cell, method_label, precision_label
from zsl_bench.run_results import RunResult

CI_NOTE = (f"Δ = other − {{base}} per seed, mean ± std over the seeds both ran; [low, high] = 95 % paired bootstrap "
           f"interval of that mean over test images ({bootstrap.RESAMPLES} resamples within each test class and "
           "seed, both methods on the same resample; trained models, epoch and γ held fixed, so it reflects "
           "test-set sampling, not seed-to-seed spread); * = the interval excludes 0")


@dataclass
class Row:
    kind: str                  # "method" or "difference"
    name: str
    cells: dict[str, Cell]
    n: int
    published: dict | None = None   # {"T1": .., "U": .., "S": .., "H": .., "source": ..}
    paper: dict[str, Cell] | None = None   # ours under the method's own published rule (T1, H), beside `published`
    paper_t1_from: str = ""    # the variant the paper rule reads T1 from (PaperRule.t1_from), when not the method
    note: str = ""


@dataclass
class DatasetComparison:
    dataset: str
    policy: str
    rows: list[Row] = field(default_factory=list)
    real: bool = True


def _seed_values(results: list[RunResult], dataset: str, method: str, policy: str) -> dict[int, dict[str, float]]:
    return {r.seed: {m: r.metrics.get(policy, {}).get(m, math.nan) for m in TABLE_METRICS}
            for r in results if r.dataset == dataset and r.method == method}


def _summary_cell(values: list[float], expected: int | None, skipped: str | None = None) -> Cell:
    mean, std, n = mean_std(values)
    if not n:
        return Cell(note=f"skipped: {skipped}" if skipped else
                    f"0 of {expected} seeds run" if expected else "0 seeds run")
    return Cell(mean=mean, std=std, n=n)


def _scores(results: list[RunResult], dataset: str, method: str, policy: str) -> dict[int, bootstrap.TestScores]:
    return {r.seed: bootstrap.TestScores.load(r.predictions, policy)
            for r in results if r.dataset == dataset and r.method == method and r.predictions is not None}


def across_backbones(results: list[RunResult], skipped: dict, rows: list[str]) -> tuple[list[RunResult], dict]:
    """Rows `METHOD@BACKBONE` (a method on one of the dataset's backbones) in one table per dataset: each
    result and skip relabelled from `<dataset>/<backbone>` and its method to `<dataset>` and its row. Every
    backbone of a dataset is evaluated on the same test images, so seeds pair across rows."""
    import dataclasses

    wanted = {tuple(row.split("@", 1)): row for row in rows}
    out = []
    for r in results:
        dataset, _, backbone = r.dataset.partition("/")
        if (r.method, backbone) in wanted:
            out.append(dataclasses.replace(r, dataset=dataset, method=wanted[r.method, backbone]))
    skips = {}
    for (label, method), why in skipped.items():
        dataset, _, backbone = label.partition("/")
        if (method, backbone) in wanted:
            skips[dataset, wanted[method, backbone]] = why
    return out, skips


def compare(results: list[RunResult], methods: list[str], dataset: str | None = None, policy: str = HEADLINE_POLICY,
            expected_seeds: int | None = None, synthetic: tuple[str, ...] = ("synthetic",),
            skipped: dict | None = None) -> list[DatasetComparison]:
    """`skipped`: (dataset, method) → why that method did not run there (its cells say so)."""
    skipped = skipped or {}
    datasets = [dataset] if dataset else sorted({r.dataset for r in results} | {d for d, m in skipped if m in methods})
    out = []
    for ds in datasets:
        comp = DatasetComparison(ds, policy, real=ds.partition("/")[0] not in synthetic)   # `<dataset>/<backbone>`
        per_method = {m: _seed_values(results, ds, m, policy) for m in methods}
        for m in methods:
            seeds = per_method[m]
            pub = published(m, ds.partition("/")[0]) if comp.real and "@" not in m else None
            mine = [r for r in results if r.dataset == ds and r.method == m]
            why = skipped.get((ds, m))
            label = method_label({"method": m, "hparams_searched": all(r.searched for r in mine),
                                  "precision": precision_label(r.precision for r in mine)})
            comp.rows.append(Row("method", label,
                                 {k: _summary_cell([s[k] for s in seeds.values()], expected_seeds, why)
                                  for k in TABLE_METRICS}, len(seeds),
                                 published=({**{k: pub.get(k) for k in ("T1", "U", "S", "H")}, "source": pub.source}
                                            if pub else None),
                                 **(_paper_cells(results, ds, m) if comp.real and "@" not in m else {})))
        base = methods[0]
        for other in methods[1:]:
            common = sorted(set(per_method[base]) & set(per_method[other]))
            name = f"Δ {other} − {base}"
            if not common:
                comp.rows.append(Row("difference", name, {k: Cell(note="no seed run by both") for k in TABLE_METRICS},
                                     0))
                continue
            cells = {k: _summary_cell([per_method[other][s][k] - per_method[base][s][k] for s in common], None)
                     for k in TABLE_METRICS}
            try:
                a, b = _scores(results, ds, other, policy), _scores(results, ds, base, policy)
            except ScoresNotKept as e:   # a policy newer than the runs, at a checkpoint none of them kept
                a, b, intervals = {}, {}, str(e)
            else:
                missing = [s for s in common if s not in a or s not in b]
                intervals = ("predictions.npz missing for seed " + ", ".join(map(str, missing)) if missing else
                             bootstrap.paired_intervals({s: a[s] for s in common}, {s: b[s] for s in common}))
            note = ""
            if isinstance(intervals, str):
                note = f"no bootstrap interval: {intervals}"
            else:
                for k, iv in intervals.items():
                    cells[k].ci_low, cells[k].ci_high = float(iv.low), float(iv.high)
            comp.rows.append(Row("difference", name, cells, len(common), note=note))
        out.append(comp)
    return out


# --- rendering -------------------------------------------------------------------------------------

def _published_text(p: dict | None, real: bool) -> str:
    if not real:
        return ""
    if p is None:
        return "— (none published)"
    nums = lambda ks: " / ".join("–" if p[k] is None else f"{p[k]:.1f}" for k in ks)  # noqa: E731
    return f"{nums(['T1'])}; {nums(['U', 'S', 'H'])} ({p['source']})"


def _paper_cells(results: list[RunResult], dataset: str, method: str) -> dict:
    """Row fields of ours under the method's published rule: the `paper` policy's T1 and H, T1 from the
    variant the rule names when the authors' ZSL runs used other settings (`PaperRule.t1_from`)."""
    from zsl_bench.registry import get_method

    rule = get_method(method).paper_rule
    if rule is None:
        return {"paper": None}
    cells = {k: _summary_cell([s[k] for s in _seed_values(results, dataset, method, PAPER_POLICY).values()], None)
             for k in ("T1", "H")}
    source = f"{method}.{rule.t1_from}" if rule.t1_from and "." not in method else ""
    if source:
        values = [s["T1"] for s in _seed_values(results, dataset, source, PAPER_POLICY).values()]
        cells["T1"] = (_summary_cell(values, None) if values else
                       Cell(note=f"T1 from {source}, not run here: add it to train.methods"))
    return {"paper": cells, "paper_t1_from": source}


def _paper_text(row: Row) -> str:
    """Ours under the method's own published rule, the number to set beside `published`."""
    if not row.paper:
        return "— (no paper rule)"
    t1 = row.paper["T1"].text() + (f" ({row.paper_t1_from})" if row.paper_t1_from and row.paper["T1"].n else "")
    return f"{t1}; H {row.paper['H'].text()}"


def _header_lines(comp: DatasetComparison, methods: list[str], where: str) -> list[str]:
    return [f"dataset {comp.dataset} · selection {POLICIES[comp.policy].title}",
            f"values in %: {STD_NOTE}",
            CI_NOTE.format(base=methods[0]),
            *(["published = the authors' numbers (T1; U / S / H); ours (paper rule) = this run under the same rule "
               "(T1; H), the `paper` policy: set those two side by side, not the published numbers and the headline"]
              if comp.real else []),
            *([NOT_SEARCHED_NOTE] if any(r.name.endswith(NOT_SEARCHED) for r in comp.rows) else []),
            f"read from {where}"]


def _columns(comp: DatasetComparison) -> list[str]:
    return ["", *TABLE_METRICS, "n", *(["published", "ours (paper rule)"] if comp.real else [])]


def _cells(comp: DatasetComparison, row: Row) -> list[str]:
    return [row.name, *(row.cells[k].text(signed=row.kind == "difference") for k in TABLE_METRICS),
            str(row.n), *([_published_text(row.published, comp.real), _paper_text(row)]
                          if comp.real and row.kind == "method" else ["", ""] if comp.real else [])]


def render_md(comps: list[DatasetComparison], methods: list[str], where: str) -> str:
    out = []
    for comp in comps:
        table = [_columns(comp)] + [_cells(comp, row) for row in comp.rows]
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
        fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
        out += [f"## {comp.dataset}", "", *(f"- {line}" for line in _header_lines(comp, methods, where)), "",
                fmt(table[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, table[1:])]
        out += [f"- {row.name}: {row.note}" for row in comp.rows if row.note]
        out.append("")
    return "\n".join(out)


def render_csv(comps: list[DatasetComparison], methods: list[str], where: str) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["dataset", "policy", "kind", "name", "metric", "mean", "std", "n", "ci95_low", "ci95_high",
                "ci_excludes_zero", "published", "published_source", "ours_paper_rule", "note", "units", "std_definition", "source"])
    for comp in comps:
        for row in comp.rows:
            for k in TABLE_METRICS:
                c = row.cells[k]
                pub = row.published.get(k) if row.published and k in row.published else None
                w.writerow([comp.dataset, comp.policy, row.kind, row.name, k, _num(c.mean), _num(c.std), c.n,
                            _num(c.ci_low), _num(c.ci_high), "" if c.excludes_zero is None else c.excludes_zero,
                            _num(pub), row.published["source"] if row.published else "",
                            _num(row.paper[k].mean) if row.paper and k in row.paper else "", c.note or row.note,
                            "percent", "sample std over seeds, ddof=1", where])
    return buf.getvalue()


def _num(x) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def render_latex(comps: list[DatasetComparison], methods: list[str], where: str) -> str:
    out = [f"% generated by zsl-bench compare {' '.join(methods)}; read from {escape(where)}"]
    for comp in comps:
        rows = [_cells(comp, row) for row in comp.rows]
        out.append(latex_table(_columns(comp), rows, " ".join(_header_lines(comp, methods, where)[:3]),
                               f"tab:compare-{comp.dataset}-{comp.policy}"))
    return "\n".join(out)


def render_json(comps: list[DatasetComparison], methods: list[str], where: str) -> str:
    def clean(x):
        if isinstance(x, float) and math.isnan(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    payload = {"methods": methods, "source": where, "units": "percent", "std": "sample std over seeds, ddof=1",
               "interval": CI_NOTE.format(base=methods[0]),
               "datasets": [clean(asdict(c)) for c in comps]}
    for d, comp in zip(payload["datasets"], comps):
        for r, row in zip(d["rows"], comp.rows):
            for k in TABLE_METRICS:
                r["cells"][k]["excludes_zero"] = row.cells[k].excludes_zero
    return json.dumps(payload, indent=2, ensure_ascii=False) + "\n"


RENDERERS = {"md": render_md, "csv": render_csv, "latex": render_latex, "json": render_json}
