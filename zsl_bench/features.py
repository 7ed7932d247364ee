"""The feature store: backbone features written once, read by every method without loading it whole.

    index.json      what is stored: backbone description, input size, dataset fingerprint, and one entry
                    per array (file, format, shape, dtype, checksum)
    pooled.npy      N × D, global-average-pooled vectors, rows in the dataset's image order
    <level>.npy     N × C × H × W spatial maps of a backbone stage (`layer4`, or `layer2..4` for Mg-MRN) or
                    a token model's block (`blocks.11`: its patch tokens on their grid, class and register
                    tokens dropped); index.json's `levels` lists them fine to coarse
    <last>@<S>.npy  the coarsest level's maps with the images at S px (`extra_sizes`: APN's 224 px → 7 × 7)
    xlsa17_res101.npy  xlsa17's published ResNet-101 vectors beside the extracted ones (`vectors`): what
                    the vector methods read where the papers did (index.json's `vectors` names the array)

Plain `.npy` so any script can read it (`np.load(f, mmap_mode="r")`). Each image's map is one
contiguous row ("chunked by image"); zsl-bench reads and writes rows with positioned file I/O rather
than a memory map, so resident memory stays at a batch, whatever the store's size (AWA2 at 2048×14×14
is 30 GB in float16). This module reads a store (what every run loads); feature_extraction.py writes one
from a backbone, feature_import.py from xlsa17's `res101.mat` vectors or DAZLE/TransZero HDF5 maps.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zsl_bench.io import DataError, read_json, sha256_file

STORE_DTYPE = np.float16
# What an imported backbone source provides, and nothing else (stages.extract imports them as they are).
IMPORTED_ARRAYS = {"xlsa17_res101": ("pooled",), "hdf5": ("layer4",)}
HDF5_REQUIRED = ("feature_map", "labels", "trainval_loc", "test_seen_loc", "test_unseen_loc", "att", "original_att")


# Methods name maps by role, never by a backbone's stage names: the store's `levels` (fine to coarse) give
# the last three roles, so `coarse` is ResNet's layer4 or a ViT's chosen last block, `coarse@224` the
# coarsest level at 224 px (Evaluator.features_of resolves them).
LEVEL_ROLES = ("fine", "mid", "coarse")
# Class-level arrays of a CLIP backbone's store (one row per dataset class, not per image): its text tower's
# embeddings of each class, `class_text@names` and `class_text@attributes` (feature_extraction.write_class_text).
CLASS_TEXT = "class_text@"


# --- how a store is made (params.yaml `extract.<dataset>`; feature_extraction.py makes it) -----------

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
                            f"(`dvc repro extract@{self.root.parent.name}-{self.root.name}`)")
        self.index = read_json(self.root / "index.json")
        self._files: dict[str, object] = {}
        self._resident: dict[str, np.ndarray] = {}

    def _entry(self, name: str) -> dict:
        entry = self.index["arrays"].get(name)
        if entry is None:
            level, _, size = name.partition("@")
            where = f"extract.{self.root.parent.name}.{self.root.name}"
            hint = (f"; `{where}.extra_sizes: [{size}]` stores the coarsest level's maps at {size} px "
                    "(then `dvc repro`)" if size else f"; `{where}.levels` lists the stored maps, fine to coarse"
                    if level in LEVEL_ROLES or "." in level or level.startswith("layer") else "")
            raise DataError(f"{self.root / 'index.json'}: no '{name}' array (has {sorted(self.index['arrays'])})"
                            + hint)
        return entry

    @property
    def levels(self) -> list[str]:
        """The stored map levels, fine to coarse (index.json `levels`)."""
        return list(self.index.get("levels") or [])

    def resolve(self, name: str) -> str:
        """A stored array's name for a role (`pooled`: the vectors methods read; `fine`/`mid`/`coarse`[@S]:
        the last three levels); other names, and roles this store has too few levels for, unchanged (then
        `unavailable` or reading says what is missing)."""
        if name == "pooled":
            return self.vectors
        role, at, size = name.partition("@")
        if role in LEVEL_ROLES and len(self.levels) >= len(LEVEL_ROLES) - LEVEL_ROLES.index(role):
            return self.levels[LEVEL_ROLES.index(role) - len(LEVEL_ROLES)] + at + size
        return name

    @property
    def vectors(self) -> str:
        """The array vector methods read: `pooled` (the backbone's) or `xlsa17_res101` (extract's `vectors`)."""
        return self.index.get("vectors", "pooled")

    @property
    def token_maps(self) -> bool:
        """Whether the maps are a token model's patch tokens (a ViT's blocks), not a CNN's layers."""
        return bool(self.index.get("token_maps"))

    def class_text(self) -> dict[str, np.ndarray]:
        """{kind: C × E} class text embeddings of the store's CLIP model (dataset class order); {} otherwise."""
        return {name[len(CLASS_TEXT):]: self.read(np.arange(self.shape(name)[0]), name)
                for name in self.names() if name.startswith(CLASS_TEXT)}

    def backbone_label(self) -> str:
        spec = self.index.get("backbone_spec") or {}
        return f"{self.root.parent.name}/{self.root.name} ({spec.get('library', 'timm')} {spec.get('arch', '?')})"

    def unavailable(self, names) -> str | None:
        """Why this store can never hold `names`, or None: an imported source holds fixed arrays (a method
        needing others is skipped on this dataset, not failed), and only a CLIP image tower's store holds
        class text. Other arrays missing from a store extracted here are a configuration error instead
        (`extract.<dataset>.levels`), reported when they are read."""
        source = (self.index.get("backbone_spec") or {}).get("source")
        lacking = [n for n in names if n not in self.index["arrays"]]
        if any(n.startswith(CLASS_TEXT) for n in lacking):
            return (f"needs a CLIP backbone's class text embeddings (`library: open_clip`: an image tower with "
                    f"its text tower); {self.backbone_label()} has none")
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
            again = (f"delete {self.root} and run the extract stage again "
                     f"(`dvc repro extract@{self.root.parent.name}-{self.root.name}`)")
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
