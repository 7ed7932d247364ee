"""The xlsa17 "Proposed Split" release: class lists and `att_splits.mat` (protocol.md §1.1–1.5).

Facts this module enforces:
- every index in the `.mat` files is 1-based; `labels` and the columns of `att` follow `allclasses`;
- `att` is `original_att` with unit-L2 class columns; both are attributes × classes;
- v2.0 has no `train_loc`/`val_loc`; the v1 fields overlap `test_seen_loc`, so they are never
  returned as they are (validation comes from `trainclassesK`/`valclassesK` inside trainval).
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zsl_bench.data.download import RemoteFile
from zsl_bench.io import DataError

N_VALIDATION_FOLDS = 3
CLASS_LIST_FILES = ("allclasses.txt", "trainvalclasses.txt", "testclasses.txt") + tuple(
    f"{kind}classes{k}.txt" for k in range(1, N_VALIDATION_FOLDS + 1) for kind in ("train", "val"))


def read_class_list(path: Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: class list not found")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(set(names)) != len(names):
        raise DataError(f"{path}: a class is listed twice")
    return names


def write_class_list(path: Path, names: list[str]) -> None:
    Path(path).write_text("".join(f"{n}\n" for n in names))


@dataclass(frozen=True)
class ClassLists:
    """The xlsa17 class lists of one dataset; validation folds are (train classes, val classes)."""
    allclasses: list[str]
    trainval: list[str]
    test: list[str]
    folds: dict[int, tuple[list[str], list[str]]]

    @classmethod
    def read(cls, folder: Path) -> "ClassLists":
        folder = Path(folder)
        lists = cls(
            allclasses=read_class_list(folder / "allclasses.txt"),
            trainval=read_class_list(folder / "trainvalclasses.txt"),
            test=read_class_list(folder / "testclasses.txt"),
            folds={k: (read_class_list(folder / f"trainclasses{k}.txt"), read_class_list(folder / f"valclasses{k}.txt"))
                   for k in range(1, N_VALIDATION_FOLDS + 1)},
        )
        lists.check(folder)
        return lists

    def check(self, folder: Path) -> None:
        all_set, seen, unseen = set(self.allclasses), set(self.trainval), set(self.test)
        if seen & unseen:
            raise DataError(f"{folder}: trainvalclasses.txt and testclasses.txt share {sorted(seen & unseen)[:3]}")
        if seen | unseen != all_set:
            raise DataError(f"{folder}: trainval + test classes do not make up allclasses.txt")
        for k, (train, val) in self.folds.items():
            if set(train) & set(val) or set(train) | set(val) != seen:
                raise DataError(f"{folder}: trainclasses{k}.txt and valclasses{k}.txt do not partition "
                                "the trainval classes")

    def write(self, folder: Path) -> None:
        folder = Path(folder)
        write_class_list(folder / "allclasses.txt", self.allclasses)
        write_class_list(folder / "trainvalclasses.txt", self.trainval)
        write_class_list(folder / "testclasses.txt", self.test)
        for k, (train, val) in self.folds.items():
            write_class_list(folder / f"trainclasses{k}.txt", train)
            write_class_list(folder / f"valclasses{k}.txt", val)


@dataclass(frozen=True)
class AttSplits:
    """`att_splits.mat`, converted: classes × attributes, 0-based row indices of res101."""
    class_names: list[str]          # allclasses order
    att: np.ndarray                 # C × A, unit L2 rows
    original_att: np.ndarray        # C × A, the dataset's own scale
    trainval_loc: np.ndarray        # 0-based
    test_seen_loc: np.ndarray
    test_unseen_loc: np.ndarray
    version: str                    # "2.0" or "1"
    # v1 only: train_loc / val_loc *intersected with trainval* (as given they overlap test_seen_loc)
    v1_locs_within_trainval: dict[str, np.ndarray] | None = None


def cell_strings(cell) -> list[str]:
    return [str(np.asarray(x).ravel()[0]) for x in np.asarray(cell).ravel()]


def read_att_splits(path: Path) -> AttSplits:
    from scipy.io import loadmat

    path = Path(path)
    try:
        mat = loadmat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: not found") from None
    except Exception as e:  # scipy raises several types for a corrupt file
        raise DataError(f"{path}: not a readable MATLAB file ({e})") from None
    required = ("att", "original_att", "allclasses_names", "trainval_loc", "test_seen_loc", "test_unseen_loc")
    missing = [k for k in required if k not in mat]
    if missing:
        raise DataError(f"{path}: missing keys {missing}")
    # v1 (2018) carries train_loc/val_loc, which overlap test_seen_loc (protocol.md §1.5): never used here.
    version = "1" if "train_loc" in mat or "val_loc" in mat else "2.0"
    names = cell_strings(mat["allclasses_names"])
    att, original = np.asarray(mat["att"], dtype=np.float64).T, np.asarray(mat["original_att"], dtype=np.float64).T
    if att.shape != original.shape or att.shape[0] != len(names):
        raise DataError(f"{path}: att {mat['att'].shape} / original_att {mat['original_att'].shape} do not match "
                        f"{len(names)} classes (expected attributes × classes)")
    norms = np.linalg.norm(att, axis=1)
    if not np.allclose(norms, 1.0, atol=1e-6):
        raise DataError(f"{path}: columns of att do not have unit L2 norm (min {norms.min():.4f}, max {norms.max():.4f})")
    locs = {}
    for key in ("trainval_loc", "test_seen_loc", "test_unseen_loc"):
        loc = np.asarray(mat[key]).astype(np.int64).ravel()
        if loc.size and loc.min() < 1:
            raise DataError(f"{path}: {key} holds index {loc.min()}; xlsa17 indices are 1-based")
        locs[key] = loc - 1
    legacy = None
    if version == "1":
        legacy = {key: np.intersect1d(np.asarray(mat[key]).astype(np.int64).ravel() - 1, locs["trainval_loc"])
                  for key in ("train_loc", "val_loc") if key in mat}
    return AttSplits(class_names=names, att=att, original_att=original, version=version,
                     v1_locs_within_trainval=legacy, **locs)


MAT_HEADER = b"MATLAB 5.0 MAT-file, written by zsl-bench"


def write_att_splits(path: Path, class_names: list[str], original_att: np.ndarray, trainval_loc: np.ndarray,
                     test_seen_loc: np.ndarray, test_unseen_loc: np.ndarray) -> None:
    """Write a v2.0-layout `att_splits.mat` (0-based locs in, 1-based out), byte-reproducibly."""
    from scipy.io import savemat

    original_att = np.asarray(original_att, dtype=np.float64)
    att = original_att / np.linalg.norm(original_att, axis=1, keepdims=True)
    names = np.empty((len(class_names), 1), dtype=object)
    for i, n in enumerate(class_names):
        names[i, 0] = np.array([n])
    buf = io.BytesIO()
    savemat(buf, {
        "att": att.T, "original_att": original_att.T, "allclasses_names": names,
        **{k: (np.asarray(v) + 1).astype(np.uint16).reshape(-1, 1) for k, v in (
            ("trainval_loc", trainval_loc), ("test_seen_loc", test_seen_loc), ("test_unseen_loc", test_unseen_loc))},
    })
    data = bytearray(buf.getvalue())
    # scipy stamps the creation time into the 116-byte text header; a fixed one keeps output byte-identical.
    data[:116] = MAT_HEADER.ljust(116, b" ")
    Path(path).write_bytes(bytes(data))


# --- the release archive ------------------------------------------------------------------------

XLSA17_ARCHIVE = RemoteFile(
    "xlsa17.zip",
    urls=("http://datasets.d2.mpi-inf.mpg.de/xian/xlsa17.zip", "https://datasets.d2.mpi-inf.mpg.de/xian/xlsa17.zip"),
    description="the GBU proposed split and its ResNet-101 features (about 0.9 GB); no published checksum, "
                "sha256 recorded at first download",
)


def xlsa17_folder(raw: Path, dataset: str) -> Path:
    """Where `prepare` extracts `xlsa17/data/<dataset>/` of the release."""
    return Path(raw) / "xlsa17" / "data" / dataset


# --- res101.mat ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Res101:
    labels: np.ndarray              # 0-based, allclasses order, row order of the file
    image_files: list[str] | None   # relative to the dataset's image root (prefix stripped)
    path: Path

    def features(self) -> np.ndarray:
        """N × 2048 float32 (the file stores 2048 × N float64)."""
        from scipy.io import loadmat

        return np.ascontiguousarray(loadmat(self.path, variable_names=["features"])["features"].T, dtype=np.float32)


def read_res101(path: Path, strip_prefix) -> Res101:
    """Labels and image files of `res101.mat`; features are read only when asked for (AWA2's are 0.6 GB)."""
    from scipy.io import loadmat

    path = Path(path)
    try:
        mat = loadmat(path, variable_names=["labels", "image_files"])
    except FileNotFoundError:
        raise DataError(f"{path}: not found") from None
    except Exception as e:
        raise DataError(f"{path}: not a readable MATLAB file ({e})") from None
    if "labels" not in mat:
        raise DataError(f"{path}: no 'labels' (is this xlsa17's res101.mat?)")
    labels = np.asarray(mat["labels"]).astype(np.int64).ravel()
    if labels.min() < 1:
        raise DataError(f"{path}: labels start at {labels.min()}; xlsa17 labels are 1-based")
    files = None
    if "image_files" in mat:
        files = [strip_prefix(f.replace("\\", "/")) for f in cell_strings(mat["image_files"])]
    return Res101(labels=labels - 1, image_files=files, path=path)


def last_two_components(stored: str) -> str:
    """CUB and AWA2: keep `<class folder>/<file>` of the authors' absolute paths (protocol.md §1.3)."""
    return "/".join([p for p in stored.split("/") if p][-2:])


def after_images_folder(stored: str) -> str:
    """SUN: keep everything after `/images/`."""
    if "/images/" not in stored:
        raise DataError(f"res101.mat: SUN image path without an 'images' folder: {stored}")
    return stored.split("/images/", 1)[1]


def directory_listing_order(image_files: list[str]) -> list[int]:
    """Indices of `image_files` in res101.mat row order: folder, then file name, both sorted (checked for
    CUB, SUN and AWA2 against the per-image index of the release)."""
    return sorted(range(len(image_files)), key=lambda i: tuple(image_files[i].rsplit("/", 1)))


# --- from an image list and the split files to the normalised folder ----------------------------

@dataclass(frozen=True)
class SplitSizes:
    n_images: int
    n_classes: int
    n_attributes: int
    trainval: int
    test_seen: int
    test_unseen: int


# Long on purpose: every protocol check of a release, in the order protocol.md lists them, in one place.
def build_dataset(*, name: str, source: str, xlsa17_dir: Path, out: Path, image_root: Path, image_files: list[str],
                  image_classes: list[str], attribute_names: list[str], expected: SplitSizes | None,
                  original_att=None, checks: list[str] | None = None, extra: dict | None = None,
                  res101_strip=None, keep_row_order: bool = False) -> Path:
    """Join an image list (in any order) with the xlsa17 split and write the normalised dataset folder.

    Rows are put in res101.mat order (directory listing; with `keep_row_order`, `image_files` already is
    res101.mat's list and stays as it is); labels index allclasses. Every fact of
    protocol.md §1.8 is checked; a failure names the file and the broken fact. If the release's
    res101.mat is present, its image list and labels must agree with ours row for row.
    """
    from zsl_bench.data.dataset import write_dataset
    from zsl_bench.protocol import SPLIT_SEED, VAL_SEEN_FRACTION, build_validation_fold

    xlsa17_dir = Path(xlsa17_dir)
    lists = ClassLists.read(xlsa17_dir)
    splits_file = xlsa17_dir / "att_splits.mat"
    att = read_att_splits(splits_file)
    checks = list(checks or []) + ["class lists partition allclasses", "att columns have unit L2 norm",
                                   "locs are 1-based"]
    if att.class_names != lists.allclasses:
        raise DataError(f"{splits_file}: allclasses_names differ from {xlsa17_dir / 'allclasses.txt'}")
    class_index = {n: i for i, n in enumerate(lists.allclasses)}
    unknown = sorted(set(image_classes) - set(class_index))
    if unknown:
        raise DataError(f"{xlsa17_dir / 'allclasses.txt'}: image folders {unknown[:3]} name no class of the split "
                        "(an older release with other class names?)")
    # A list read from res101.mat is in its row order by definition; sorting it is right only where that order is
    # the directory listing (CUB, SUN, AWA2). APY's is not: aPascal objects, then aYahoo images, one file per object.
    order = list(range(len(image_files))) if keep_row_order else directory_listing_order(image_files)
    image_files = [image_files[i] for i in order]
    labels = np.array([class_index[image_classes[i]] for i in order], dtype=np.int64)
    checks.append("rows in res101.mat order as listed there, labels in allclasses order" if keep_row_order
                  else "rows in directory-listing order, labels in allclasses order")
    original = att.original_att if original_att is None else np.asarray(original_att, dtype=np.float64)
    if original.shape[1] != len(attribute_names):
        raise DataError(f"{splits_file}: {original.shape[1]} attributes, but {len(attribute_names)} attribute names")

    locs = {"trainval": att.trainval_loc, "test_seen": att.test_seen_loc, "test_unseen": att.test_unseen_loc}
    _check_locs(splits_file, locs, labels, len(image_files), lists, class_index)
    checks.append("locs disjoint, cover every image, seen/unseen labels as the class lists say")
    if expected is not None:
        got = SplitSizes(n_images=len(image_files), n_classes=len(lists.allclasses),
                         n_attributes=len(attribute_names), **{k: len(v) for k, v in locs.items()})
        if got != expected:
            raise DataError(f"{splits_file}: sizes {got} differ from the published {expected}")
        checks.append(f"sizes match protocol.md §1.4 ({name})")
    res101_file = xlsa17_dir / "res101.mat"
    if res101_strip is not None and res101_file.is_file():
        res = read_res101(res101_file, res101_strip)
        if res.image_files is not None and res.image_files != image_files:
            first = next(i for i, (a, b) in enumerate(zip(res.image_files, image_files)) if a != b) \
                if len(res.image_files) == len(image_files) else None
            raise DataError(f"{res101_file}: its image list differs from the images on disk"
                            + (f" (first at row {first + 1}: {res.image_files[first]} vs {image_files[first]})"
                               if first is not None else f" ({len(res.image_files)} vs {len(image_files)} images)"))
        if not np.array_equal(res.labels, labels):
            raise DataError(f"{res101_file}: labels differ from the class folders of the images")
        checks.append("res101.mat image list and labels agree with the images on disk, row for row")

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
        out, name=name, source=f"{source} + xlsa17 split ({att.version})", class_names=lists.allclasses,
        attribute_names=attribute_names, image_root=image_root, image_files=image_files, labels=labels,
        original_att=original, seen_classes=seen, unseen_classes=unseen, splits=splits, folds=folds, checks=checks,
        extra={"att_splits_version": att.version, "val_seen_fraction": VAL_SEEN_FRACTION, "split_seed": SPLIT_SEED,
               "xlsa17_dir": os.path.relpath(xlsa17_dir.resolve(), Path(out).resolve()), **(extra or {})},
    )


