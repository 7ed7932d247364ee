"""The feature store: backbone features written once, read memory-mapped by every method.

    index.json     what was extracted: backbone description, input size, dataset fingerprint,
                   one entry per array (file, shape, dtype)
    pooled.npy     N × D float16, rows in the dataset's image order (global average pooling)

Plain `.npy` so any script can read it: `np.load("pooled.npy", mmap_mode="r")`. Extraction
streams batches into a memory-mapped file, so memory stays bounded whatever N is.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from zsl_bench.io import DataError, atomic_directory, read_json, sha256_file, write_json

STORE_DTYPE = np.float16


def extract_pooled(dataset, backbone_dir: Path, out: Path, batch_size: int = 128, progress: bool = True) -> Path:
    import torch
    from tqdm import tqdm

    from zsl_bench.backbone import load_backbone
    from zsl_bench.images import load_batch, to_normalised_tensor

    model, info = load_backbone(backbone_dir)
    size = info["spec"]["input_size"]
    n = len(dataset.labels)
    start = time.time()
    with atomic_directory(out) as tmp:
        store = np.lib.format.open_memmap(tmp / "pooled.npy", mode="w+", dtype=STORE_DTYPE,
                                          shape=(n, model.num_features))
        with torch.inference_mode():
            for lo in tqdm(range(0, n, batch_size), desc="extract pooled", unit="batch", disable=not progress):
                rows = range(lo, min(lo + batch_size, n))
                x = to_normalised_tensor(load_batch([dataset.image_path(r) for r in rows], size))
                store[lo:lo + len(rows)] = model(x).numpy().astype(STORE_DTYPE)
        store.flush()
        del store
        write_json(tmp / "index.json", {
            "dataset": dataset.name, "dataset_fingerprint": dataset.fingerprint(),
            "backbone": {k: info[k] for k in ("arch", "pretraining_data", "trained_on") if k in info},
            "backbone_spec": info["spec"], "input_size": size, "resize": "whole image, bilinear, no crop",
            "arrays": {"pooled": {"file": "pooled.npy", "shape": [n, int(model.num_features)],
                                  "dtype": np.dtype(STORE_DTYPE).name,
                                  "sha256": sha256_file(tmp / "pooled.npy")}},
            "wall_s": round(time.time() - start, 2),
        })
    return out


class FeatureStore:
    """Read side of a feature folder."""

    def __init__(self, root: Path):
        self.root = Path(root)
        if not (self.root / "index.json").is_file():
            raise DataError(f"{self.root}: no feature store here; run the extract stage first "
                            f"(`dvc repro extract@{self.root.name}`)")
        self.index = read_json(self.root / "index.json")

    def array(self, name: str = "pooled") -> np.ndarray:
        """Memory-mapped, read-only: nothing is loaded until rows are indexed."""
        entry = self.index["arrays"].get(name)
        if entry is None:
            raise DataError(f"{self.root / 'index.json'}: no '{name}' array (has {sorted(self.index['arrays'])})")
        arr = np.load(self.root / entry["file"], mmap_mode="r")
        if list(arr.shape) != entry["shape"]:
            raise DataError(f"{self.root / entry['file']}: shape {arr.shape}, index.json says {entry['shape']}")
        return arr

    def rows(self, rows: np.ndarray, name: str = "pooled") -> np.ndarray:
        """Selected rows as float32 (methods compute in float32; the store keeps float16)."""
        return np.asarray(self.array(name)[np.asarray(rows)], dtype=np.float32)

    def fingerprint(self, name: str = "pooled") -> str:
        return self.index["arrays"][name]["sha256"]

    def check_matches(self, dataset) -> None:
        if self.index["dataset_fingerprint"] != dataset.fingerprint():
            raise DataError(f"{self.root / 'index.json'}: extracted from another version of dataset "
                            f"{dataset.name}; run the extract stage again")
