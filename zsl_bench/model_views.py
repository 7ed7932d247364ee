"""What reports need from a fitted model, taken at train time from the val-selected model and kept in
its run folder, so that reports read run folders only and never rebuild a model:

- `record["model"]["parameters"]`: learned values and fixed state entries (a method that declares the
  `parameter_count` capability says which are trained; for others every fitted value counts);
- `views.npz`, for methods that declare `attention_maps`: the method's attention maps of a fixed choice
  of unseen-class test images, with those images as the features saw them (see `VIEW_KEYS`).
"""
from __future__ import annotations

import numpy as np

from zsl_bench.io import DataError
from zsl_bench.method import ATTENTION_MAPS, PARAMETER_COUNT, Method

N_ATTENTION_IMAGES = 4
TOP_ATTRIBUTES = 10              # attention summary: the image's class's most present attributes
VIEW_KEYS = {   # key of views.npz → what it holds
    "rows": "[n] dataset rows (images.csv) of the chosen test images",
    "classes": "[n] their dataset class ids",
    "predicted": "[n] ZSL prediction (dataset class id) of the val-selected model",
    "images": "[n, S, S, 3] uint8, each image as the feature extractor saw it (absent without images)",
    "weights": "[n, A] attribute weights of the summary (top attributes of the true class, sum 1)",
    "map_names": "[M] names of the maps (one per branch or attention module)",
    "maps": "[M, n, H, W] attention over the feature grid, attributes averaged with `weights`",
    "image_size": "S", "crop": "'none' (whole image resized) or 'center' (short side + centre crop)",
    "size_assumed": "True when the feature store did not record its input size (448 assumed)",
    "top_attributes": "how many of the true class's attributes the summary averages",
}


def state_size(state: dict) -> int:
    return int(sum(int(np.prod(tuple(v.shape), dtype=np.int64)) for v in state.values()))


def parameters(method: Method) -> dict:
    """{"learned", "fixed", "state_values"} of a fitted method."""
    total = state_size(method.state_dict())
    if PARAMETER_COUNT in method.capabilities:
        counted = method.parameter_count()
        return {"learned": int(counted["learned"]), "fixed": list(counted["fixed"]), "state_values": total}
    return {"learned": total, "fixed": [], "state_values": total}   # numpy methods store only what they fit


def attention_images(labels: np.ndarray, unseen_sample_mask: np.ndarray, image_rows: np.ndarray,
                     n: int = N_ATTENTION_IMAGES) -> np.ndarray:
    """Positions (into the test arrays) of the first test image, in dataset row order, of each of the
    first `n` unseen classes met in that order: a fixed choice, the same for every method and seed."""
    unseen = np.flatnonzero(np.asarray(unseen_sample_mask, dtype=bool))
    chosen, classes = [], set()
    for pos in unseen[np.argsort(np.asarray(image_rows)[unseen], kind="stable")]:
        c = int(labels[pos])
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


def attention_views(method: Method, evaluator, test: dict, scores: np.ndarray) -> dict | None:
    """views.npz's arrays for the val-selected `method` (None if it has no attention maps). `test` holds
    the test arrays of predictions.npz (labels, class_ids, seen_class_mask, unseen_sample_mask,
    image_rows) and `scores` the model's test scores."""
    if ATTENTION_MAPS not in method.capabilities:
        return None
    positions = attention_images(test["labels"], test["unseen_sample_mask"], test["image_rows"])
    rows = np.asarray(test["image_rows"])[positions]
    classes = np.asarray(test["class_ids"])[np.asarray(test["labels"])[positions]]
    weights = class_attribute_weights(evaluator.semantics(classes).att)
    maps = method.attention_maps(evaluator.inputs(rows), weights)
    unseen_cols = np.flatnonzero(~np.asarray(test["seen_class_mask"], dtype=bool))
    picked = np.asarray(scores, dtype=np.float64)[positions][:, unseen_cols]
    store = evaluator.store
    size = store.index.get("input_size")
    crop = "center" if size is None or str(store.index.get("resize", "")).startswith("short side") else "none"
    views = {"rows": rows, "classes": classes, "predicted": np.asarray(test["class_ids"])[unseen_cols[picked.argmax(1)]],
            "weights": weights,
            "map_names": np.array(list(maps)), "maps": np.stack([np.asarray(m, dtype=np.float32) for m in maps.values()]),
            "image_size": np.int64(size or 448), "crop": np.array(crop), "size_assumed": np.bool_(size is None),
            "top_attributes": np.int64(TOP_ATTRIBUTES)}
    try:   # datasets prepared without images (features from a file) have maps but no pictures
        views["images"] = _images(evaluator.dataset, rows, int(size or 448), crop)
    except (OSError, DataError):
        pass
    return views


def _images(dataset, rows, size: int, crop: str) -> np.ndarray:
    from zsl_bench.images import load_rgb, load_rgb_center_crop

    load = load_rgb_center_crop if crop == "center" else load_rgb
    return np.stack([load(dataset.image_path(int(r)), size) for r in rows]).astype(np.uint8)
