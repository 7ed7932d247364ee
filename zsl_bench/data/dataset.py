"""The normalised dataset folder: what every source becomes and every later stage reads.

    dataset.json              names of classes (allclasses order) and attributes, seen/unseen
                              classes, validation folds, image root, the checks that passed
    images.csv                row, image_file (relative to the image root), label, split
    class_attributes.npy      C × A, the source's own scale (CUB: % of annotators, 0–100)
    class_attributes_l2.npy   C × A, every class row scaled to unit L2 norm (xlsa17 `att`)
    splits.npz                0-based image rows: trainval, test_seen, test_unseen and, per fold K,
                              foldK_train / foldK_val_seen / foldK_val_unseen (a partition of trainval)

Rows follow the xlsa17 `res101.mat` order (directory listing), labels index allclasses.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zsl_bench.io import (DataError, atomic_directory, canonical_json, read_json, sha256_bytes, sha256_file,
                          write_json)

FORMAT_VERSION = 1
SPLIT_NAMES = ("trainval", "test_seen", "test_unseen")
FOLD_PARTS = ("train", "val_seen", "val_unseen")


@dataclass
class Dataset:
    root: Path
    name: str
    class_names: list[str]
    attribute_names: list[str]
    image_root: Path
    image_files: list[str]
    labels: np.ndarray
    original_att: np.ndarray
    att: np.ndarray
    seen_classes: np.ndarray
    unseen_classes: np.ndarray
    splits: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_attributes(self) -> int:
        return len(self.attribute_names)

    @property
    def folds(self) -> list[int]:
        return sorted(int(k) for k in self.meta["folds"])

    def fold_classes(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        fold = self.meta["folds"][str(k)]
        return np.array(fold["train_classes"]), np.array(fold["val_classes"])

    def fingerprint(self) -> str:
        """Content hash of the normalised folder (recorded with every run)."""
        return self.meta["fingerprint"]

    @property
    def xlsa17_dir(self) -> Path | None:
        """The xlsa17 folder this dataset was split by (holds res101.mat when the release has it)."""
        rel = self.meta.get("xlsa17_dir")
        return (self.root / rel).resolve() if rel else None

    def attribute_embeddings(self) -> dict[str, np.ndarray]:
        """Every stored attribute text embedding, by kind (A × dim each)."""
        return {kind: np.load(self.root / e["file"]) for kind, e in self.meta.get("attribute_embeddings", {}).items()}

    def image_path(self, row: int) -> Path:
        return self.image_root / self.image_files[row]


def write_dataset(out: Path, *, name: str, source: str, class_names: list[str], attribute_names: list[str],
                  image_root: Path, image_files: list[str], labels: np.ndarray, original_att: np.ndarray,
                  seen_classes: np.ndarray, unseen_classes: np.ndarray, splits: dict[str, np.ndarray],
                  folds: dict[int, dict], checks: list[str], extra: dict | None = None) -> Path:
    """Write the folder atomically; `image_root` is stored relative to the folder itself."""
    out = Path(out)
    original_att = np.asarray(original_att, dtype=np.float64)
    norms = np.linalg.norm(original_att, axis=1, keepdims=True)
    if (norms == 0).any():
        raise DataError(f"{name}: class {class_names[int(np.flatnonzero(norms == 0)[0])]} has an all-zero "
                        "attribute vector; it cannot be L2-normalised")
    split_of_row = np.full(len(labels), "", dtype=object)
    for s in SPLIT_NAMES:
        split_of_row[splits[s]] = s
    with atomic_directory(out) as tmp:
        np.save(tmp / "class_attributes.npy", original_att)
        np.save(tmp / "class_attributes_l2.npy", original_att / norms)
        np.savez(tmp / "splits.npz", **{k: np.asarray(v, dtype=np.int64) for k, v in sorted(splits.items())})
        with open(tmp / "images.csv", "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["row", "image_file", "label", "split"])
            for i, (path, label) in enumerate(zip(image_files, labels)):
                w.writerow([i, path, int(label), split_of_row[i]])
        meta = {
            "format_version": FORMAT_VERSION, "name": name, "source": source,
            "n_images": len(labels), "n_classes": len(class_names), "n_attributes": len(attribute_names),
            "classes": class_names, "attributes": attribute_names,
            "seen_classes": [int(c) for c in seen_classes], "unseen_classes": [int(c) for c in unseen_classes],
            "image_root": Path(os.path.relpath(Path(image_root).resolve(), out.resolve())).as_posix(),
            "folds": {str(k): v for k, v in folds.items()}, "checks": checks, **(extra or {}),
        }
        _write_meta(tmp, meta)
    return out


def _write_meta(folder: Path, meta: dict) -> None:
    """dataset.json with a fingerprint over every file of the folder and the metadata itself."""
    meta = {k: v for k, v in meta.items() if k != "fingerprint"}
    parts = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.name != "dataset.json"}
    parts["dataset.json"] = sha256_bytes(canonical_json(meta).encode())
    write_json(folder / "dataset.json", {**meta, "fingerprint": sha256_bytes(canonical_json(parts).encode())})


def attach_attribute_embeddings(root: Path, embeddings: dict[str, tuple[np.ndarray, dict]],
                                unavailable: dict[str, str] | None = None) -> None:
    """Add `attribute_embeddings_<kind>.npy` files to a prepared folder (atomically, new fingerprint), and
    record why the `unavailable` kinds could not be made."""
    import shutil

    root = Path(root)
    meta = read_json(root / "dataset.json")
    with atomic_directory(root) as tmp:
        for p in root.iterdir():
            shutil.copy2(p, tmp / p.name)
        info = dict(meta.get("attribute_embeddings", {}))
        for kind, (vectors, origin) in embeddings.items():
            if vectors.shape[0] != meta["n_attributes"]:
                raise DataError(f"{root}: {kind} embeddings have {vectors.shape[0]} rows, the dataset has "
                                f"{meta['n_attributes']} attributes")
            np.save(tmp / f"attribute_embeddings_{kind}.npy", vectors)
            info[kind] = {"file": f"attribute_embeddings_{kind}.npy", "shape": list(vectors.shape), **origin}
        missing = {**meta.get("attribute_embeddings_unavailable", {}), **(unavailable or {})}
        missing = {k: v for k, v in missing.items() if k not in info}
        _write_meta(tmp, {**meta, "attribute_embeddings": info,
                          **({"attribute_embeddings_unavailable": missing} if missing else {})})


def load_dataset(root: Path) -> Dataset:
    root = Path(root)
    if not (root / "dataset.json").is_file():
        raise DataError(f"{root}: no prepared dataset here; run the prepare stage first "
                        f"(`dvc repro prepare@{root.name}` or `zsl-bench prepare {root.name}`)")
    meta = read_json(root / "dataset.json")
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{root / 'dataset.json'}: format version {meta.get('format_version')}, "
                        f"this zsl-bench reads {FORMAT_VERSION}; run the prepare stage again")
    image_files, labels = [], []
    with open(root / "images.csv", newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            if int(row["row"]) != i:
                raise DataError(f"{root / 'images.csv'}: row {i} is numbered {row['row']}")
            image_files.append(row["image_file"])
            labels.append(int(row["label"]))
    with np.load(root / "splits.npz") as z:
        splits = {k: z[k] for k in z.files}
    return Dataset(
        root=root, name=meta["name"], class_names=meta["classes"], attribute_names=meta["attributes"],
        image_root=(root / meta["image_root"]).resolve(), image_files=image_files,
        labels=np.array(labels, dtype=np.int64),
        original_att=np.load(root / "class_attributes.npy"), att=np.load(root / "class_attributes_l2.npy"),
        seen_classes=np.array(meta["seen_classes"]), unseen_classes=np.array(meta["unseen_classes"]),
        splits=splits, meta=meta,
    )
