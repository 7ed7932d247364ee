"""The xlsa17 "Proposed Split" release: class lists and `att_splits.mat` (protocol.md §1.1–1.5).

Facts this module enforces:
- every index in the `.mat` files is 1-based; `labels` and the columns of `att` follow `allclasses`;
- `att` is `original_att` with unit-L2 class columns; both are attributes × classes;
- v2.0 has no `train_loc`/`val_loc`; the v1 fields overlap `test_seen_loc`, so they are never
  returned as they are (validation comes from `trainclassesK`/`valclassesK` inside trainval).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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


def _cell_strings(cell) -> list[str]:
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
    names = _cell_strings(mat["allclasses_names"])
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
    return AttSplits(class_names=names, att=att, original_att=original, version=version, **locs)


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
