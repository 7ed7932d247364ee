"""CUB-200-2011's on-disk layout, joined with an xlsa17 split, into a normalised dataset folder.

Real CUB and the embedded synthetic set both come through here (protocol.md §1.3, §1.6, §1.8):
- `att_splits.mat` locs index `res101.mat` rows, which follow the directory listing (class folder,
  then file name, both sorted), not `images.txt`;
- labels follow `allclasses.txt` (seen classes, then unseen), not `classes.txt`;
- `original_att` equals `class_attribute_labels_continuous.txt` permuted into allclasses order;
- `attributes.txt` sits at the archive root in the real tgz, inside `attributes/` in some copies.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zsl_bench.data.dataset import write_dataset
from zsl_bench.data.xlsa17 import ClassLists, read_att_splits
from zsl_bench.io import DataError
from zsl_bench.protocol import SPLIT_SEED, VAL_SEEN_FRACTION, build_validation_fold


@dataclass(frozen=True)
class SplitSizes:
    n_images: int
    n_classes: int
    n_attributes: int
    trainval: int
    test_seen: int
    test_unseen: int


# protocol.md §1.4, checked against the real files.
CUB_SIZES = SplitSizes(n_images=11788, n_classes=200, n_attributes=312, trainval=7057, test_seen=1764,
                       test_unseen=2967)


@dataclass(frozen=True)
class CUBLayout:
    root: Path                      # the CUB_200_2011 folder
    image_files: list[str]          # images.txt order, relative to images/
    image_class_ids: np.ndarray     # 1-based classes.txt ids, images.txt order
    class_names: list[str]          # classes.txt order
    attribute_names: list[str]
    class_attributes: np.ndarray    # classes.txt order × attributes, 0–100


def _read_table(path: Path, n_fields: int) -> list[list[str]]:
    if not path.is_file():
        raise DataError(f"{path}: not found (is this a CUB_200_2011 folder?)")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=n_fields - 1)
        if len(fields) != n_fields:
            raise DataError(f"{path}, line {i}: expected {n_fields} fields, got {line!r}")
        rows.append(fields)
    return rows


def find_cub_root(raw: Path) -> Path:
    raw = Path(raw)
    for candidate in (raw / "CUB_200_2011", raw):
        if (candidate / "images.txt").is_file():
            return candidate
    raise DataError(f"{raw}: no CUB_200_2011/images.txt below this folder")


def read_cub_layout(raw: Path) -> CUBLayout:
    root = find_cub_root(raw)
    images = _read_table(root / "images.txt", 2)
    labels = _read_table(root / "image_class_labels.txt", 2)
    classes = _read_table(root / "classes.txt", 2)
    if [r[0] for r in images] != [r[0] for r in labels]:
        raise DataError(f"{root / 'image_class_labels.txt'}: image ids differ from images.txt")
    class_names = [name for _, name in classes]
    if [int(i) for i, _ in classes] != list(range(1, len(classes) + 1)):
        raise DataError(f"{root / 'classes.txt'}: class ids are not 1..{len(classes)}")
    class_ids = np.array([int(c) for _, c in labels])
    files = [rel for _, rel in images]
    for rel, c in zip(files, class_ids):
        if rel.split("/", 1)[0] != class_names[c - 1]:
            raise DataError(f"{root / 'images.txt'}: {rel} is labelled {class_names[c - 1]} in image_class_labels.txt")
    attr_file = next((p for p in (root.parent / "attributes.txt", root / "attributes" / "attributes.txt",
                                  root / "attributes.txt") if p.is_file()), None)
    if attr_file is None:
        raise DataError(f"{root}: attributes.txt found neither beside CUB_200_2011/ nor in attributes/")
    attribute_names = [name for _, name in _read_table(attr_file, 2)]
    cont_file = root / "attributes" / "class_attribute_labels_continuous.txt"
    try:
        class_attributes = np.loadtxt(cont_file, ndmin=2)
    except (OSError, ValueError) as e:
        raise DataError(f"{cont_file}: cannot read a numeric matrix ({e})") from None
    if class_attributes.shape != (len(class_names), len(attribute_names)):
        raise DataError(f"{cont_file}: shape {class_attributes.shape}, expected "
                        f"{len(class_names)} classes × {len(attribute_names)} attributes")
    return CUBLayout(root=root, image_files=files, image_class_ids=class_ids, class_names=class_names,
                     attribute_names=attribute_names, class_attributes=class_attributes)


def directory_listing_order(image_files: list[str]) -> list[int]:
    """Indices of `image_files` in res101.mat row order: class folder, then file name, sorted."""
    return sorted(range(len(image_files)), key=lambda i: tuple(image_files[i].split("/", 1)))


def prepare(raw: Path, xlsa17_dir: Path, out: Path, name: str, expected: SplitSizes | None = None,
            extra: dict | None = None) -> Path:
    """Check everything protocol.md §1.8 asks and write the normalised folder `out`."""
    layout = read_cub_layout(raw)
    lists = ClassLists.read(xlsa17_dir)
    splits_file = Path(xlsa17_dir) / "att_splits.mat"
    att = read_att_splits(splits_file)
    checks = ["class lists partition allclasses", "att columns have unit L2 norm", "locs are 1-based"]

    if att.class_names != lists.allclasses:
        raise DataError(f"{splits_file}: allclasses_names differ from {Path(xlsa17_dir) / 'allclasses.txt'}")
    unknown = sorted(set(lists.allclasses) - set(layout.class_names))
    if unknown:
        raise DataError(f"{Path(xlsa17_dir) / 'allclasses.txt'}: classes {unknown[:3]} are not in "
                        f"{layout.root / 'classes.txt'} (an older CUB release with other class names?)")
    class_index = {n: i for i, n in enumerate(lists.allclasses)}
    order = directory_listing_order(layout.image_files)
    image_files = [layout.image_files[i] for i in order]
    labels = np.array([class_index[f.split("/", 1)[0]] for f in image_files], dtype=np.int64)
    checks.append("rows in directory-listing order, labels in allclasses order")

    permuted = layout.class_attributes[[layout.class_names.index(n) for n in lists.allclasses]]
    if att.original_att.shape[1] != len(layout.attribute_names):
        raise DataError(f"{splits_file}: {att.original_att.shape[1]} attributes, attributes.txt names "
                        f"{len(layout.attribute_names)}")
    if not np.allclose(permuted, att.original_att, atol=1e-6):
        raise DataError(f"{splits_file}: original_att differs from class_attribute_labels_continuous.txt in "
                        "allclasses order (class order mix-up?)")
    checks.append("original_att equals class_attribute_labels_continuous.txt permuted to allclasses")

    n = len(image_files)
    locs = {"trainval": att.trainval_loc, "test_seen": att.test_seen_loc, "test_unseen": att.test_unseen_loc}
    _check_locs(splits_file, locs, labels, n, lists, class_index)
    checks.append("locs disjoint, cover every image, seen/unseen labels as the class lists say")
    if expected is not None:
        _check_sizes(splits_file, expected, n, len(lists.allclasses), len(layout.attribute_names), locs)
        checks.append(f"sizes match protocol.md §1.4 ({name})")

    seen = np.array(sorted(class_index[c] for c in lists.trainval))
    unseen = np.array(sorted(class_index[c] for c in lists.test))
    splits = {k: np.sort(v) for k, v in locs.items()}
    folds = {}
    for k, (train_names, val_names) in lists.folds.items():
        train_c = np.array(sorted(class_index[c] for c in train_names))
        val_c = np.array(sorted(class_index[c] for c in val_names))
        for part, rows in build_validation_fold(labels, splits["trainval"], train_c, val_c, k).items():
            splits[f"fold{k}_{part}"] = rows
        folds[k] = {"train_classes": train_c.tolist(), "val_classes": val_c.tolist()}
    checks.append("validation folds from trainclassesK/valclassesK inside trainval")
    return write_dataset(
        out, name=name, source=f"CUB layout at {layout.root.name}/ + xlsa17 {att.version} split",
        class_names=lists.allclasses, attribute_names=layout.attribute_names, image_root=layout.root / "images",
        image_files=image_files, labels=labels, original_att=att.original_att, seen_classes=seen,
        unseen_classes=unseen, splits=splits, folds=folds, checks=checks,
        extra={"att_splits_version": att.version, "val_seen_fraction": VAL_SEEN_FRACTION, "split_seed": SPLIT_SEED,
               **(extra or {})},
    )


def _check_locs(path: Path, locs: dict[str, np.ndarray], labels: np.ndarray, n: int, lists: ClassLists,
                class_index: dict[str, int]) -> None:
    for key, loc in locs.items():
        if loc.size and loc.max() >= n:
            raise DataError(f"{path}: {key}_loc points at row {loc.max() + 1}, only {n} images on disk")
    all_rows = np.concatenate(list(locs.values()))
    if len(np.unique(all_rows)) != len(all_rows):
        raise DataError(f"{path}: trainval/test_seen/test_unseen locs overlap")
    if len(all_rows) != n:
        raise DataError(f"{path}: locs cover {len(all_rows)} of {n} images")
    seen = {class_index[c] for c in lists.trainval}
    unseen = {class_index[c] for c in lists.test}
    for key, expected in (("trainval", seen), ("test_seen", seen), ("test_unseen", unseen)):
        got = set(labels[locs[key]].tolist())
        if got != expected:
            raise DataError(f"{path}: {key}_loc images carry {len(got)} classes, the class lists say {len(expected)}"
                            f" ({'unseen' if key == 'test_unseen' else 'seen'})")


def _check_sizes(path: Path, expected: SplitSizes, n: int, n_classes: int, n_attributes: int,
                 locs: dict[str, np.ndarray]) -> None:
    got = SplitSizes(n_images=n, n_classes=n_classes, n_attributes=n_attributes,
                     **{k: len(v) for k, v in locs.items()})
    if got != expected:
        raise DataError(f"{path}: sizes {got} differ from the published {expected}")
