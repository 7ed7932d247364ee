"""The embedded default: a synthetic bird dataset written in CUB-200-2011's on-disk layout.

Nothing is downloaded. `generate(out, config)` writes, byte-identically for a seed:

    out/attributes.txt                      (at the archive root, as in the real CUB tgz)
    out/CUB_200_2011/images/NNN.Name/*.png, images.txt, image_class_labels.txt, classes.txt,
        bounding_boxes.txt, attributes/{class_attribute_labels_continuous,image_attribute_labels,
        certainties}.txt, parts/{parts,part_locs}.txt
    out/xlsa17/data/SYNTHETIC/{allclasses,trainvalclasses,testclasses,trainclassesK,valclassesK}.txt
        and att_splits.mat in the v2.0 layout (locs index the directory-listing order, as res101 does)
    out/synthetic.json                      (the generator's config and the attribute groups)

so the synthetic set travels exactly the loader path of real CUB with the xlsa17 split.

How classes are made: a class is a dominant value per attribute group; each image shows the
dominant value with probability `dominant_prob` and another value otherwise, and the
class-attribute matrix is the percentage of the class's images showing each attribute (0–100,
as in CUB). Classes come in families that share about half their dominant values, so that
neighbouring classes are hard to tell apart, as congeneric species are. Unseen classes are new
combinations of values each seen by at least two seen classes.

The ground truth of granularity: `fine_pairs` / `coarse_pairs` turn unseen classes into twins that differ
only in the small parts' groups (eye, bill, legs) or only in the body's shape and pattern; synthetic.json and
the prepared dataset.json list them (`class_pairs`), and the ablation report reads a method's within-pair
accuracy off them (zsl_bench/twin_pairs.py). Unseen classes may have more images than seen ones
(`unseen_images_per_class`): they are only ever scored, so more of them sharpen T1 and U cheaply.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zsl_bench.data.synthetic_render import GROUPS, PARTS, render
from zsl_bench.data.xlsa17 import ClassLists, N_VALIDATION_FOLDS, write_att_splits, xlsa17_folder
from zsl_bench.io import DataError, atomic_directory, read_json, write_json

XLSA17_NAME = "SYNTHETIC"
NAME = "synthetic"


def required_archives(params: dict) -> list:
    return []  # generated here: nothing to download
FAMILY_NAMES = ("Finch", "Warbler", "Tanager", "Shrike", "Vireo", "Sparrow", "Wren", "Kinglet", "Pipit", "Thrush",
                "Oriole", "Bunting", "Grosbeak", "Flycatcher", "Swallow", "Lark", "Nuthatch", "Creeper")


@dataclass(frozen=True)
class SyntheticConfig:
    seed: int = 0
    n_classes: int = 50
    n_unseen: int = 10
    images_per_class: int = 60      # the most; each class has between 85 % and 100 % of this
    unseen_images_per_class: int = 0   # the same for unseen classes (0: images_per_class). Their images are
                                       # only ever scored, so more of them sharpen T1 and U at little cost
    min_size: int = 64
    max_size: int = 96
    dominant_prob: float = 0.75
    family_size: int = 5
    family_share: float = 0.5       # chance that a class keeps its family's value in a group
    val_class_fraction: float = 0.25
    test_seen_fraction: float = 0.2
    clutter: int = 6
    fine_pairs: int = 0             # pairs of unseen classes told apart only by small-part groups (eye, bill, legs)
    coarse_pairs: int = 0           # pairs told apart only by the whole body's structure (shape, body pattern)

    @classmethod
    def from_params(cls, params: dict) -> "SyntheticConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(params) - known
        if unknown:
            raise DataError(f"unknown synthetic parameters {sorted(unknown)}; known: {sorted(known)}")
        return cls(**params)


def attribute_names() -> list[str]:
    return [f"{g.name}::{v}" for g in GROUPS for v in g.values]


def _value_offsets() -> np.ndarray:
    return np.cumsum([0] + [len(g.values) for g in GROUPS])[:-1]


def design_classes(cfg: SyntheticConfig, rng: np.random.Generator):
    """Dominant value index per (class, group), the unseen class indices and validation folds."""
    n_groups = len(GROUPS)
    sizes = np.array([len(g.values) for g in GROUPS])
    for _attempt in range(1000):
        dominant = []
        while len(dominant) < cfg.n_classes:
            family = rng.integers(0, sizes)
            for _ in range(cfg.family_size):
                keep = rng.uniform(size=n_groups) < cfg.family_share
                member = np.where(keep, family, rng.integers(0, sizes))
                if not any(np.array_equal(member, d) for d in dominant) and len(dominant) < cfg.n_classes:
                    dominant.append(member)
        dominant = np.array(dominant)
        unseen = np.sort(rng.choice(cfg.n_classes, cfg.n_unseen, replace=False))
        seen = np.setdiff1d(np.arange(cfg.n_classes), unseen)
        pairs = _twin_pairs(dominant, unseen, cfg, rng)
        if pairs is not None and _covered(dominant[seen], sizes, at_least=2):
            break
    else:
        raise RuntimeError("could not draw seen classes that show every attribute value twice; "
                           "raise n_classes or lower n_unseen")
    folds = {}
    n_val = max(1, round(cfg.val_class_fraction * len(seen)))
    for k in range(1, N_VALIDATION_FOLDS + 1):
        for _attempt in range(1000):
            val = np.sort(rng.choice(seen, n_val, replace=False))
            train = np.setdiff1d(seen, val)
            if _covered(dominant[train], sizes, at_least=1):
                folds[k] = (train, val)
                break
        else:
            raise RuntimeError(f"could not draw validation fold {k} whose train classes show every value")
    return dominant, unseen, folds, pairs


# The ground truth of granularity: which groups tell a pair apart, by the spatial scale they are drawn at.
PAIR_SCALES = {"fine": lambda g: g.scale == "small",
               "coarse": lambda g: g.scale == "whole" and g.kind != "color"}   # shape and body pattern: structure


def _twin_pairs(dominant: np.ndarray, unseen: np.ndarray, cfg: SyntheticConfig, rng) -> list[dict] | None:
    """Turn consecutive unseen classes into twins (in place): the second copies the first in every group
    except those of the pair's kind, where it differs in each. A fine pair is told apart only by small parts,
    a coarse pair only by the body's shape and pattern, so which map level a method needs for which pair is
    known by construction. None when a twin would duplicate another class (the caller redraws)."""
    kinds = ["fine"] * cfg.fine_pairs + ["coarse"] * cfg.coarse_pairs
    if 2 * len(kinds) > len(unseen):
        raise DataError(f"{len(kinds)} twin pairs need {2 * len(kinds)} unseen classes; n_unseen is {len(unseen)}")
    sizes = np.array([len(g.values) for g in GROUPS])
    pairs = []
    for i, kind in enumerate(kinds):
        a, b = int(unseen[2 * i]), int(unseen[2 * i + 1])
        told = np.array([PAIR_SCALES[kind](g) for g in GROUPS])
        shift = rng.integers(1, sizes)
        dominant[b] = np.where(told, (dominant[a] + shift) % sizes, dominant[a])
        if sum(np.array_equal(dominant[b], d) for d in dominant) > 1:
            return None
        pairs.append({"kind": kind, "classes": (a, b), "groups": [g.name for g, t in zip(GROUPS, told) if t]})
    return pairs


def _covered(dominant: np.ndarray, sizes: np.ndarray, at_least: int) -> bool:
    return all(np.bincount(dominant[:, g], minlength=s).min() >= at_least for g, s in enumerate(sizes))


def _class_name(index: int, dominant_row: np.ndarray, family: int, taken: set[str]) -> str:
    value = {g.name: g.values[v] for g, v in zip(GROUPS, dominant_row)}
    head = value["has_head_color"].capitalize()
    pattern = {"solid": "Plain", "striped": "Striped", "spotted": "Spotted"}[value["has_body_pattern"]]
    genus = FAMILY_NAMES[family % len(FAMILY_NAMES)]
    candidates = [f"{head}_headed_{genus}", f"{pattern}_{head}_headed_{genus}"]
    name = next((c for c in candidates if c not in taken), None)
    n = 2
    while name is None or name in taken:
        name, n = f"{candidates[-1]}_{n}", n + 1
    taken.add(name)
    return f"{index + 1:03d}.{name}"


# params.yaml `sources.synthetic` keys and their types (zsl_bench.params checks them before any work).
PARAMS = {**{f.name: (int, float) if isinstance(f.default, float) else type(f.default)
             for f in dataclasses.fields(SyntheticConfig)}, "attribute_embeddings": ("list", str)}


def generate(out: Path, cfg: SyntheticConfig = SyntheticConfig(), progress: bool = True) -> Path:
    """Write the dataset to `out` (atomically: a failed run leaves no partial folder)."""
    from tqdm import tqdm

    rng = np.random.default_rng([cfg.seed, 0])
    dominant, unseen, folds, pairs = design_classes(cfg, rng)
    taken: set[str] = set()
    class_names = [_class_name(c, dominant[c], c // cfg.family_size, taken) for c in range(cfg.n_classes)]
    most = [cfg.unseen_images_per_class if c in unseen and cfg.unseen_images_per_class else cfg.images_per_class
            for c in range(cfg.n_classes)]
    n_images = [int(rng.integers(round(0.85 * m), m + 1)) for m in most]
    offsets, n_attr = _value_offsets(), len(attribute_names())

    out = Path(out)
    with atomic_directory(out) as tmp:
        cub = tmp / "CUB_200_2011"
        for sub in ("images", "attributes", "parts"):
            (cub / sub).mkdir(parents=True)
        images, shown, part_rows, boxes = [], [], [], []
        jobs = [(c, j) for c in range(cfg.n_classes) for j in range(n_images[c])]
        # CUB file numbers do not follow images.txt order; neither do ours (a per-class shuffle).
        file_numbers = [np.random.default_rng([cfg.seed, 2, c]).permutation(n) + 1 for c, n in enumerate(n_images)]
        for c, j in tqdm(jobs, desc="synthetic images", unit="img", disable=not progress):
            img_rng = np.random.default_rng([cfg.seed, 1, c, j])
            values = np.where(img_rng.uniform(size=len(GROUPS)) < cfg.dominant_prob, dominant[c],
                              _other_value(dominant[c], img_rng))
            size = int(img_rng.integers(cfg.min_size, cfg.max_size + 1))
            image, locs, box = render({g.name: g.values[v] for g, v in zip(GROUPS, values)}, img_rng, size,
                                      cfg.clutter)
            species = class_names[c].split(".", 1)[1]
            rel = f"{class_names[c]}/{species}_{file_numbers[c][j]:04d}_{int(img_rng.integers(100000, 999999))}.png"
            (cub / "images" / class_names[c]).mkdir(exist_ok=True)
            image.save(cub / "images" / rel, optimize=False)
            images.append((rel, c))
            shown.append(offsets + values)
            part_rows.append(locs)
            boxes.append(box)

        shown = np.array(shown)
        labels = np.array([c for _, c in images])
        present = np.zeros((len(images), n_attr), dtype=bool)
        present[np.arange(len(images))[:, None], shown] = True
        class_att = np.stack([100.0 * present[labels == c].mean(axis=0) for c in range(cfg.n_classes)])
        _write_cub_files(tmp, cub, class_names, images, present, class_att, part_rows, boxes)
        _write_xlsa17(xlsa17_folder(tmp, XLSA17_NAME), cfg, rng, class_names, images, class_att, unseen, folds)
        write_json(tmp / "synthetic.json", {
            "config": dataclasses.asdict(cfg),
            "groups": [dataclasses.asdict(g) for g in GROUPS],
            "attributes": [{"name": f"{g.name}::{v}", "group": g.name, "part": g.part, "kind": g.kind,
                            "scale": g.scale} for g in GROUPS for v in g.values],
            "class_pairs": [{**p, "classes": [class_names[c] for c in p["classes"]]} for p in pairs],
        })
    return out


def _other_value(dominant_row: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each group a uniformly drawn value other than the dominant one."""
    sizes = np.array([len(g.values) for g in GROUPS])
    shift = rng.integers(1, sizes)
    return (dominant_row + shift) % sizes


