"""The feature store: backbone features written once, read by every method without loading it whole.

    index.json      what is stored: backbone description, input size, dataset fingerprint, and one entry
                    per array (file, format, shape, dtype, checksum)
    pooled.npy      N × D, global-average-pooled vectors, rows in the dataset's image order
    <level>.npy     N × C × H × W spatial maps of a backbone stage (`layer4`, or `layer2..4` for Mg-MRN)
    <last>@<S>.npy  the last stage's maps with the images at S px (`extra_sizes`: APN's 224 px → 7 × 7 grid)
    xlsa17_res101.npy  xlsa17's published ResNet-101 vectors beside the extracted ones (`vectors`): what
                    the vector methods read where the papers did (index.json's `vectors` names the array)

Plain `.npy` so any script can read it (`np.load(f, mmap_mode="r")`). Each image's map is one
contiguous row ("chunked by image"); zsl-bench reads and writes rows with positioned file I/O rather
than a memory map, so resident memory stays at a batch, whatever the store's size (AWA2 at 2048×14×14
is 30 GB in float16). Extraction streams batches to disk, shows progress, and resumes after an
interruption from `.<name>.partial/`. Two more sources register an existing file instead of
extracting: xlsa17's `res101.mat` vectors (imported) and DAZLE/TransZero HDF5 maps (read lazily).
"""
from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from zsl_bench.io import DataError, atomic_directory, read_json, sha256_file, write_json
from zsl_bench.provenance import provenance, write_provenance

STORE_DTYPE = np.float16
# What an imported backbone source provides, and nothing else (stages.extract imports them as they are).
IMPORTED_ARRAYS = {"xlsa17_res101": ("pooled",), "hdf5": ("layer4",)}
HDF5_REQUIRED = ("feature_map", "labels", "trainval_loc", "test_seen_loc", "test_unseen_loc", "att", "original_att")


# --- row files -------------------------------------------------------------------------------------

class NpyRows:
    """A `.npy` file addressed by rows (the first axis) with pread/pwrite: no memory map, no page growth."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype, offset: int):
        self.path, self.shape, self.dtype, self.offset = Path(path), tuple(shape), np.dtype(dtype), offset
        self.row_shape = self.shape[1:]
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize

    @classmethod
    def create(cls, path: Path, shape: tuple[int, ...], dtype) -> "NpyRows":
        arr = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=tuple(shape))
        offset = arr.offset
        del arr  # the file now has its header and full (sparse) size
        return cls(path, shape, dtype, offset)

    @classmethod
    def open(cls, path: Path) -> "NpyRows":
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            if fortran:
                raise DataError(f"{path}: Fortran-ordered array; rows are not contiguous")
            return cls(path, shape, dtype, f.tell())

    def write(self, start: int, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.row_shape or start + len(block) > self.shape[0]:
            raise ValueError(f"{self.path}: block {block.shape} at row {start} does not fit {self.shape}")
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.pwrite(fd, block.tobytes(), self.offset + start * self.row_bytes)
        finally:
            os.close(fd)

    def read(self, rows) -> np.ndarray:
        """Rows in the order asked for; consecutive rows are read in one call."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self.row_shape), dtype=self.dtype)
        if len(rows) == 0:
            return out
        if rows.min() < 0 or rows.max() >= self.shape[0]:
            raise IndexError(f"{self.path}: rows outside 0..{self.shape[0] - 1}")
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1
        fd = os.open(self.path, os.O_RDONLY)
        try:
            pos = 0
            for run in np.split(sorted_rows, breaks):
                data = os.pread(fd, len(run) * self.row_bytes, self.offset + int(run[0]) * self.row_bytes)
                out[order[pos:pos + len(run)]] = np.frombuffer(data, dtype=self.dtype).reshape(len(run), *self.row_shape)
                pos += len(run)
        finally:
            os.close(fd)
        return out


# --- extraction ------------------------------------------------------------------------------------

VECTOR_SOURCES = ("auto", "backbone", "xlsa17_res101")


