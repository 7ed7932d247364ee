"""Animals with Attributes 2 (IST Austria) with the xlsa17 proposed split.

Facts enforced (protocol.md §1.3, §1.6):
- the PS class lists come from xlsa17; AwA2's own trainclasses/testclasses are the old split and unused;
- xlsa17's `original_att` is AwA2's continuous predicate matrix except four cells (antelope × black,
  white, blue, brown) that hold −1, a missing-value marker, where `predicate-matrix-continuous.txt`
  holds 0. The loader finds those cells, refuses any other difference, and applies the policy in
  params (`missing_values: keep` = −1 as in xlsa17 and every published number; `zero` = 0 as in
  AwA2's own file and TransZero's loader). The dataset records the cells and the policy.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from zsl_bench.data.download import FetchOptions, RemoteFile, extract
from zsl_bench.data.xlsa17 import (XLSA17_ARCHIVE, SplitSizes, build_dataset, last_two_components, prepare_from_release,
                                   read_att_splits, xlsa17_folder)
from zsl_bench.io import DataError

SIZES = SplitSizes(n_images=37322, n_classes=50, n_attributes=85, trainval=23527, test_seen=5882, test_unseen=7913)
_HOSTS = ("https://cvml.ist.ac.at/AwA2", "http://cvml.ist.ac.at/AwA2", "https://cvml.ista.ac.at/AwA2")
ARCHIVE = RemoteFile("AwA2-data.zip", urls=tuple(f"{h}/AwA2-data.zip" for h in _HOSTS),
                     description="AwA2 images and class metadata (about 13 GB); no published checksum")
BASE_ARCHIVE = RemoteFile("AwA2-base.zip", urls=tuple(f"{h}/AwA2-base.zip" for h in _HOSTS),
                          description="AwA2 class metadata only (attribute names, matrices)")
XLSA17_NAME = "AWA2"
# params.yaml `sources.AWA2` keys and their types (zsl_bench.params checks them before any work).
PARAMS = {"images": bool, "attribute_embeddings": ("list", str), "mirror": (str, type(None)),
          "from": ("list", str), "missing_values": str}
ROOT = "Animals_with_Attributes2"
MISSING_VALUE_POLICIES = ("keep", "zero")
NAME = "AWA2"


def required_archives(params: dict) -> list[RemoteFile]:
    return [ARCHIVE if params.get("images", True) else BASE_ARCHIVE, XLSA17_ARCHIVE]


def _read_named_list(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: not found (is this an Animals_with_Attributes2 folder?)")
    names = []
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            fields = line.split()
            if len(fields) != 2:
                raise DataError(f"{path}, line {i}: expected '<id> <name>', got {line!r}")
            names.append(fields[1])
    return names


def list_images(root: Path) -> list[str]:
    images = Path(root) / "JPEGImages"
    if not images.is_dir():
        raise DataError(f"{root}: no JPEGImages/ folder")
    return [p.relative_to(images).as_posix() for p in images.glob("*/*.jpg")]


def missing_value_cells(original_att: np.ndarray, own_matrix: np.ndarray, class_names: list[str],
                        attribute_names: list[str], source: Path) -> list[dict]:
    """The cells where xlsa17 marks a missing value (−1) and AwA2's matrix has 0; any other difference
    is an error."""
    if own_matrix.shape != original_att.shape:
        raise DataError(f"{source}: shape {own_matrix.shape}, xlsa17 original_att is {original_att.shape}")
    differ = ~np.isclose(own_matrix, original_att, atol=1e-6)
    marked = (original_att == -1) & (own_matrix == 0)
    if (differ & ~marked).any():
        c, a = np.argwhere(differ & ~marked)[0]
        raise DataError(f"{source}: {class_names[c]} × {attribute_names[a]} is {own_matrix[c, a]} here, "
                        f"{original_att[c, a]} in xlsa17's original_att (class order mix-up?)")
    return [{"class": class_names[c], "attribute": attribute_names[a]} for c, a in np.argwhere(marked)]


def apply_policy(original_att: np.ndarray, policy: str) -> np.ndarray:
    if policy not in MISSING_VALUE_POLICIES:
        raise DataError(f"missing_values must be one of {MISSING_VALUE_POLICIES}, not {policy!r}")
    return np.where(original_att == -1, 0.0, original_att) if policy == "zero" else original_att


def prepare(raw: Path, xlsa17_dir: Path, out: Path, name: str = "AWA2", expected: SplitSizes | None = None,
            missing_values: str = "keep") -> Path:
    root = Path(raw) / ROOT
    attribute_names = _read_named_list(root / "predicates.txt")
    own_classes = _read_named_list(root / "classes.txt")
    att = read_att_splits(Path(xlsa17_dir) / "att_splits.mat")
    if sorted(own_classes) != sorted(att.class_names):
        raise DataError(f"{root / 'classes.txt'}: classes differ from xlsa17's allclasses_names")
    matrix_file = root / "predicate-matrix-continuous.txt"
    try:
        own = np.loadtxt(matrix_file, ndmin=2)
    except (OSError, ValueError) as e:
        raise DataError(f"{matrix_file}: cannot read a numeric matrix ({e})") from None
    own = own[[own_classes.index(c) for c in att.class_names]]
    cells = missing_value_cells(att.original_att, own, att.class_names, attribute_names, matrix_file)
    files = list_images(root)
    return build_dataset(
        name=name, source=f"AwA2 layout ({ROOT}/)", xlsa17_dir=xlsa17_dir, out=out, image_root=root / "JPEGImages",
        image_files=files, image_classes=[f.split("/", 1)[0] for f in files], attribute_names=attribute_names,
        expected=expected, original_att=apply_policy(att.original_att, missing_values),
        checks=[f"original_att equals predicate-matrix-continuous.txt except {len(cells)} missing-value cells"],
        extra={"missing_values": {"cells": cells, "policy": missing_values,
                                  "meaning": "xlsa17 marks these -1 (missing); AwA2's matrix has 0"}},
        res101_strip=last_two_components,
    )


def prepare_source(raw: Path, out: Path, params: dict, progress: bool = True, downloads: Path | None = None) -> Path:
    """params: `images` (default true; false = xlsa17 release + AwA2-base metadata only),
    `missing_values` (keep | zero), `mirror`, `from`."""
    opts = FetchOptions.from_params(params, progress)
    downloads = Path(downloads or Path(raw).parent / "downloads")
    raw = Path(raw)
    policy = params.get("missing_values", "keep")
    release = opts.fetch(XLSA17_ARCHIVE, downloads)
    if params.get("images", True):
        extract(opts.fetch(ARCHIVE, downloads), raw, progress=progress)
        extract(release, xlsa17_folder(raw, XLSA17_NAME), select=f"xlsa17/data/{XLSA17_NAME}/", progress=progress)
        return prepare(raw, xlsa17_folder(raw, XLSA17_NAME), out, expected=SIZES, missing_values=policy)
    extract(opts.fetch(BASE_ARCHIVE, downloads), raw, progress=progress)
    extract(release, xlsa17_folder(raw, XLSA17_NAME), select=f"xlsa17/data/{XLSA17_NAME}/", progress=progress)
    predicates = next(Path(raw).rglob("predicates.txt"), None)
    if predicates is None:
        raise DataError(f"{raw}: AwA2-base.zip held no predicates.txt")
    att = read_att_splits(xlsa17_folder(raw, XLSA17_NAME) / "att_splits.mat")
    return prepare_from_release(raw, out, "AWA2", XLSA17_NAME, SIZES, last_two_components,
                                image_root=raw / ROOT / "JPEGImages", attribute_names=_read_named_list(predicates),
                                original_att=apply_policy(att.original_att, policy),
                                extra={"missing_values": {"policy": policy}})