def _write_cub_files(root: Path, cub: Path, class_names, images, present, class_att, part_rows, boxes) -> None:
    names = attribute_names()
    (root / "attributes.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(names)))
    (cub / "classes.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(class_names)))
    (cub / "images.txt").write_text("".join(f"{i + 1} {rel}\n" for i, (rel, _) in enumerate(images)))
    (cub / "image_class_labels.txt").write_text("".join(f"{i + 1} {c + 1}\n" for i, (_, c) in enumerate(images)))
    (cub / "bounding_boxes.txt").write_text(
        "".join(f"{i + 1} {x:.1f} {y:.1f} {w:.1f} {h:.1f}\n" for i, (x, y, w, h) in enumerate(boxes)))
    (cub / "attributes" / "certainties.txt").write_text("1 not visible\n2 guessing\n3 probably\n4 definitely\n")
    (cub / "attributes" / "class_attribute_labels_continuous.txt").write_text(
        "".join(" ".join(f"{v:.12f}" for v in row) + "\n" for row in class_att))
    with open(cub / "attributes" / "image_attribute_labels.txt", "w") as f:
        for i, row in enumerate(present):
            # <image_id> <attribute_id> <is_present> <certainty_id> <time>; the renderer is always certain.
            f.write("".join(f"{i + 1} {a + 1} {int(p)} 4 0.000\n" for a, p in enumerate(row)))
    (cub / "parts" / "parts.txt").write_text("".join(f"{i + 1} {p}\n" for i, p in enumerate(PARTS)))
    with open(cub / "parts" / "part_locs.txt", "w") as f:
        for i, locs in enumerate(part_rows):
            for p, part in enumerate(PARTS):
                x, y, visible = locs[part]
                f.write(f"{i + 1} {p + 1} {x:.1f} {y:.1f} {visible}\n")


def _write_xlsa17(folder: Path, cfg: SyntheticConfig, rng, class_names, images, class_att, unseen, folds) -> None:
    folder.mkdir(parents=True)
    seen = np.setdiff1d(np.arange(cfg.n_classes), unseen)
    allclasses = [class_names[c] for c in seen] + [class_names[c] for c in unseen]  # as CUB: seen, then unseen
    ClassLists(
        allclasses=allclasses,
        trainval=[class_names[c] for c in seen],
        test=[class_names[c] for c in unseen],
        folds={k: ([class_names[c] for c in train], [class_names[c] for c in val]) for k, (train, val) in folds.items()},
    ).write(folder)

    # res101.mat rows follow the directory listing: class folders, then file names, both sorted.
    order = sorted(range(len(images)), key=lambda i: images[i][0])
    row_class = np.array([images[i][1] for i in order])
    trainval, test_seen = [], []
    for c in seen:
        rows = np.flatnonzero(row_class == c)
        n_test = max(1, round(cfg.test_seen_fraction * len(rows)))
        chosen = rng.choice(rows, n_test, replace=False)
        test_seen.extend(chosen)
        trainval.extend(np.setdiff1d(rows, chosen))
    test_unseen = np.flatnonzero(np.isin(row_class, unseen))
    by_allclasses = [class_names.index(n) for n in allclasses]
    write_att_splits(folder / "att_splits.mat", allclasses, class_att[by_allclasses],
                     np.sort(trainval), np.sort(test_seen), test_unseen)


def prepare_source(raw: Path, out: Path, params: dict, progress: bool = True, downloads: Path | None = None) -> Path:
    """Stage `prepare` for the embedded default: generate the CUB-layout files, then load them
    through the same path as real CUB (`zsl_bench.data.cub.prepare`)."""
    from zsl_bench.data import cub

    cfg = SyntheticConfig.from_params(params)
    generate(raw, cfg, progress=progress)
    made = read_json(raw / "synthetic.json")
    return cub.prepare(raw, xlsa17_folder(raw, XLSA17_NAME), out, name="synthetic",
                       extra={"generator": dataclasses.asdict(cfg), "class_pairs": made["class_pairs"]})