@dataclass(frozen=True)
class ExtractSpec:
    levels: tuple[str, ...] = ()        # backbone stages to store as maps, e.g. ("layer4",)
    input_size: int | None = None       # default: the backbone's own input size
    crop: str = "none"                  # "none": whole image resized (xlsa17); "center": short side + centre crop
    batch_size: int = 128
    # What the vector methods read: xlsa17's published res101.mat vectors (their papers' input), the
    # backbone's pooled vectors, or auto = xlsa17's where the dataset was split by an xlsa17 release.
    vectors: str = "auto"
    # Further input sizes whose last-stage maps are stored as `<last>@<size>` (APN's official 224 px).
    extra_sizes: tuple[int, ...] = field(default=(), metadata={"item": int})

    @classmethod
    def from_params(cls, params: dict) -> "ExtractSpec":
        spec = cls(levels=tuple(params.get("levels") or ()), input_size=params.get("input_size"),
                   crop=params.get("crop", "none"), batch_size=int(params.get("batch_size", 128)),
                   vectors=params.get("vectors", "auto"),
                   extra_sizes=tuple(int(s) for s in params.get("extra_sizes") or ()))
        if spec.crop not in ("none", "center"):
            raise DataError(f"extract.crop must be 'none' or 'center', not {spec.crop!r}")
        if spec.vectors not in VECTOR_SOURCES:
            raise DataError(f"extract.vectors must be one of {', '.join(VECTOR_SOURCES)}, not {spec.vectors!r}")
        return spec


def xlsa17_vectors(spec: ExtractSpec, dataset) -> Path | None:
    """The res101.mat whose vectors the store serves to vector methods, or None for the backbone's own."""
    release = dataset.xlsa17_dir / "res101.mat" if dataset.xlsa17_dir is not None else None
    if spec.vectors == "backbone" or (spec.vectors == "auto" and (release is None or not release.is_file())):
        return None
    if release is None or not release.is_file():
        raise DataError(f"extract.{dataset.name}.vectors: xlsa17_res101, but {dataset.name} was not split by an "
                        "xlsa17 release (no res101.mat); use vectors: backbone")
    return release


def _stage_indices(model, levels: tuple[str, ...]) -> list[int]:
    modules = [f["module"] for f in model.feature_info]
    unknown = [lv for lv in levels if lv not in modules]
    if unknown:
        raise DataError(f"backbone has no stage {unknown}; its stages are {modules}")
    return [modules.index(lv) for lv in levels]


