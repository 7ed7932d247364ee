"""Writing a feature store from an existing file instead of extracting: xlsa17's `res101.mat` vectors
(imported into the store's format) and DAZLE/TransZero HDF5 maps (registered, read lazily); store format:
features.py."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from zsl_bench.io import DataError, atomic_directory, sha256_file, write_json

from zsl_bench.features import HDF5_REQUIRED, NpyRows


def _res101_features(dataset, res101_path: Path) -> np.ndarray:
    """xlsa17's published ResNet-101 vectors in the prepared dataset's row order (float32, as published in
    float64), after checking the release's labels against the dataset's row for row."""
    from zsl_bench.data.xlsa17 import read_res101

    res = read_res101(res101_path, lambda s: s)
    if not np.array_equal(res.labels, dataset.labels):
        raise DataError(f"{res101_path}: labels differ from the prepared dataset {dataset.name} row for row "
                        "(another release, or another dataset?)")
    return res.features()


def write_res101(dataset, res101_path: Path, folder: Path, name: str = "xlsa17_res101") -> dict:
    """The published vectors as `<name>.npy` in `folder`; returns their index.json entry."""
    feats = _res101_features(dataset, res101_path)
    NpyRows.create(folder / f"{name}.npy", feats.shape, np.float32).write(0, feats)
    return {"file": f"{name}.npy", "format": "npy", "shape": list(feats.shape), "dtype": "float32",
            "sha256": sha256_file(folder / f"{name}.npy"), "source": str(res101_path.name)}


def import_res101(dataset, res101_path: Path, out: Path, backbone_info: dict) -> Path:
    """xlsa17's published ResNet-101 vectors as the pooled store (float32, as published in float64)."""
    with atomic_directory(out) as tmp:
        entry = write_res101(dataset, res101_path, tmp, "pooled")
        write_json(tmp / "index.json", {
            "dataset": dataset.name, "dataset_fingerprint": dataset.fingerprint(),
            "backbone": {k: backbone_info.get(k) for k in ("arch", "pretraining_data", "trained_on")},
            "backbone_spec": backbone_info["spec"], "input_size": 224,
            "resize": "as published by xlsa17 (224 px, no crop, Caffe ResNet-101)",
            "arrays": {"pooled": {k: v for k, v in entry.items() if k != "source"}}, "vectors": "pooled",
        })
    return out


def register_hdf5(dataset, hdf5_path: Path, out: Path, backbone_info: dict) -> Path:
    """A DAZLE/TransZero feature file as a lazily read map source, after checking it matches the dataset.

    Schema (DAZLE's extract_feature_map_*.py, TransZero's preprocessing.py): `feature_map` N×2048×H×W,
    0-based `labels` and locs in res101 row order, `att`/`original_att` K×A, optional `w2v_att` A×300.
    DAZLE's SUN/AWA2 files also carry `train_loc`/`val_unseen_loc` from the leaky v1 split: never read.
    """
    import h5py

    hdf5_path = Path(hdf5_path).resolve()
    try:
        f = h5py.File(hdf5_path, "r")
    except (OSError, FileNotFoundError) as e:
        raise DataError(f"{hdf5_path}: cannot open as HDF5 ({e})") from None
    with f:
        missing = [k for k in HDF5_REQUIRED if k not in f]
        if missing:
            raise DataError(f"{hdf5_path}: missing keys {missing} (not a DAZLE/TransZero feature file?)")
        fm = f["feature_map"]
        if fm.ndim != 4 or fm.shape[0] != len(dataset.labels):
            raise DataError(f"{hdf5_path}: feature_map is {fm.shape}, expected N × C × H × W with N = "
                            f"{len(dataset.labels)}")
        if not np.array_equal(np.asarray(f["labels"]).astype(np.int64).ravel(), dataset.labels):
            raise DataError(f"{hdf5_path}: labels differ from the prepared dataset row for row")
        for key in ("trainval_loc", "test_seen_loc", "test_unseen_loc"):
            if not np.array_equal(np.sort(np.asarray(f[key]).astype(np.int64).ravel()),
                                  np.sort(dataset.splits[key.removesuffix("_loc")])):
                raise DataError(f"{hdf5_path}: {key} differs from the split of the prepared dataset")
        ignored = [k for k in ("train_loc", "val_unseen_loc", "val_loc") if k in f]
        shape, dtype = list(fm.shape), str(fm.dtype)
    with open(hdf5_path, "rb") as fh:
        head = hashlib.sha256(fh.read(64 << 20)).hexdigest()
    with atomic_directory(out) as tmp:
        write_json(tmp / "index.json", {
            "dataset": dataset.name, "dataset_fingerprint": dataset.fingerprint(),
            "backbone": {k: backbone_info.get(k) for k in ("arch", "pretraining_data", "trained_on")},
            "backbone_spec": backbone_info["spec"], "input_size": None, "resize": "as in the HDF5 file",
            "levels": ["layer4"], "arrays": {"layer4": {"file": str(hdf5_path), "format": "hdf5", "key": "feature_map", "shape": shape,
                                  "dtype": dtype, "sha256": f"size {hdf5_path.stat().st_size}, head64MiB {head}"}},
            "ignored_keys": ignored,
        })
    return out
