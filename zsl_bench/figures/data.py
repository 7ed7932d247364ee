"""What the report figures show, computed from run records and their saved arrays (no drawing here).

Everything comes from run folders: record.json, predictions.npz and views.npz (records.py). No model,
dataset or feature store is read: what a figure needs of a model was saved at train time.
"""
from __future__ import annotations

import re
import numpy as np

from zsl_bench.metrics import mean_std
from zsl_bench.records import Predictions, RunRecord
from zsl_bench.policies import HEADLINE_POLICY

POLICY = HEADLINE_POLICY         # figures show the headline policy


def seen_unseen_data(pred: Predictions) -> dict:
    """The exact seen–unseen curve of the `val` scores (U, S in %) in the space its γ applies to (each image's
    scores over their spread) and the operating point at the val-selected γ, which lies on that curve. AUSUC
    is the recorded one, of the raw scores."""
    from zsl_bench.metrics import gzsl_accuracies, seen_unseen_curve

    labels, seen = pred.labels, pred.seen_class_mask
    scores, gamma = pred.scores(POLICY, "H")
    curve = seen_unseen_curve(scores, labels, seen)
    at = gzsl_accuracies(scores, labels, seen, gamma)
    return {"U": 100.0 * curve.U, "S": 100.0 * curve.S,
            "AUSUC": 100.0 * seen_unseen_curve(pred.scores(POLICY, "AUSUC")[0], labels, seen).auc(), "gamma": gamma,
            "point_U": 100.0 * at.U, "point_S": 100.0 * at.S, "point_H": 100.0 * at.H}


def unseen_per_class_accuracy(pred: Predictions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ZSL setting: unseen test images, argmax over unseen columns. Returns (dataset class ids, class
    names, top-1 accuracy in [0, 1]) of the unseen classes, in column order; NaN for a class without
    test images."""
    from zsl_bench.metrics import per_class_accuracy

    seen = np.asarray(pred.seen_class_mask, dtype=bool)
    unseen_cols = np.flatnonzero(~seen)
    rows = np.asarray(pred.unseen_sample_mask, dtype=bool)
    scores = np.asarray(pred.scores(POLICY, "T1")[0], dtype=np.float64)[rows][:, unseen_cols]
    predictions = unseen_cols[np.argmax(scores, axis=1)]
    acc = per_class_accuracy(pred.labels[rows], predictions, unseen_cols)
    return pred.class_ids[unseen_cols], pred.class_names[unseen_cols], acc


def short_class_name(name: str, max_len: int = 26) -> str:
    """'001.Black_footed_Albatross' → 'Black footed Albatross', cut to `max_len` characters."""
    name = re.sub(r"^\d+\.", "", str(name)).replace("_", " ").strip()
    return name if len(name) <= max_len else name[:max_len - 1].rstrip() + "…"


def pm(mean: float, std: float, n: int) -> str:
    """'12.3 ± 0.4' over several seeds, '12.3 (n = 1, no std)' over one."""
    return f"{mean:.1f} ± {std:.1f}" if n > 1 else f"{mean:.1f} (n = {n}, no std)"


def group_records(records: list[RunRecord]) -> dict[str, dict[str, list[RunRecord]]]:
    """dataset → method → records sorted by seed (callers pass the newest record per seed); methods in the
    order they first appear (params.yaml's order for the report stage)."""
    out: dict[str, dict[str, list[RunRecord]]] = {}
    for r in records:
        out.setdefault(r.feature_set, {}).setdefault(r.method, []).append(r)
    for by_method in out.values():
        for rs in by_method.values():
            rs.sort(key=lambda r: r.seed)
    return out


def curve_legend(by_method: dict[str, list[RunRecord]]) -> tuple[dict[str, str], list[int]]:
    """Legend label of each method ("method — AUSUC mean ± std", from the records) and the seed counts;
    a label names its n only when the methods' seed counts differ."""
    stats = {m: mean_std(r.metrics(POLICY)["AUSUC"] for r in rs) for m, rs in by_method.items()}
    ns = sorted({n for _, _, n in stats.values()})
    return ({m: f"{m} — AUSUC {pm(mean, std, n)}" + (f" (n = {n})" if len(ns) > 1 and n > 1 else "")
             for m, (mean, std, n) in stats.items()}, ns)


def per_class_rows(dataset: str, by_method: dict[str, list[RunRecord]]) -> dict:
    """Per method: per unseen class top-1 (%) mean, min and max over seeds, the seeds, and T1 mean ± std."""
    ids, names, rows, seeds_of, t1 = None, None, {}, {}, {}
    for method, records in by_method.items():
        accs = []
        for r in records:
            cid, cnames, acc = unseen_per_class_accuracy(r.predictions())
            if ids is None:
                ids, names = cid, cnames
            elif not np.array_equal(ids, cid):
                raise ValueError(f"{r.folder}: unseen classes differ from the other runs of {dataset}")
            accs.append(100.0 * acc)
        accs = np.array(accs)
        rows[method] = (np.nanmean(accs, axis=0), np.nanmin(accs, axis=0), np.nanmax(accs, axis=0))
        seeds_of[method] = [r.seed for r in records]
        t1[method] = mean_std(np.nanmean(a) for a in accs)   # accs in % already
    return {"names": names, "rows": rows, "seeds_of": seeds_of, "t1": t1}


def cost_points(by_method: dict[str, list[RunRecord]]) -> dict:
    """H (%) against wall time and against learned parameters, mean ± std over seeds per method, read
    from the records (`model.parameters` was counted at train time) and wall time from their provenance.json
    (absent in a run folder restored from DVC's cache: such a method is left off the time panel, and named)."""
    points = {"time": [], "params": []}
    devices, ns, fixed_notes, untimed = set(), set(), {}, []
    for method, records in by_method.items():
        h = mean_std(r.metrics(POLICY)["H"] for r in records)
        ns.add(h[2])
        devices.update(str(r["environment"].get("device")) for r in records)
        wall = mean_std(r.wall_s for r in records)
        if wall[2]:
            points["time"].append((method, wall, h))
        else:
            untimed.append(method)
        counts = [r["model"]["parameters"] for r in records]
        fixed = sorted({k.split(".")[-1] for c in counts for k in c["fixed"]})
        if fixed:
            fixed_notes[method] = fixed
        points["params"].append((method, mean_std(c["learned"] for c in counts), h))
    return {"points": points, "devices": devices, "ns": ns, "fixed_notes": fixed_notes, "untimed": untimed}


def attention_data(record: RunRecord) -> dict | None:
    """What an attention figure shows, from views.npz (saved at train time from the val-selected model):
    maps by name ([n, H, W] each), the images (grey when the dataset has none), true and predicted
    classes and their names. None when the run has no views."""
    views = record.views()
    if views is None:
        return None
    pred = record.predictions()
    size = int(views["image_size"])
    images = views.get("images")
    if images is None:
        images = np.full((len(views["rows"]), size, size, 3), 128, dtype=np.uint8)
    return {"maps": dict(zip((str(n) for n in views["map_names"]), views["maps"])), "images": images,
            "rows": views["rows"], "classes": views["classes"], "predicted": views["predicted"],
            "image_size": size, "crop": str(views["crop"]), "size_assumed": bool(views["size_assumed"]),
            "top_attributes": int(views["top_attributes"]),
            "class_names": {int(i): str(n) for i, n in zip(pred.class_ids, pred.class_names)}}