# Long on purpose: one streaming loop (prefetch, forward, positioned writes, resume bookkeeping) reads best whole.
def extract(dataset, backbone_dir: Path, out: Path, spec: ExtractSpec = ExtractSpec(), progress: bool = True,
            stop_after_batches: int | None = None) -> Path:
    """Pooled vectors (and maps of `spec.levels`, and the last stage's maps at `spec.extra_sizes`) for every
    image, streamed to disk, resumable; xlsa17's vectors beside them when `spec.vectors` asks for them.

    `stop_after_batches` interrupts on purpose (tests and benchmarks of resuming).
    """
    import torch
    from tqdm import tqdm

    from zsl_bench.backbone import load_backbone
    from zsl_bench.images import load_batch_for_backbone

    model, info = load_backbone(backbone_dir)
    size = spec.input_size or info["spec"]["input_size"]
    vectors_from = xlsa17_vectors(spec, dataset)
    n = len(dataset.labels)
    out = Path(out)
    partial = out.with_name(f".{out.name}.partial")
    config = {"dataset_fingerprint": dataset.fingerprint(), "backbone": info, "spec": asdict(spec), "size": size}
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    progress_file = partial / "progress.json"
    indices = _stage_indices(model, spec.levels) if spec.levels else []

    with torch.inference_mode():
        probe = model.forward_intermediates(torch.zeros(1, 3, size, size), indices=indices or [len(model.feature_info) - 1],
                                            intermediates_only=True)
    shapes = {"pooled": (n, int(model.num_features))}
    shapes.update({lv: (n, *probe[i].shape[1:]) for i, lv in enumerate(spec.levels)})
    last = len(model.feature_info) - 1
    extra = {s: f"{model.feature_info[last]['module']}@{s}" for s in spec.extra_sizes}
    for s, name in extra.items():
        with torch.inference_mode():
            grid = model.forward_intermediates(torch.zeros(1, 3, s, s), indices=[last], intermediates_only=True)[0]
        shapes[name] = (n, *grid.shape[1:])

    start_row = 0
    if progress_file.is_file() and json.loads(progress_file.read_text()).get("config") == config_hash:
        start_row = json.loads(progress_file.read_text())["rows_done"]
        files = {k: NpyRows.open(partial / f"{k}.npy") for k in shapes}
    else:
        if partial.exists():
            import shutil

            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        files = {k: NpyRows.create(partial / f"{k}.npy", shape, STORE_DTYPE) for k, shape in shapes.items()}
    started = time.time()
    starts = list(range(start_row, n, spec.batch_size))

    def load(lo):
        images = [dataset.image_path(r) for r in range(lo, min(lo + spec.batch_size, n))]
        return [load_batch_for_backbone(images, s, spec.crop) for s in (size, *extra)]

    bar = tqdm(starts, desc=f"extract {'+'.join(shapes)}", unit="batch", disable=not progress)
    done_batches = 0
    # Decode the next batch in a thread while the model runs this one (PIL and torch release the GIL).
    with torch.inference_mode(), ThreadPoolExecutor(max_workers=1) as pool:
        upcoming = pool.submit(load, starts[0]) if starts else None
        for i, lo in enumerate(bar):
            rows = range(lo, min(lo + spec.batch_size, n))
            x, *smaller = upcoming.result()
            if i + 1 < len(starts):
                upcoming = pool.submit(load, starts[i + 1])
            if indices:
                final, maps = model.forward_intermediates(x, indices=indices)
                pooled = model.forward_head(final)
                for lv, m in zip(spec.levels, maps):
                    files[lv].write(lo, m.numpy())
            else:
                pooled = model(x)
            files["pooled"].write(lo, pooled.numpy())
            for name, xs in zip(extra.values(), smaller):
                files[name].write(lo, model.forward_intermediates(xs, indices=[last], intermediates_only=True)[0].numpy())
            _write_progress(progress_file, config_hash, lo + len(rows))
            done_batches += 1
            if stop_after_batches is not None and done_batches >= stop_after_batches and lo + len(rows) < n:
                raise KeyboardInterrupt(f"stopped on purpose after {done_batches} batches (resume by running again)")
    arrays = {k: {"file": f"{k}.npy", "format": "npy", "shape": list(f.shape), "dtype": np.dtype(STORE_DTYPE).name,
                  "sha256": sha256_file(f.path)} for k, f in files.items()}
    progress_file.unlink()
    if vectors_from is not None:
        arrays["xlsa17_res101"] = _write_res101(dataset, vectors_from, partial)
    write_json(partial / "index.json", {
        "dataset": dataset.name, "dataset_fingerprint": dataset.fingerprint(),
        "backbone": {k: info.get(k) for k in ("arch", "pretraining_data", "trained_on")},
        "backbone_spec": info["spec"], "input_size": size,
        "resize": "whole image, bilinear, no crop" if spec.crop == "none" else "short side, bilinear, centre crop",
        "arrays": arrays, "vectors": "pooled" if vectors_from is None else "xlsa17_res101",
    })
    write_provenance(partial, provenance(out.parent, time.time() - started, resumed_from_row=start_row))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    os.replace(partial, out)
    return out


def _write_progress(path: Path, config_hash: str, rows_done: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"config": config_hash, "rows_done": rows_done}))
    os.replace(tmp, path)


def _res101_features(dataset, res101_path: Path) -> np.ndarray:
    """xlsa17's published ResNet-101 vectors in the prepared dataset's row order (float32, as published in
    float64), after checking the release's labels against the dataset's row for row."""
    from zsl_bench.data.xlsa17 import read_res101

    res = read_res101(res101_path, lambda s: s)
    if not np.array_equal(res.labels, dataset.labels):
        raise DataError(f"{res101_path}: labels differ from the prepared dataset {dataset.name} row for row "
                        "(another release, or another dataset?)")
    return res.features()


