"""Report figures (PNG) from finished runs, per dataset, under the headline selection policy `val`.

    <dataset>_seen_unseen_curves.png          GZSL seen–unseen curve of each method (lowest seed) with
                                              the val-selected operating point; AUSUC mean ± std in the legend
    <dataset>_unseen_per_class_accuracy.png   ZSL per-class top-1 on unseen classes, mean over seeds
    <dataset>_accuracy_vs_cost.png            val H against run wall time and against learned parameters
    <dataset>_attention_<method>.png          attention maps of a region method (DAZLE, TransZero, Mg-MRN)
                                              on 4 unseen-class test images, from the rebuilt fitted model

Everything is read from run folders (record.json, predictions.npz, state.pt|npz); attention figures
rebuild the val-selected model (state.pt holds the trainval refit at the validation-chosen config and
epoch, evaluator.PolicyPicks) and read its inputs from the feature store, as the evaluator did.
Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, no global backend).
"""
from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path

import numpy as np

from zsl_bench.paths import ProjectPaths

DPI = 110
POLICY = "val"
FONT = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
        "xtick.labelsize": 10, "ytick.labelsize": 10, "figure.titlesize": 12.5}
COST_SIZE = (14.0, 6.2)          # inches; × DPI = pixels
N_ATTENTION_IMAGES = 4
BAR_LIMIT = 90                   # per-class figure: bars up to this many bars, markers beyond
TOP_ATTRIBUTES = 10              # attention summary: the image's class's most present attributes
ATTENTION_CMAP = "inferno"


# --- data preparation (tested separately from the drawing) ---------------------------------------------

def load_predictions(record: dict) -> dict[str, np.ndarray]:
    with np.load(Path(record["_folder"]) / "predictions.npz") as f:
        return {k: f[k] for k in f.files}


def seen_unseen_data(pred: dict) -> dict:
    """The exact seen–unseen curve of the `val` scores (U, S in %) and the operating point at the
    val-selected γ (which lies on the curve: U and S are constant between switch points)."""
    from zsl_bench.metrics import gzsl_accuracies, seen_unseen_curve

    scores, labels, seen = pred["scores_val"], pred["labels"], pred["seen_class_mask"]
    curve = seen_unseen_curve(scores, labels, seen)
    gamma = float(pred["gamma_val"])
    at = gzsl_accuracies(scores, labels, seen, gamma)
    return {"U": 100.0 * curve.U, "S": 100.0 * curve.S, "AUSUC": 100.0 * curve.auc(), "gamma": gamma,
            "point_U": 100.0 * at.U, "point_S": 100.0 * at.S, "point_H": 100.0 * at.H}


