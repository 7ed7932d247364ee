"""SUN Attribute database (Brown) with the xlsa17 proposed split.

- `SUNAttributeDB.tar.gz` (0.5 MB): `images.mat` (14,340 relative paths `a/abbey/sun_….jpg`),
  `attributes.mat` (102 names), `attributeLabels_continuous.mat` (`labels_cv`, per-image votes);
- `SUNAttributeDB_Images.tar.gz` (about 1.8 GB): `images/<letter>/<scene>[/<sub>]/*.jpg`;
- a class is the scene path below the letter with `/` replaced by `_` (`apartment_building_outdoor`),
  as in xlsa17's `allclasses_names`; res101 rows follow the sorted relative paths (checked).
- xlsa17's class vectors look like the mean of `labels_cv` over each class's 20 images
  (protocol.md §1.6, inferred, not proven): the loader measures that and records the result.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from zsl_bench.data.download import FetchOptions, RemoteFile, extract
from zsl_bench.data.xlsa17 import (XLSA17_ARCHIVE, SplitSizes, cell_strings, after_images_folder, build_dataset,
                                   prepare_from_release, read_att_splits, xlsa17_folder)
from zsl_bench.io import DataError

SIZES = SplitSizes(n_images=14340, n_classes=717, n_attributes=102, trainval=10320, test_seen=2580, test_unseen=1440)
_HOSTS = ("https://cs.brown.edu/people/gmpatter/Attributes", "http://cs.brown.edu/~gmpatter/Attributes")
META_ARCHIVE = RemoteFile("SUNAttributeDB.tar.gz", urls=tuple(f"{h}/SUNAttributeDB.tar.gz" for h in _HOSTS),
                          description="SUN Attribute metadata: image list, attribute names, per-image votes")
IMAGES_ARCHIVE = RemoteFile("SUNAttributeDB_Images.tar.gz",
                            urls=tuple(f"{h}/SUNAttributeDB_Images.tar.gz" for h in _HOSTS),
                            description="SUN Attribute images (about 1.8 GB)")
XLSA17_NAME = "SUN"
# params.yaml `sources.SUN` keys and their types (zsl_bench.params checks them before any work).
PARAMS = {"images": bool, "attribute_embeddings": ("list", str), "mirror": (str, type(None)),
          "from": ("list", str)}
META = "SUNAttributeDB"
NAME = "SUN"


def required_archives(params: dict) -> list[RemoteFile]:
    return [META_ARCHIVE, IMAGES_ARCHIVE, XLSA17_ARCHIVE] if params.get("images", True) else \
        [META_ARCHIVE, XLSA17_ARCHIVE]


def class_of(relative_path: str) -> str:
    """`a/apartment_building/outdoor/sun_x.jpg` → `apartment_building_outdoor`."""
    parts = relative_path.split("/")
    if len(parts) < 3:
        raise DataError(f"SUN image path {relative_path!r} has no <letter>/<scene>/ folders")
    return "_".join(parts[1:-1])


def _loadmat(path: Path, key: str):
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: not found") from None
    except Exception as e:
        raise DataError(f"{path}: not a readable MATLAB file ({e})") from None
    if key not in mat:
        raise DataError(f"{path}: no '{key}' (has {sorted(k for k in mat if not k.startswith('__'))})")
    return mat[key]


def read_metadata(meta_root: Path) -> tuple[list[str], list[str], np.ndarray | None]:
    """(image paths of images.mat, attribute names, per-image continuous labels or None)."""
    images = [p.replace("\\", "/") for p in cell_strings(_loadmat(meta_root / "images.mat", "images"))]
    names = cell_strings(_loadmat(meta_root / "attributes.mat", "attributes"))
    labels_file = meta_root / "attributeLabels_continuous.mat"
    labels = np.asarray(_loadmat(labels_file, "labels_cv"), dtype=np.float64) if labels_file.is_file() else None
    if labels is not None and labels.shape != (len(images), len(names)):
        raise DataError(f"{labels_file}: labels_cv is {labels.shape}, expected {len(images)} × {len(names)}")
    return images, names, labels


def class_means_agree(images: list[str], labels: np.ndarray, class_names: list[str], original_att: np.ndarray) -> str:
    """Measure the inferred rule 'xlsa17 class vector = mean of labels_cv over the class's images'."""
    by_class = {c: [] for c in class_names}
    for path, row in zip(images, labels):
        by_class.setdefault(class_of(path), []).append(row)
    means = np.stack([np.mean(by_class[c], axis=0) for c in class_names])
    gap = float(np.abs(means - original_att).max())
    return f"class vectors vs mean of labels_cv over each class: max |difference| {gap:.2e}"


def find_metadata(raw: Path) -> Path:
    """The folder holding images.mat (the archive's top folder name is not relied upon)."""
    found = next(Path(raw).rglob("images.mat"), None)
    if found is None:
        raise DataError(f"{raw}: no images.mat below this folder (is SUNAttributeDB.tar.gz extracted?)")
    return found.parent


def prepare(raw: Path, xlsa17_dir: Path, out: Path, name: str = "SUN", expected: SplitSizes | None = None) -> Path:
    raw = Path(raw)
    images, attribute_names, labels_cv = read_metadata(find_metadata(raw / META))
    image_root = raw / "images"
    on_disk = {p.relative_to(image_root).as_posix() for p in image_root.rglob("*.jpg")} if image_root.is_dir() else set()
    missing = [p for p in images if p not in on_disk]
    if missing:
        raise DataError(f"{image_root}: {len(missing)} of the {len(images)} images in images.mat are missing "
                        f"(first: {missing[0]}); is SUNAttributeDB_Images.tar.gz fully extracted?")
    att = read_att_splits(Path(xlsa17_dir) / "att_splits.mat")
    notes = [class_means_agree(images, labels_cv, att.class_names, att.original_att)] if labels_cv is not None else []
    return build_dataset(
        name=name, source="SUN Attribute DB (images.mat, images/)", xlsa17_dir=xlsa17_dir, out=out,
        image_root=image_root, image_files=images, image_classes=[class_of(p) for p in images],
        attribute_names=attribute_names, expected=expected, checks=["every image of images.mat is on disk"],
        extra={"notes": notes}, res101_strip=after_images_folder,
    )


def prepare_source(raw: Path, out: Path, params: dict, progress: bool = True, downloads: Path | None = None) -> Path:
    """params: `images` (default true; false = xlsa17 release + the 0.5 MB metadata only), `mirror`, `from`."""
    opts = FetchOptions.from_params(params, progress)
    downloads = Path(downloads or Path(raw).parent / "downloads")
    raw = Path(raw)
    release = opts.fetch(XLSA17_ARCHIVE, downloads)
    meta = opts.fetch(META_ARCHIVE, downloads)
    if params.get("images", True):
        extract(opts.fetch(IMAGES_ARCHIVE, downloads), raw, progress=progress)
    else:
        raw.mkdir(parents=True, exist_ok=True)
    extract(meta, raw / META, progress=progress)
    extract(release, xlsa17_folder(raw, XLSA17_NAME), select=f"xlsa17/data/{XLSA17_NAME}/", progress=progress)
    if params.get("images", True):
        return prepare(raw, xlsa17_folder(raw, XLSA17_NAME), out, expected=SIZES)
    _, names, _ = read_metadata(find_metadata(raw / META))
    return prepare_from_release(raw, out, "SUN", XLSA17_NAME, SIZES, after_images_folder, image_root=raw / "images",
                                attribute_names=names)
