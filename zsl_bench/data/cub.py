"""CUB-200-2011 (Caltech) with the xlsa17 proposed split.

Real CUB and the embedded synthetic set both come through `prepare` (protocol.md §1.3, §1.6, §1.8):
- `att_splits.mat` locs index `res101.mat` rows, which follow the directory listing, not `images.txt`;
- labels follow `allclasses.txt` (seen classes, then unseen), not `classes.txt`;
- `original_att` equals `class_attribute_labels_continuous.txt` permuted into allclasses order;
- `attributes.txt` sits at the archive root in the real tgz, inside `attributes/` in some copies.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zsl_bench.data.download import FetchOptions, RemoteFile, extract
from zsl_bench.data.xlsa17 import (XLSA17_ARCHIVE, SplitSizes, build_dataset, last_two_components, prepare_from_release,
                                   read_att_splits, xlsa17_folder)
from zsl_bench.io import DataError

# protocol.md §1.4 and §1.7, checked against the real files.
SIZES = SplitSizes(n_images=11788, n_classes=200, n_attributes=312, trainval=7057, test_seen=1764, test_unseen=2967)
ARCHIVE = RemoteFile(
    "CUB_200_2011.tgz",
    urls=("https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",
          "http://www.vision.caltech.edu/visipedia-data/CUB-200-2011/CUB_200_2011.tgz"),
    size=1150585339, md5="97eceeb196236b17998738112f37df78",
    description="CUB-200-2011 images, attributes and parts (Caltech)",
)
XLSA17_NAME = "CUB"
# params.yaml `sources.CUB` keys and their types (zsl_bench.params checks them before any work).
PARAMS = {"images": bool, "attribute_embeddings": ("list", str), "mirror": (str, type(None)),
          "from": ("list", str)}
NAME = "CUB"


def required_archives(params: dict) -> list[RemoteFile]:
    return [ARCHIVE, XLSA17_ARCHIVE] if params.get("images", True) else [XLSA17_ARCHIVE]


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


def read_attribute_names(root: Path) -> list[str]:
    attr_file = next((p for p in (root.parent / "attributes.txt", root / "attributes" / "attributes.txt",
                                  root / "attributes.txt") if p.is_file()), None)
    if attr_file is None:
        raise DataError(f"{root}: attributes.txt found neither beside CUB_200_2011/ nor in attributes/")
    return [name for _, name in _read_table(attr_file, 2)]


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
    attribute_names = read_attribute_names(root)
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


def prepare(raw: Path, xlsa17_dir: Path, out: Path, name: str, expected: SplitSizes | None = None,
            extra: dict | None = None) -> Path:
    """CUB's own files + the xlsa17 split → the normalised folder, with CUB's class-matrix check."""
    layout = read_cub_layout(raw)
    missing = [f for f in layout.image_files if not (layout.root / "images" / f).is_file()]
    if missing:
        raise DataError(f"{layout.root / 'images'}: {len(missing)} of the {len(layout.image_files)} images of "
                        f"images.txt are missing (first: {missing[0]}); is the archive fully extracted?")
    att = read_att_splits(Path(xlsa17_dir) / "att_splits.mat")
    missing = sorted(set(att.class_names) - set(layout.class_names))
    if missing:
        raise DataError(f"{Path(xlsa17_dir) / 'att_splits.mat'}: classes {missing[:3]} are not in "
                        f"{layout.root / 'classes.txt'} (an older CUB release with other class names?)")
    permuted = layout.class_attributes[[layout.class_names.index(n) for n in att.class_names]]
    if permuted.shape == att.original_att.shape and not np.allclose(permuted, att.original_att, atol=1e-6):
        raise DataError(f"{Path(xlsa17_dir) / 'att_splits.mat'}: original_att differs from "
                        "class_attribute_labels_continuous.txt in allclasses order (class order mix-up?)")
    return build_dataset(
        name=name, source=f"CUB layout ({layout.root.name}/)", xlsa17_dir=xlsa17_dir, out=out,
        image_root=layout.root / "images", image_files=layout.image_files,
        image_classes=[f.split("/", 1)[0] for f in layout.image_files], attribute_names=layout.attribute_names,
        expected=expected, checks=["every image of images.txt is on disk",
                                   "original_att equals class_attribute_labels_continuous.txt permuted to allclasses"],
        extra=extra, res101_strip=last_two_components,
    )


def prepare_source(raw: Path, out: Path, params: dict, progress: bool = True, downloads: Path | None = None) -> Path:
    """Stage `prepare` for real CUB: download, verify, extract, load.

    params: `images` (default true; false = only the xlsa17 release, for methods on its res101
    features; attribute names are then unknown), `mirror`, `from` (archives you already have).
    """
    opts = FetchOptions.from_params(params, progress)
    downloads = Path(downloads or Path(raw).parent / "downloads")
    raw = Path(raw)
    release = opts.fetch(XLSA17_ARCHIVE, downloads)
    if params.get("images", True):
        extract(opts.fetch(ARCHIVE, downloads), raw, progress=progress)
        extract(release, xlsa17_folder(raw, XLSA17_NAME), select=f"xlsa17/data/{XLSA17_NAME}/", progress=progress)
        return prepare(raw, xlsa17_folder(raw, XLSA17_NAME), out, "CUB", expected=SIZES)
    extract(release, xlsa17_folder(raw, XLSA17_NAME), select=f"xlsa17/data/{XLSA17_NAME}/", progress=progress)
    return prepare_from_release(raw, out, "CUB", XLSA17_NAME, SIZES, last_two_components,
                                image_root=raw / "CUB_200_2011" / "images", attribute_names=None)
