"""The four kinds of report figure, drawn from what `data.py` computes from run folders.

    <dataset>_seen_unseen_curves.png          GZSL seen–unseen curve of each method (lowest seed) with
                                              the val-selected operating point; AUSUC mean ± std in the legend
    <dataset>_unseen_per_class_accuracy.png   ZSL per-class top-1 on unseen classes, mean over seeds
    <dataset>_accuracy_vs_cost.png            val H against run wall time and against learned parameters
    <dataset>_attention_<method>.png          attention maps of a method that declares them, on 4
                                              unseen-class test images (views.npz, saved at train time)
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np

from zsl_bench.figures.data import (POLICY, cost_points, curve_legend, per_class_rows, pm, seen_unseen_data,
                                    short_class_name)
from zsl_bench.figures.style import (attention_figsize, curve_figsize, log_formatter, new_figure, per_class_figsize,
                                     place_labels, save, seed_text)

COST_SIZE = (14.0, 6.2)          # inches; × DPI = pixels
BAR_LIMIT = 90                   # per-class figure: bars up to this many bars, markers beyond
ATTENTION_CMAP = "inferno"


def curves_figure(dataset: str, by_method: dict, colours, path: Path) -> Path:
    from matplotlib.lines import Line2D

    labels, ns = curve_legend(by_method)
    fig = new_figure(curve_figsize(list(labels.values())))
    ax = fig.add_subplot()
    shown_seeds, top = [], 0.0
    for method, records in by_method.items():
        first = records[0]   # lowest seed
        d = seen_unseen_data(first.predictions())
        shown_seeds.append(first.seed)
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
                 f"curve of the lowest seed ({seed_text(sorted(set(shown_seeds)))}); AUSUC over n = {n_text} seeds",
                 fontsize=12.5)
    return save(fig, path)


def per_class_figure(dataset: str, by_method: dict, colours, path: Path) -> Path:
    d = per_class_rows(dataset, by_method)
    names, rows, seeds_of, t1 = d["names"], d["rows"], d["seeds_of"], d["t1"]
    overall = np.nanmean(np.array([v[0] for v in rows.values()]), axis=0)
    order = np.argsort(-np.nan_to_num(overall, nan=-1.0), kind="stable")
    n_classes, methods = len(order), list(rows)
    size = per_class_figsize(n_classes)
    fig = new_figure(size)
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
                 f"mean over {seed_text(all_seeds)} (n = {'/'.join(map(str, ns))}), whiskers: min–max over seeds",
                 fontsize=12.5)
    return save(fig, path)


def cost_figure(dataset: str, by_method: dict, colours, path: Path) -> Path:
    fig = new_figure(COST_SIZE)
    ax_time, ax_params = fig.subplots(1, 2, sharey=True)
    c = cost_points(by_method)
    points, devices, ns, fixed_notes = c["points"], c["devices"], c["ns"], c["fixed_notes"]
    for ax, key in ((ax_time, "time"), (ax_params, "params")):
        for method, (xm, xs, _), (ym, ys, _) in points[key]:
            xs, ys = np.nan_to_num(xs), np.nan_to_num(ys)   # one seed: no spread to draw
            ax.errorbar([xm], [ym], xerr=[xs], yerr=[ys], fmt="o", ms=8, color=colours[method], ecolor=colours[method],
                        elinewidth=1.5, capsize=4, mec="black", mew=0.8, zorder=3)
        ax.set_xscale("log")
        ax.grid(alpha=0.3, which="both")
        if points[key]:
            xs_all = [p[1][0] for p in points[key]]
            lo, hi = min(xs_all), max(xs_all)
            ax.set_xlim(lo / 2.2, hi * 2.2)
    lows = [p[2][0] - np.nan_to_num(p[2][1]) for p in points["params"]]
    highs = [p[2][0] + np.nan_to_num(p[2][1]) for p in points["params"]]
    pad = max(2.0, 0.12 * (max(highs) - min(lows)))
    ax_time.set_ylim(max(0.0, min(lows) - pad), min(100.0, max(highs) + 2 * pad))   # room for labels on top
    ax_time.xaxis.set_major_formatter(log_formatter(""))
    ax_params.xaxis.set_major_formatter(log_formatter(""))
    for ax in (ax_time, ax_params):
        ax.xaxis.set_minor_formatter(log_formatter("", minor=True))
    ax_time.set_ylabel("H (%), val-selected model on test, mean ± std over seeds")
    ax_time.set_xlabel("wall time of the whole run (s, log): validation search + trainval refit")
    ax_params.set_xlabel("learned parameters (log): trainable values in the fitted state")
    ax_time.set_title(f"H vs run wall time (device: {', '.join(sorted(devices))})")
    ax_params.set_title("H vs learned parameters (frozen backbone not counted)")
    for ax, key in ((ax_time, "time"), (ax_params, "params")):
        if points[key]:
            place_labels(ax, [p[1][0] for p in points[key]], [p[2][0] for p in points[key]],
                          [p[0] for p in points[key]], [colours[p[0]] for p in points[key]],
                          xerr=[np.nan_to_num(p[1][1]) for p in points[key]],
                          yerr=[np.nan_to_num(p[2][1]) for p in points[key]])
    note = ""
    if fixed_notes:
        by_entries: dict[tuple, list[str]] = {}
        for m, entries in fixed_notes.items():
            by_entries.setdefault(tuple(entries), []).append(m)
        note = "\n" + textwrap.fill("not counted as learned: fixed (non-trainable) state entries " + "; ".join(
            f"{', '.join(e)} of " + ("every method shown" if len(ms) == len(by_method) > 1 else ", ".join(ms))
            for e, ms in by_entries.items()), 150)
    if c["untimed"]:
        note += "\n" + textwrap.fill("no wall time recorded (run folders without provenance.json, e.g. restored "
                                      "from DVC's cache): " + ", ".join(c["untimed"]), 150)
    fig.suptitle(f"{dataset}: accuracy vs cost, selection policy {POLICY}, mean ± std over n = "
                 f"{'/'.join(map(str, sorted(ns)))} seeds (error bars in both axes){note}", fontsize=12.5)
    return save(fig, path)


def attention_figure(dataset_name: str, record: dict, data: dict, path: Path) -> Path:
    class_names = data["class_names"]
    maps = data["maps"]
    n_maps, n_images = len(maps), len(data["rows"])
    size = attention_figsize(n_maps, n_images)
    fig = new_figure(size)
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
                 f"map = attention averaged over the true class's top-{data['top_attributes']} attributes, weighted by "
                 "their class attribute values", fontsize=12)
    return save(fig, path)