def _check_locs(path: Path, locs: dict[str, np.ndarray], labels: np.ndarray, n: int, lists: ClassLists,
                class_index: dict[str, int]) -> None:
    for key, loc in locs.items():
        if loc.size and loc.max() >= n:
            raise DataError(f"{path}: {key}_loc points at row {loc.max() + 1}, only {n} images")
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


def prepare_from_release(raw: Path, out: Path, name: str, xlsa17_name: str, expected: SplitSizes, strip,
                         image_root: Path, attribute_names: list[str] | None, original_att=None,
                         extra: dict | None = None, keep_row_order: bool = False) -> Path:
    """The xlsa17 release alone (no images): the image list and labels come from res101.mat (`keep_row_order`:
    in its row order as it is, for releases whose order is not a directory listing)."""
    folder = xlsa17_folder(raw, xlsa17_name)
    res = read_res101(folder / "res101.mat", strip)
    att = read_att_splits(folder / "att_splits.mat")
    if res.image_files is None:
        raise DataError(f"{folder / 'res101.mat'}: no image_files; cannot build the image list")
    names = attribute_names or [f"attribute_{i + 1:03d}" for i in range(att.original_att.shape[1])]
    return build_dataset(
        name=name, source="xlsa17 release only (res101.mat image list)", xlsa17_dir=folder, out=out,
        image_root=image_root, image_files=res.image_files,
        image_classes=[att.class_names[label] for label in res.labels], attribute_names=names, expected=expected,
        original_att=original_att, keep_row_order=keep_row_order,
        extra={"images_downloaded": False, "attribute_names_known": attribute_names is not None, **(extra or {})},
    )


def refuse_images(name: str, params: dict, why: str) -> None:
    """Sources that exist only as the release (APY, AWA1): `images: true` is a user error, said in one line."""
    if params.get("images", False):
        raise DataError(f"sources.{name}.images: true, but {why}; set `images: false` (release-only: the xlsa17 "
                        "res101.mat vectors, which every vector method reads; map methods are skipped)")