def unseen_per_class_accuracy(pred: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ZSL setting: unseen test images, argmax over unseen columns. Returns (dataset class ids, class
    names, top-1 accuracy in [0, 1]) of the unseen classes, in column order; NaN for a class without
    test images."""
    from zsl_bench.metrics import per_class_accuracy

    seen = np.asarray(pred["seen_class_mask"], dtype=bool)
    unseen_cols = np.flatnonzero(~seen)
    rows = np.asarray(pred["unseen_sample_mask"], dtype=bool)
    scores = np.asarray(pred["scores_val"], dtype=np.float64)[rows][:, unseen_cols]
    predictions = unseen_cols[np.argmax(scores, axis=1)]
    acc = per_class_accuracy(pred["labels"][rows], predictions, unseen_cols)
    return pred["class_ids"][unseen_cols], pred["class_names"][unseen_cols], acc


def load_state(record: dict) -> dict:
    """The fitted state of a run folder: tensors from state.pt (torch methods) or arrays from state.npz."""
    folder = Path(record["_folder"])
    if (folder / "state.pt").is_file():
        import torch

        return torch.load(folder / "state.pt", map_location="cpu", weights_only=False)
    with np.load(folder / "state.npz") as f:
        return {k: f[k] for k in f.files}


def parameter_counts(record: dict, paths: ProjectPaths, cache: "ProjectCache | None" = None) -> dict:
    """Values in the fitted state: `state_values` (all), `learned` (those a fit changes) and `fixed`
    (names of state entries that are not trainable parameters: registered buffers such as Mg-MRN's
    word vectors, or parameters with requires_grad False such as DAZLE's V without `trainable_w2v`).
    Closed-form and numpy methods store only what they fit. Torch methods are rebuilt to tell which."""
    state = load_state(record)
    sizes = {k: int(np.prod(tuple(v.shape), dtype=np.int64)) for k, v in state.items()}
    fixed: list[str] = []
    if any(type(v).__module__.startswith("torch") for v in state.values()):
        method, _ = rebuild_method(record, paths, cache, state=state)
        net = method.net
        trainable = {n for n, p in net.named_parameters() if p.requires_grad}
        fixed = sorted(k for k in sizes if k not in trainable)
    return {"state_values": sum(sizes.values()), "learned": sum(v for k, v in sizes.items() if k not in fixed),
            "fixed": fixed}


class ProjectCache:
    """Datasets and feature stores read once per dataset."""

    def __init__(self, paths: ProjectPaths):
        self.paths, self._data = paths, {}

    def get(self, dataset: str):
        if dataset not in self._data:
            from zsl_bench.data.dataset import load_dataset
            from zsl_bench.features import FeatureStore

            self._data[dataset] = (load_dataset(self.paths.prepared(dataset)),
                                   FeatureStore(self.paths.features(dataset)))
        return self._data[dataset]


def method_class_and_hparams(record: dict) -> tuple[type, dict]:
    """The method class and the hyperparameters of the val-selected model (a score variant's record
    is rebuilt as its base method with the variant's scoring overrides)."""
    from zsl_bench.registry import get_method

    hparams = dict(record["hparams"][POLICY])
    if "score_variant_of" in record:
        base = record["score_variant_of"]
        return get_method(base["method"]), {**hparams, **base["overrides"]}
    return get_method(record["method"]), hparams


def rebuild_method(record: dict, paths: ProjectPaths, cache: ProjectCache | None = None, state: dict | None = None):
    """(method with the run's fitted state loaded, on CPU; the Evaluator that gives its Task and
    inputs exactly as the runner built them). Raises DataError when the dataset or the feature store
    changed since the run (their fingerprints are in the record)."""
    from zsl_bench.evaluator import Evaluator
    from zsl_bench.io import DataError

    cache = cache or ProjectCache(paths)
    dataset, store = cache.get(record["dataset"])
    method_cls, hparams = method_class_and_hparams(record)
    if dataset.fingerprint() != record["data"]["dataset_fingerprint"]:
        raise DataError(f"{paths.prepared(record['dataset'])}: not the dataset version of run {record['_folder']}")
    evaluator = Evaluator(dataset, store, method_cls, seed=int(record["seed"]), fold=int(record["config"]["fold"]),
                          search=False, device="cpu", progress=False)
    recorded = record["data"]["features"].get("sha256", [])
    if [store.fingerprint(f) for f in evaluator.features] != list(recorded):
        raise DataError(f"{store.root}: features were extracted again since run {record['_folder']}")
    if "pretrained" in hparams:
        hparams["pretrained"], hparams["weights_file"] = False, None   # every weight comes from the state
    method = method_cls(hparams, evaluator.task, "cpu")
    method.load_state_dict(load_state(record) if state is None else state)
    return method, evaluator


def attention_images(pred: dict, n: int = N_ATTENTION_IMAGES) -> np.ndarray:
    """Positions (into the test arrays) of the first test image, in dataset row order, of each of the
    first `n` unseen classes met in that order: a fixed choice, the same for every method and seed."""
    unseen = np.flatnonzero(np.asarray(pred["unseen_sample_mask"], dtype=bool))
    chosen, classes = [], set()
    for pos in unseen[np.argsort(pred["image_rows"][unseen], kind="stable")]:
        c = int(pred["labels"][pos])
        if c not in classes:
            classes.add(c)
            chosen.append(int(pos))
            if len(chosen) == n:
                break
    return np.array(chosen, dtype=np.int64)


def class_attribute_weights(class_att: np.ndarray, top_k: int = TOP_ATTRIBUTES) -> np.ndarray:
    """Per row (one class): the `top_k` largest attribute values (negative cells count as 0), the rest
    0, rescaled to sum 1. The attention summary reads where the model looks for the attributes that
    define the image's class."""
    att = np.maximum(np.asarray(class_att, dtype=np.float64), 0.0)
    w = np.zeros_like(att)
    k = min(top_k, att.shape[1])
    top = np.argsort(-att, axis=1, kind="stable")[:, :k]
    np.put_along_axis(w, top, np.take_along_axis(att, top, axis=1), axis=1)
    total = w.sum(1, keepdims=True)
    return np.where(total > 0, w / np.where(total > 0, total, 1.0), 1.0 / att.shape[1])


def attribute_weighted_attention(attention: np.ndarray, weights: np.ndarray | None, grid) -> np.ndarray:
    """[N, A, T] attention of attribute queries over tokens → [N, H, W]: Σ_i w_i · attention_i, weights
    rescaled to sum 1 per image (uniform when None). T is a multiple of H·W: token blocks laid out on
    the same grid (Mg-MRN's own and fused tokens) are added cell by cell. Attention rows that sum to 1
    over tokens give maps that sum to 1 over cells."""
    attention = np.asarray(attention, dtype=np.float64)
    n, a, t = attention.shape
    h, w = (int(g) for g in grid)
    if t % (h * w):
        raise ValueError(f"{t} attention tokens do not tile the {h}×{w} grid")
    if weights is None:
        weights = np.ones((n, a))
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (n, a):
        raise ValueError(f"attribute weights {weights.shape}, expected {(n, a)}")
    weights = weights / np.maximum(weights.sum(1, keepdims=True), 1e-300)
    summary = np.einsum("na,nat->nt", weights, attention)
    return summary.reshape(n, t // (h * w), h, w).sum(1)


def short_class_name(name: str, max_len: int = 26) -> str:
    """'001.Black_footed_Albatross' → 'Black footed Albatross', cut to `max_len` characters."""
    name = re.sub(r"^\d+\.", "", str(name)).replace("_", " ").strip()
    return name if len(name) <= max_len else name[:max_len - 1].rstrip() + "…"


def mean_std(values) -> tuple[float, float, int]:
    """Mean, sample std (ddof = 1; 0 for one value) and n of the finite values."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if not len(v):
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)


def pm(mean: float, std: float, n: int) -> str:
    """'12.3 ± 0.4' over several seeds, '12.3 (n = 1, no std)' over one."""
    return f"{mean:.1f} ± {std:.1f}" if n > 1 else f"{mean:.1f} (n = {n}, no std)"


def curve_figsize(legend_labels: list[str]) -> tuple[float, float]:
    """Square axes plus a legend column as wide as the longest label."""
    return (round(max(10.5, 8.2 + 0.085 * max(map(len, legend_labels), default=0)), 2), 7.4)


def per_class_figsize(n_classes: int) -> tuple[float, float]:
    return (min(28.0, max(13.0, 5.0 + 0.42 * n_classes)), 7.0)


def attention_figsize(n_maps: int, n_images: int = N_ATTENTION_IMAGES) -> tuple[float, float]:
    return (1.4 + 2.9 * n_images, 1.6 + 3.0 * (n_maps + 1))


def pixels(figsize: tuple[float, float]) -> tuple[int, int]:
    """The PNG's width × height for a figure size (savefig without a tight bounding box; Agg truncates)."""
    return int(figsize[0] * DPI), int(figsize[1] * DPI)


# --- helpers for drawing ---------------------------------------------------------------------------------

def _new_figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=DPI)
    tmp.replace(path)
    return path


def _colours(methods: list[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    if len(methods) <= 10:
        return {m: colormaps["tab10"](i) for i, m in enumerate(methods)}
    order = [*range(0, 20, 2), *range(1, 20, 2)]   # tab20's dark shades first, then the light ones
    return {m: colormaps["tab20"](order[i % 20]) for i, m in enumerate(methods)}


def _log_formatter(unit: str, minor: bool = False):
    """Log-axis tick labels in plain numbers with k/M (1, 2, 5 × 10^k on minor ticks)."""
    from matplotlib.ticker import FuncFormatter

    def fmt(v, _pos):
        if v <= 0:
            return ""
        mantissa = v / 10 ** math.floor(math.log10(v) + 1e-9)
        if minor and round(mantissa, 6) not in (2.0, 5.0):
            return ""
        for div, suffix in ((1e6, "M"), (1e3, "k")):
            if v >= div:
                return f"{v / div:g}{suffix}{unit}"
        return f"{v:g}{unit}"

    return FuncFormatter(fmt)


def _seed_text(seeds) -> str:
    seeds = sorted(set(int(s) for s in seeds))
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}"


def _place_labels(ax, xs, ys, texts, colours, xerr=None, yerr=None) -> None:
    """Label points, avoiding overlaps: offsets on growing rings around each point are tried nearest
    first; the first whose box covers no earlier label, marker or error bar and stays inside the axes
    wins (else the least covered one); a leader line when the label sits away from its point."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    to_px = ax.transData.transform
    points = [tuple(to_px((x, y))) for x, y in zip(xs, ys)]
    marker = 6.0
    obstacles = [((px - marker, py - marker, px + marker, py + marker), 1.0) for px, py in points]
    for i, (x, y) in enumerate(zip(xs, ys)):   # error bars: thin obstacles, less bad to cross
        if yerr is not None and yerr[i] > 0:
            (_, lo), (_, hi) = to_px((x, y - yerr[i])), to_px((x, y + yerr[i]))
            obstacles.append(((points[i][0] - 2, lo, points[i][0] + 2, hi), 0.3))
        if xerr is not None and xerr[i] > 0:
            (lo, _), (hi, _) = to_px((max(x - xerr[i], x * 1e-3), y)), to_px((x + xerr[i], y))
            obstacles.append(((lo, points[i][1] - 2, hi, points[i][1] + 2), 0.3))
    scale = DPI / 72.0   # points → pixels
    candidates = [(8, 4), (8, -14), (-8, 4), (-8, -14)]
    for radius in (18, 30, 44, 60, 80):
        for angle in range(0, 360, 30):
            a = math.radians(angle)
            candidates.append((radius * math.cos(a), radius * math.sin(a) - 5))
    area = ax.bbox

    def overlap(a, b) -> float:
        return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))

    for i in sorted(range(len(xs)), key=lambda k: -points[k][1]):
        probe = ax.text(0, 0, texts[i], fontsize=10, fontweight="bold")
        box = probe.get_window_extent(renderer)
        probe.remove()
        w, h = box.width + 2, box.height + 2
        px, py = points[i]
        best, best_cost = None, math.inf
        for dx, dy in candidates:
            x0 = px + dx * scale if dx >= 0 else px + dx * scale - w
            rect = (x0, py + dy * scale, x0 + w, py + dy * scale + h)
            outside = w * h - overlap(rect, (area.x0, area.y0, area.x1, area.y1))
            cost = 3.0 * outside + sum(weight * overlap(rect, r) for r, weight in obstacles)
            if cost < best_cost:
                best, best_cost = (dx, dy, rect), cost
            if cost == 0:
                break
        dx, dy, rect = best
        obstacles.append((rect, 1.0))
        far = math.hypot(dx, dy) > 16
        text_colour = tuple(0.75 * c for c in colours[i][:3])   # a darker shade: light colours stay legible
        ax.annotate(texts[i], (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points", fontsize=10,
                    ha="left" if dx >= 0 else "right", va="bottom", color=text_colour, fontweight="bold",
                    arrowprops={"arrowstyle": "-", "color": colours[i], "lw": 0.8, "shrinkA": 0, "shrinkB": 5}
                    if far else None)


# --- the figures -----------------------------------------------------------------------------------------

def curve_legend(by_method: dict[str, list[dict]]) -> tuple[dict[str, str], list[int]]:
    """Legend label of each method ("method — AUSUC mean ± std", from the records) and the seed counts;
    a label names its n only when the methods' seed counts differ."""
    stats = {m: mean_std(100.0 * r["selection"][POLICY]["metrics"]["AUSUC"] for r in rs) for m, rs in by_method.items()}
    ns = sorted({n for _, _, n in stats.values()})
    return ({m: f"{m} — AUSUC {pm(mean, std, n)}" + (f" (n = {n})" if len(ns) > 1 and n > 1 else "")
             for m, (mean, std, n) in stats.items()}, ns)


def curves_figure(dataset: str, by_method: dict[str, list[dict]], colours, path: Path) -> Path:
    from matplotlib.lines import Line2D

    labels, ns = curve_legend(by_method)
    fig = _new_figure(curve_figsize(list(labels.values())))
    ax = fig.add_subplot()
    shown_seeds, top = [], 0.0
    for method, records in by_method.items():
        first = records[0]   # lowest seed
        d = seen_unseen_data(load_predictions(first))
        shown_seeds.append(first["seed"])
        ax.plot(d["U"], d["S"], color=colours[method], lw=2.0, label=labels[method])
        ax.plot([d["point_U"]], [d["point_S"]], "o", color=colours[method], ms=9, mec="black", mew=1.0, zorder=5)
        top = max(top, float(d["U"].max()), float(d["S"].max()))
    lim = min(100.0, 10.0 * math.ceil(top * 1.05 / 10.0))
    ax.set_xlim(0, lim)
    ax.set_ylim(0, lim)
    ax.set_aspect("equal")
    ax.set_anchor("W")   # the square axes keep to the left, the legend right beside them
    ax.grid(alpha=0.3)
    ax.set_xlabel("U: accuracy on unseen-class test images (%, per-class mean top-1, GZSL)")
    ax.set_ylabel("S: accuracy on seen-class test images (%, per-class mean top-1, GZSL)")
    handles, texts = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], ls="", marker="o", ms=9, mfc="white", mec="black"))
    texts.append("operating point at the val-selected γ")
    n_text = "/".join(map(str, ns))
    ax.legend(handles, texts, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
              title=f"method — AUSUC (%)\nmean ± std over n = {n_text} seeds")
    fig.suptitle(f"{dataset}: GZSL seen–unseen curves (calibrated stacking, every γ), selection policy {POLICY}\n"
                 f"curve of the lowest seed ({_seed_text(sorted(set(shown_seeds)))}); AUSUC over n = {n_text} seeds",
                 fontsize=12.5)
    return _save(fig, path)


def per_class_figure(dataset: str, by_method: dict[str, list[dict]], colours, path: Path) -> Path:
    ids, names, rows = None, None, {}
    seeds_of, t1 = {}, {}
    for method, records in by_method.items():
        accs = []
        for r in records:
            cid, cnames, acc = unseen_per_class_accuracy(load_predictions(r))
            if ids is None:
                ids, names = cid, cnames
            elif not np.array_equal(ids, cid):
                raise ValueError(f"{r['_folder']}: unseen classes differ from the other runs of {dataset}")
            accs.append(100.0 * acc)
        accs = np.array(accs)
        rows[method] = (np.nanmean(accs, axis=0), np.nanmin(accs, axis=0), np.nanmax(accs, axis=0))
        seeds_of[method] = [r["seed"] for r in records]
        t1[method] = mean_std(np.nanmean(a) for a in accs)   # accs in % already
    overall = np.nanmean(np.array([v[0] for v in rows.values()]), axis=0)
    order = np.argsort(-np.nan_to_num(overall, nan=-1.0), kind="stable")
    n_classes, methods = len(order), list(rows)
    size = per_class_figsize(n_classes)
    fig = _new_figure(size)
    ax = fig.add_subplot()
    x = np.arange(n_classes)
    width = 0.8 / len(methods)
    bars = n_classes * len(methods) <= BAR_LIMIT
    for j, method in enumerate(methods):
        mean, lo, hi = (v[order] for v in rows[method])
        off = x - 0.4 + width * (j + 0.5)
        m, s, n = t1[method]
        label = f"{method} (T1 {pm(m, s, n)})"
        if bars:
            ax.bar(off, mean, width=width * 0.92, color=colours[method], label=label, zorder=3)
        else:
            ax.plot(off, mean, "o", ms=6, color=colours[method], label=label, zorder=3)
        if len(seeds_of[method]) > 1:   # the seeds' range: thin whiskers
            ax.vlines(off, lo, hi, color="black" if bars else colours[method], lw=0.9, alpha=0.7, zorder=4)
    ax.plot(x, overall[order], "_", ms=22, mew=2.5, color="black", zorder=5, label="mean over methods")
    ax.set_xticks(x)
    ax.set_xticklabels([short_class_name(names[i]) for i in order], rotation=40, ha="right",
                       rotation_mode="anchor")
    ax.set_xlim(-0.6, n_classes - 0.4)
    ax.set_ylim(0, 105)
    ax.set_ylabel("top-1 accuracy (%), mean over seeds")
    ax.set_xlabel(f"unseen class ({n_classes}), sorted by the mean over methods")
    ax.grid(axis="y", alpha=0.3, zorder=0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
              title="method (ZSL T1 in %:\nmean over classes,\nmean ± std over seeds)")
    all_seeds = sorted({s for v in seeds_of.values() for s in v})
    ns = sorted({len(v) for v in seeds_of.values()})
    fig.suptitle(f"{dataset}: per-class top-1 accuracy on unseen classes, selection policy {POLICY}\n"
                 "ZSL setting: unseen test images, argmax over unseen classes; "
                 f"mean over {_seed_text(all_seeds)} (n = {'/'.join(map(str, ns))}), whiskers: min–max over seeds",
                 fontsize=12.5)
    return _save(fig, path)


def cost_figure(dataset: str, by_method: dict[str, list[dict]], colours, path: Path, paths: ProjectPaths,
                cache: ProjectCache, skip) -> Path:
    fig = _new_figure(COST_SIZE)
    ax_time, ax_params = fig.subplots(1, 2, sharey=True)
    points = {"time": [], "params": []}
    devices, ns, fixed_notes = set(), set(), {}
    for method, records in by_method.items():
        h = mean_std(100.0 * r["selection"][POLICY]["metrics"]["H"] for r in records)
        t = mean_std(r["resources"]["wall_s"] for r in records)
        ns.add(h[2])
        devices.update(str(r["environment"].get("device")) for r in records)
        points["time"].append((method, t, h))
        try:
            counts = [parameter_counts(r, paths, cache) for r in records]
        except Exception as e:   # a state that cannot be rebuilt: the point is left out, said why
            skip(f"{dataset}_accuracy_vs_cost.png, parameters of {method}", f"{type(e).__name__}: {e}")
            continue
        fixed = sorted({k.split(".")[-1] for c in counts for k in c["fixed"]})
        if fixed:
            fixed_notes[method] = fixed
        points["params"].append((method, mean_std(c["learned"] for c in counts), h))
    for ax, key in ((ax_time, "time"), (ax_params, "params")):
        for method, (xm, xs, _), (ym, ys, _) in points[key]:
            ax.errorbar([xm], [ym], xerr=[xs], yerr=[ys], fmt="o", ms=8, color=colours[method], ecolor=colours[method],
                        elinewidth=1.5, capsize=4, mec="black", mew=0.8, zorder=3)
        ax.set_xscale("log")
        ax.grid(alpha=0.3, which="both")
        if points[key]:
            xs_all = [p[1][0] for p in points[key]]
            lo, hi = min(xs_all), max(xs_all)
            ax.set_xlim(lo / 2.2, hi * 2.2)
    lows = [p[2][0] - p[2][1] for p in points["time"]]
    highs = [p[2][0] + p[2][1] for p in points["time"]]
    pad = max(2.0, 0.12 * (max(highs) - min(lows)))
    ax_time.set_ylim(max(0.0, min(lows) - pad), min(100.0, max(highs) + 2 * pad))   # room for labels on top
    ax_time.xaxis.set_major_formatter(_log_formatter(""))
    ax_params.xaxis.set_major_formatter(_log_formatter(""))
    for ax in (ax_time, ax_params):
        ax.xaxis.set_minor_formatter(_log_formatter("", minor=True))
    ax_time.set_ylabel("H (%), val-selected model on test, mean ± std over seeds")
    ax_time.set_xlabel("wall time of the whole run (s, log): validation search + trainval refit")
    ax_params.set_xlabel("learned parameters (log): trainable values in the fitted state")
    ax_time.set_title(f"H vs run wall time (device: {', '.join(sorted(devices))})")
    ax_params.set_title("H vs learned parameters (frozen backbone not counted)")
    for ax, key in ((ax_time, "time"), (ax_params, "params")):
        if points[key]:
            _place_labels(ax, [p[1][0] for p in points[key]], [p[2][0] for p in points[key]],
                          [p[0] for p in points[key]], [colours[p[0]] for p in points[key]],
                          xerr=[p[1][1] for p in points[key]], yerr=[p[2][1] for p in points[key]])
    note = ""
    if fixed_notes:
        by_entries: dict[tuple, list[str]] = {}
        for m, entries in fixed_notes.items():
            by_entries.setdefault(tuple(entries), []).append(m)
        note = "\n" + textwrap.fill("not counted as learned: fixed (non-trainable) state entries " + "; ".join(
            f"{', '.join(e)} of " + ("every method shown" if len(ms) == len(by_method) > 1 else ", ".join(ms))
            for e, ms in by_entries.items()), 150)
    fig.suptitle(f"{dataset}: accuracy vs cost, selection policy {POLICY}, mean ± std over n = "
                 f"{'/'.join(map(str, sorted(ns)))} seeds (error bars in both axes){note}", fontsize=12.5)
    return _save(fig, path)


def attention_data(record: dict, paths: ProjectPaths, cache: ProjectCache | None = None,
                   n_images: int = N_ATTENTION_IMAGES, top_k: int = TOP_ATTRIBUTES) -> dict:
    """What an attention figure shows, for one run: the chosen test images (dataset rows, classes,
    ZSL predictions), their images as the features saw them and the method's maps, name → [n, H, W].
    Checks first that the rebuilt model reproduces the recorded `val` scores of those images."""
    cache = cache or ProjectCache(paths)
    pred = load_predictions(record)
    method, evaluator = rebuild_method(record, paths, cache)
    dataset, store = cache.get(record["dataset"])
    positions = attention_images(pred, n_images)
    rows = pred["image_rows"][positions]
    x = evaluator.inputs(rows)
    scores = np.asarray(method.score(x, evaluator.semantics(pred["class_ids"])), dtype=np.float64)
    recorded = pred["scores_val"][positions].astype(np.float64)
    scale = max(1.0, float(np.abs(recorded).max()))
    if not np.allclose(scores, recorded, rtol=0, atol=2e-3 * scale):
        raise RuntimeError(f"the rebuilt model does not reproduce the recorded scores of {record['_folder']} "
                           f"(max difference {np.abs(scores - recorded).max():.3g})")
    classes = pred["class_ids"][pred["labels"][positions]]
    weights = class_attribute_weights(evaluator.semantics(classes).att, top_k)
    maps = method.attention_maps(x, weights)
    unseen_cols = np.flatnonzero(~pred["seen_class_mask"])
    zsl_pred = pred["class_ids"][unseen_cols[np.argmax(recorded[:, unseen_cols], axis=1)]]
    size = record["data"]["features"].get("input_size") or store.index.get("input_size")
    crop = "center" if (size is None or str(store.index.get("resize", "")).startswith("short side")) else "none"
    return {"rows": rows, "classes": classes, "predicted": zsl_pred, "maps": maps, "weights": weights,
            "image_size": int(size or 448), "crop": crop, "size_assumed": size is None,
            "images": _images(dataset, rows, int(size or 448), crop)}


def _images(dataset, rows, size: int, crop: str) -> np.ndarray:
    from zsl_bench.images import load_rgb, load_rgb_center_crop

    load = load_rgb_center_crop if crop == "center" else load_rgb
    return np.stack([load(dataset.image_path(int(r)), size) for r in rows])


def attention_figure(dataset_name: str, record: dict, data: dict, class_names: list[str], path: Path) -> Path:
    maps = data["maps"]
    n_maps, n_images = len(maps), len(data["rows"])
    size = attention_figsize(n_maps, n_images)
    fig = _new_figure(size)
    axes = fig.subplots(n_maps + 1, n_images, squeeze=False)
    images = data["images"]
    grey = images.mean(-1, keepdims=True).repeat(3, -1) / 255.0
    grey = 0.15 + 0.85 * grey    # a grey image under the map, so the colours carry the attention
    first = next(iter(maps.values()))
    h, w = first.shape[1:]
    ratio = {name: m * (h * w) for name, m in maps.items()}   # attention ÷ uniform: 1 = uniform
    vmax = max(float(r.max()) for r in ratio.values())
    mappable = None
    for j in range(n_images):
        true, guess = int(data["classes"][j]), int(data["predicted"][j])
        ok = "✓" if true == guess else "✗"
        ax = axes[0, j]
        ax.imshow(images[j])
        ax.set_title(f"{short_class_name(class_names[true], 30)}\n"
                     f"ZSL pred.: {short_class_name(class_names[guess], 22)} {ok}", fontsize=10.5)
        for i, (name, r) in enumerate(ratio.items(), start=1):
            ax = axes[i, j]
            ax.imshow(grey[j])
            extent = (-0.5, images.shape[2] - 0.5, images.shape[1] - 0.5, -0.5)
            mappable = ax.imshow(r[j], cmap=ATTENTION_CMAP, vmin=0.0, vmax=vmax, alpha=0.6, extent=extent,
                                 interpolation="nearest")
            if h * w <= 100:   # cell borders on coarse grids
                for y in np.linspace(-0.5, images.shape[1] - 0.5, h + 1)[1:-1]:
                    ax.axhline(y, color="white", lw=0.6, alpha=0.6)
                for xx in np.linspace(-0.5, images.shape[2] - 0.5, w + 1)[1:-1]:
                    ax.axvline(xx, color="white", lw=0.6, alpha=0.6)
            if j == 0:
                ax.set_ylabel(name, fontsize=11.5)
    axes[0, 0].set_ylabel(f"image ({data['image_size']} px)", fontsize=11.5)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    cbar = fig.colorbar(mappable, ax=axes[1:, :], shrink=0.85, aspect=30, pad=0.01)
    cbar.set_label(f"attention ÷ uniform (1 = 1/{h * w} per cell)")
    crop = "short side + centre crop" if data["crop"] == "center" else "whole image resized, no crop"
    assumed = " (size assumed: the store does not record it)" if data["size_assumed"] else ""
    grid = "the coarse (layer4) grid all branches share" if n_maps > 1 else "the feature grid"
    fig.suptitle(f"{dataset_name}: {record['method']} attention over {grid} ({h}×{w} cells), selection policy "
                 f"{POLICY}, seed {record['seed']} (n = 1)\n"
                 f"{n_images} unseen-class test images: the first image of each of the first {n_images} unseen "
                 f"classes in dataset order; image as the features saw it: {crop}{assumed}\n"
                 f"map = attention averaged over the true class's top-{TOP_ATTRIBUTES} attributes, weighted by "
                 "their class attribute values", fontsize=12)
    return _save(fig, path)


# --- entry point -----------------------------------------------------------------------------------------

def group_records(records: list[dict]) -> dict[str, dict[str, list[dict]]]:
    """dataset → method → records sorted by seed (newest record per (dataset, method, seed)); methods
    in the order they first appear (the order of params.yaml for `configured_records`)."""
    from zsl_bench.report import latest_per_seed

    keep = {id(r) for r in latest_per_seed(records)}
    out: dict[str, dict[str, list[dict]]] = {}
    for r in records:
        if id(r) in keep:
            out.setdefault(r["dataset"], {}).setdefault(r["method"], []).append(r)
    for by_method in out.values():
        for rs in by_method.values():
            rs.sort(key=lambda r: int(r["seed"]))
    return out


def has_attention(record: dict) -> bool:
    try:
        cls, _ = method_class_and_hparams(record)
    except KeyError:
        return False
    return callable(getattr(cls, "attention_maps", None))


def write_figures(records: list[dict], out_dir: Path, paths: ProjectPaths, progress: bool = True) -> list[Path]:
    """Every figure of every dataset in `records` into `out_dir/figures/`; returns the written paths.
    A figure whose inputs are missing is skipped with a printed reason."""
    from tqdm import tqdm

    from matplotlib import rc_context

    folder = Path(out_dir) / "figures"
    cache = ProjectCache(paths)
    written: list[Path] = []

    def skip(name: str, reason: str) -> None:
        tqdm.write(f"figures: skipped {name}: {reason}")

    jobs = []
    for dataset, by_method in group_records(records).items():
        with_predictions = {m: [r for r in rs if (Path(r["_folder"]) / "predictions.npz").is_file()]
                            for m, rs in by_method.items()}
        missing = sorted(m for m, rs in with_predictions.items() if len(rs) < len(by_method[m]))
        if missing:
            skip(f"{dataset}: runs of {', '.join(missing)} in the prediction figures", "no predictions.npz")
        with_predictions = {m: rs for m, rs in with_predictions.items() if rs}
        colours = _colours(list(by_method))
        if with_predictions:
            jobs.append((f"{dataset}_seen_unseen_curves.png", curves_figure, (dataset, with_predictions, colours)))
            jobs.append((f"{dataset}_unseen_per_class_accuracy.png", per_class_figure,
                         (dataset, with_predictions, colours)))
        else:
            skip(f"{dataset} curve and per-class figures", "no run has predictions.npz")
        jobs.append((f"{dataset}_accuracy_vs_cost.png", cost_figure, (dataset, by_method, colours)))
        region = [m for m, rs in with_predictions.items() if has_attention(rs[0])]
        for m in list(region):   # a score variant's model is its base method's: the same maps
            base = with_predictions[m][0].get("score_variant_of", {}).get("method")
            if base in region:
                region.remove(m)
                skip(f"{dataset}_attention_{m}.png", f"the same fitted model as {base} (a scoring variant)")
        if not region:
            skip(f"{dataset} attention figures", "no run of a region method (one with `attention_maps`: "
                 "dazle, transzero, mgmrn)")
        for m in region:
            jobs.append((f"{dataset}_attention_{m}.png", "attention", (dataset, with_predictions[m][0])))

    with rc_context(FONT):
        for name, fn, args in tqdm(jobs, desc="figures", unit="fig", disable=not progress):
            path = folder / name
            if fn == "attention":
                dataset, record = args
                try:
                    data = attention_data(record, paths, cache)
                except Exception as e:   # inputs gone (features re-extracted, images missing, …)
                    skip(name, f"{type(e).__name__}: {e}")
                    continue
                written.append(attention_figure(dataset, record, data, cache.get(dataset)[0].class_names, path))
            elif fn is cost_figure:
                written.append(fn(*args, path, paths, cache, skip))
            else:
                written.append(fn(*args, path))
    return written
