"""Animals with Attributes 1 (Lampert et al.) with the xlsa17 proposed split: release-only.

AwA1's images are no longer distributed: the dataset is xlsa17's `xlsa17/data/AWA1/`, features its res101.mat
vectors. Facts (checked against att_splits.mat in two public copies — Hanzy1996/CE-GZSL@7bf5358 data/AWA1, the
v1 file of 2018-01-31, and cetinsamet/attribute-label-embedding@a45093b datasets/AWA1, a copy re-saved with
train_loc/val_loc cut to trainval — whose other keys are identical):
- 50 classes (40 seen + 10 unseen), 85 attributes, 30,475 rows: trainval 19,832, test_seen 4,958,
  test_unseen 5,685; class lists byte-identical to AWA2's;
- allclasses_names and `original_att` equal AWA2's exactly, its four −1 (missing-value) cells included, so
  AwA2's metadata archive (`AwA2-base.zip`, no images) names the attributes: the loader checks its matrix
  against `original_att` (as awa2.py does) and applies the same `missing_values` policy.
Not checked here (no res101.mat at hand): the stored image paths and the row order; the rows keep
res101.mat's order as it is (`keep_row_order`), whatever it is.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from zsl_bench.data import awa2
from zsl_bench.data.download import FetchOptions, extract
from zsl_bench.data.xlsa17 import (XLSA17_ARCHIVE, SplitSizes, last_two_components, prepare_from_release,
                                   read_att_splits, refuse_images, xlsa17_folder)
from zsl_bench.io import DataError

NAME = "AWA1"
XLSA17_NAME = "AWA1"
SIZES = SplitSizes(n_images=30475, n_classes=50, n_attributes=85, trainval=19832, test_seen=4958, test_unseen=5685)
# params.yaml `sources.AWA1` keys and their types (zsl_bench.params checks them before any work).
PARAMS = {"images": bool, "attribute_embeddings": ("list", str), "mirror": (str, type(None)),
          "from": ("list", str), "missing_values": str}
NO_IMAGES = "AwA1's images are no longer distributed"
BASE = "AwA2-base"   # where AwA2's metadata archive is extracted, beside xlsa17/


def required_archives(params: dict) -> list:
    return [XLSA17_ARCHIVE, awa2.BASE_ARCHIVE]


def attribute_names(meta: Path, original_att: np.ndarray, class_names: list[str]) -> tuple[list[str], list[dict]]:
    """AwA2's predicate names, after checking that AwA2's class list and continuous matrix are AWA1's
    (`original_att` up to the −1 cells); returns (names, the missing-value cells)."""
    files = {n: next(meta.rglob(n), None) for n in ("predicates.txt", "classes.txt", "predicate-matrix-continuous.txt")}
    missing = [n for n, p in files.items() if p is None]
    if missing:
        raise DataError(f"{meta}: {awa2.BASE_ARCHIVE.name} held no {', '.join(missing)}")
    names, own_classes = awa2._read_named_list(files["predicates.txt"]), awa2._read_named_list(files["classes.txt"])
    if sorted(own_classes) != sorted(class_names):
        raise DataError(f"{files['classes.txt']}: AwA2's classes differ from AWA1's allclasses_names")
    try:
        own = np.loadtxt(files["predicate-matrix-continuous.txt"], ndmin=2)
    except ValueError as e:
        raise DataError(f"{files['predicate-matrix-continuous.txt']}: cannot read a numeric matrix ({e})") from None
    own = own[[own_classes.index(c) for c in class_names]]
    cells = awa2.missing_value_cells(original_att, own, class_names, names, files["predicate-matrix-continuous.txt"])
    return names, cells


def prepare_source(raw: Path, out: Path, params: dict, progress: bool = True, downloads: Path | None = None) -> Path:
    """params: `images` (false; true is refused), `missing_values` (keep | zero, as AWA2's), `mirror`, `from`."""
    refuse_images(NAME, params, NO_IMAGES)
    opts = FetchOptions.from_params(params, progress)
    raw = Path(raw)
    downloads = Path(downloads or raw.parent / "downloads")
    extract(opts.fetch(XLSA17_ARCHIVE, downloads), xlsa17_folder(raw, XLSA17_NAME),
            select=f"xlsa17/data/{XLSA17_NAME}/", progress=progress)
    extract(opts.fetch(awa2.BASE_ARCHIVE, downloads), raw / BASE, progress=progress)
    att = read_att_splits(xlsa17_folder(raw, XLSA17_NAME) / "att_splits.mat")
    names, cells = attribute_names(raw / BASE, att.original_att, att.class_names)
    policy = params.get("missing_values", "keep")
    # `<class>/<file>` of the stored paths (as AWA2's); the root is nominal (nothing is read from it).
    return prepare_from_release(raw, out, NAME, XLSA17_NAME, SIZES, last_two_components, image_root=raw / "images",
                                attribute_names=names, original_att=awa2.apply_policy(att.original_att, policy),
                                keep_row_order=True,
                                extra={"missing_values": {"cells": cells, "policy": policy,
                                                          "meaning": "xlsa17 marks these -1 (missing); AwA2's "
                                                                     "matrix has 0"}})
