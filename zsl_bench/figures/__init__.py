"""Report figures (PNG) from finished runs, per dataset, under the headline selection policy `val`.

`data.py` computes what a figure shows from run folders only; `style.py` is how figures look; `plots.py`
draws each kind (its docstring lists them). `write_figures` is the entry point of the report stage.
"""
from __future__ import annotations

from pathlib import Path

from zsl_bench.figures.data import attention_data, group_records
from zsl_bench.records import VIEWS_FILE, RunRecord


def figure_jobs(records: list[RunRecord], skip) -> list[tuple[str, str, tuple]]:
    """(file name, kind, arguments) of every figure the records allow; `skip(name, reason)` is told of
    each one left out."""
    from zsl_bench.figures.style import colours

    jobs = []
    for dataset, by_method in group_records(records).items():
        stem = dataset.replace("/", "-")   # `<dataset>/<backbone>` → a file name, as in params.yaml's `features`
        with_predictions = {m: [r for r in rs if (r.folder / "predictions.npz").is_file()]
                            for m, rs in by_method.items()}
        missing = sorted(m for m, rs in with_predictions.items() if len(rs) < len(by_method[m]))
        if missing:
            skip(f"{dataset}: runs of {', '.join(missing)} in the prediction figures", "no predictions.npz")
        with_predictions = {m: rs for m, rs in with_predictions.items() if rs}
        palette = colours(list(by_method))
        if with_predictions:
            jobs.append((f"{stem}_seen_unseen_curves.png", "curves", (dataset, with_predictions, palette)))
            jobs.append((f"{stem}_unseen_per_class_accuracy.png", "per_class", (dataset, with_predictions, palette)))
        else:
            skip(f"{dataset} curve and per-class figures", "no run has predictions.npz")
        jobs.append((f"{stem}_accuracy_vs_cost.png", "cost", (dataset, by_method, palette)))
        with_views = [m for m, rs in with_predictions.items()
                      if rs[0].base_method is None and (rs[0].folder / VIEWS_FILE).is_file()]
        if not with_views:
            skip(f"{dataset} attention figures", "no run of a method that declares attention maps")
        for m in with_views:
            jobs.append((f"{stem}_attention_{m}.png", "attention", (dataset, with_predictions[m][0])))
    return jobs


def write_figures(records: list[RunRecord], out_dir: Path, progress: bool = True) -> list[Path]:
    """Every figure of every dataset in `records` (the newest per seed) into `out_dir/figures/`; returns
    the written paths. A figure whose inputs are missing is skipped with a printed reason."""
    from matplotlib import rc_context
    from tqdm import tqdm

    from zsl_bench.figures import plots
    from zsl_bench.figures.style import FONT

    def skip(name: str, reason: str) -> None:
        tqdm.write(f"figures: skipped {name}: {reason}")

    draw = {"curves": plots.curves_figure, "per_class": plots.per_class_figure, "cost": plots.cost_figure}
    folder = Path(out_dir) / "figures"
    written: list[Path] = []
    with rc_context(FONT):
        for name, kind, args in tqdm(figure_jobs(records, skip), desc="figures", unit="fig", disable=not progress):
            if kind == "attention":
                dataset, record = args
                written.append(plots.attention_figure(dataset, record, attention_data(record), folder / name))
            else:
                written.append(draw[kind](*args, folder / name))
    return written