def _write_res101(dataset, res101_path: Path, folder: Path, name: str = "xlsa17_res101") -> dict:
    """The published vectors as `<name>.npy` in `folder`; returns their index.json entry."""
    feats = _res101_features(dataset, res101_path)
    NpyRows.create(folder / f"{name}.npy", feats.shape, np.float32).write(0, feats)
    return {"file": f"{name}.npy", "format": "npy", "shape": list(feats.shape), "dtype": "float32",
            "sha256": sha256_file(folder / f"{name}.npy"), "source": str(res101_path.name)}


def import_res101(dataset, res101_path: Path, out: Path, backbone_info: dict) -> Path:
    """xlsa17's published ResNet-101 vectors as the pooled store (float32, as published in float64)."""
    with atomic_directory(out) as tmp:
        entry = _write_res101(dataset, res101_path, tmp, "pooled")
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
            "arrays": {"layer4": {"file": str(hdf5_path), "format": "hdf5", "key": "feature_map", "shape": shape,
                                  "dtype": dtype, "sha256": f"size {hdf5_path.stat().st_size}, head64MiB {head}"}},
            "ignored_keys": ignored,
        })
    return out


# --- reading ---------------------------------------------------------------------------------------

@dataclass
class FeatureStore:
    """Read side of a feature folder."""
    root: Path
    index: dict = field(init=False)

    def __post_init__(self):
        self.root = Path(self.root)
        if not (self.root / "index.json").is_file():
            raise DataError(f"{self.root}: no feature store here; run the extract stage first "
                            f"(`dvc repro extract@{self.root.name}`)")
        self.index = read_json(self.root / "index.json")
        self._files: dict[str, object] = {}
        self._resident: dict[str, np.ndarray] = {}

    def _entry(self, name: str) -> dict:
        entry = self.index["arrays"].get(name)
        if entry is None:
            level, _, size = name.partition("@")
            hint = (f"; `extract.{self.root.name}.extra_sizes: [{size}]` stores {level}'s maps at {size} px "
                    "(then `dvc repro`)" if size else f"; `extract.{self.root.name}.levels` lists the stored maps"
                    if name.startswith("layer") else "")
            raise DataError(f"{self.root / 'index.json'}: no '{name}' array (has {sorted(self.index['arrays'])})"
                            + hint)
        return entry

    @property
    def vectors(self) -> str:
        """The array vector methods read: `pooled` (the backbone's) or `xlsa17_res101` (extract's `vectors`)."""
        return self.index.get("vectors", "pooled")

    def unavailable(self, names) -> str | None:
        """Why this store can never hold `names`, or None: an imported source holds fixed arrays (a method
        needing others is skipped on this dataset, not failed). Arrays missing from a store extracted here
        are a configuration error instead (`extract.<dataset>.levels`), reported when they are read."""
        source = (self.index.get("backbone_spec") or {}).get("source")
        lacking = [n for n in names if n not in self.index["arrays"]]
        if not lacking or source not in IMPORTED_ARRAYS:
            return None
        return (f"needs {' and '.join(lacking)}, and {self.index['dataset']}'s features are imported from {source} "
                f"({', '.join(IMPORTED_ARRAYS[source])} only)")

    def shape(self, name: str = "pooled") -> tuple[int, ...]:
        return tuple(self._entry(name)["shape"])

    def names(self) -> list[str]:
        return sorted(self.index["arrays"])

    def read(self, rows, name: str = "pooled") -> np.ndarray:
        """The selected rows as float32, in the order asked for. An array of at most RESIDENT_LIMIT float32
        bytes is read whole on first use and held (a training loop reads every row many times: per-batch
        reads and conversions were a tenth of a map method's run); larger ones are read row by row."""
        entry = self._entry(name)
        if entry.get("format", "npy") == "hdf5":
            return self._read_hdf5(entry, rows)
        if name not in self._files:
            rows_file = NpyRows.open(self.root / entry["file"])
            if list(rows_file.shape) != entry["shape"]:
                raise DataError(f"{rows_file.path}: shape {rows_file.shape}, index.json says {entry['shape']}")
            self._files[name] = rows_file
            if np.prod(rows_file.shape, dtype=np.int64) * 4 <= self.RESIDENT_LIMIT:
                self._resident[name] = rows_file.read(np.arange(rows_file.shape[0])).astype(np.float32)
        if name not in self._resident:
            return self._files[name].read(rows).astype(np.float32)
        rows, held = np.asarray(rows, dtype=np.int64), self._resident[name]
        if len(rows) and (rows.min() < 0 or rows.max() >= len(held)):
            raise IndexError(f"{self._files[name].path}: rows outside 0..{len(held) - 1}")
        return held[rows]

    RESIDENT_LIMIT = 512 << 20   # float32 bytes up to which an array is held in memory after its first read

    rows = read  # the name vector methods used first

    def _read_hdf5(self, entry: dict, rows) -> np.ndarray:
        import h5py

        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        uniq, inverse = np.unique(rows[order], return_inverse=True)
        with h5py.File(entry["file"], "r") as f:
            data = f[entry["key"]][uniq]            # h5py wants increasing indices
        out = np.empty((len(rows), *data.shape[1:]), dtype=np.float32)
        out[order] = data[inverse]
        return out

    def batches(self, rows, batch_size: int, name: str = "pooled", seed: int | None = None):
        """An epoch over `rows` in batches (shuffled when a seed is given): yields (rows, float32 block).
        Memory stays at one batch whatever the store's size."""
        rows = np.asarray(rows, dtype=np.int64)
        if seed is not None:
            rows = np.random.default_rng(seed).permutation(rows)
        for lo in range(0, len(rows), batch_size):
            chunk = rows[lo:lo + batch_size]
            yield chunk, self.read(chunk, name)

    def array(self, name: str = "pooled") -> np.ndarray:
        """The whole `.npy` array memory-mapped, for small stores and for any outside script."""
        return np.load(self.root / self._entry(name)["file"], mmap_mode="r")

    def fingerprint(self, name: str = "pooled") -> str:
        return self._entry(name)["sha256"]

    SHA_CHECK_LIMIT = 256 << 20   # files up to this size are hashed before use (under a second); larger: size only

    def verify(self, names) -> None:
        """Check the .npy arrays a run will read against index.json before any training: readable header,
        the recorded shape, the full byte size, and the recorded sha256 where the file is small enough to
        hash quickly. A damaged file is named with how to recreate it."""
        for name in names:
            entry = self._entry(name)
            if entry.get("format", "npy") == "hdf5":
                continue   # checked against the dataset when it was registered
            path = self.root / entry["file"]
            again = f"delete {self.root} and run the extract stage again (`dvc repro extract@{self.root.name}`)"
            try:
                rows = NpyRows.open(path)
            except (OSError, ValueError, EOFError) as e:
                raise DataError(f"{path}: not a readable .npy ({e}); {again}") from None
            expected = rows.offset + int(np.prod(entry["shape"])) * rows.dtype.itemsize
            size = path.stat().st_size
            if list(rows.shape) != list(entry["shape"]) or size != expected:
                raise DataError(f"{path}: {size:,} bytes of shape {rows.shape}, index.json says shape "
                                f"{tuple(entry['shape'])} ({expected:,} bytes): truncated or replaced; {again}")
            if size <= self.SHA_CHECK_LIMIT and sha256_file(path) != entry["sha256"]:
                raise DataError(f"{path}: sha256 differs from index.json's; the file changed after extraction; {again}")

    def check_matches(self, dataset) -> None:
        if self.index["dataset_fingerprint"] != dataset.fingerprint():
            raise DataError(f"{self.root / 'index.json'}: extracted from another version of dataset "
                            f"{dataset.name}; run the extract stage again")


class MapView:
    """Lazy view of some rows of one or more store arrays: what map methods get as `x`.

    `read(positions)` returns a list with one float32 block per array (positions index `rows`);
    nothing is held in memory beyond the block asked for.
    """

    def __init__(self, store: FeatureStore, names: tuple[str, ...], rows):
        self.store, self.names, self.rows = store, tuple(names), np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [self.store.shape(n)[1:] for n in self.names]

    def read(self, positions) -> list[np.ndarray]:
        rows = self.rows[np.asarray(positions, dtype=np.int64)]
        return [self.store.read(rows, n) for n in self.names]

    def batches(self, batch_size: int):
        """Every row once, in order (for scoring)."""
        for lo in range(0, len(self), batch_size):
            positions = np.arange(lo, min(lo + batch_size, len(self)))
            yield positions, self.read(positions)
