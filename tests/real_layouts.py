"""Small archives in the real layouts of CUB, AWA2, SUN and xlsa17, built from a prepared synthetic
dataset: same images and splits, renamed into each dataset's folder structure and file formats."""
from __future__ import annotations

import io
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.io import savemat

from zsl_bench.data.dataset import Dataset
from zsl_bench.data.xlsa17 import ClassLists, SplitSizes, directory_listing_order, write_att_splits

CLUSTER_PREFIX = "/cluster/xian/work"   # stands in for the authors' three leading folders


@dataclass
class FakeRelease:
    """One dataset's xlsa17 folder contents, in memory."""
    name: str
    files: dict[str, bytes]
    sizes: SplitSizes


def _mat_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    savemat(buf, arrays)
    return buf.getvalue()


def cell(strings) -> np.ndarray:
    out = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        out[i, 0] = np.array([s])
    return out


def xlsa17_release(d: Dataset, name: str, class_names: list[str], image_files: list[str], stored_prefix: str,
                   original_att: np.ndarray | None = None, feature_dim: int = 2048,
                   rng: np.random.Generator | None = None) -> FakeRelease:
    """att_splits.mat (v2.0 layout), class lists and res101.mat for `image_files` (the new relative paths of
    the synthetic images, in the synthetic row order), as the release would hold them."""
    rng = rng or np.random.default_rng(0)
    order = directory_listing_order(image_files)            # res101 rows: new row r holds old row order[r]
    new_of_old = np.empty(len(order), dtype=np.int64)
    new_of_old[order] = np.arange(len(order))
    seen = [class_names[c] for c in d.seen_classes]
    unseen = [class_names[c] for c in d.unseen_classes]
    allclasses = seen + unseen
    index_in_all = np.array([allclasses.index(class_names[c]) for c in range(len(class_names))])
    original = d.original_att[[class_names.index(n) for n in allclasses]] if original_att is None else original_att
    labels_new = index_in_all[d.labels[order]]
    files = {}
    att_buf = Path("/tmp") / f"att_{name}_{rng.integers(1 << 30)}.mat"
    write_att_splits(att_buf, allclasses, original,
                     np.sort(new_of_old[d.splits["trainval"]]), np.sort(new_of_old[d.splits["test_seen"]]),
                     np.sort(new_of_old[d.splits["test_unseen"]]))
    files["att_splits.mat"] = att_buf.read_bytes()
    att_buf.unlink()
    lists = ClassLists(allclasses=allclasses, trainval=seen, test=unseen, folds={
        k: ([class_names[c] for c in d.fold_classes(k)[0]], [class_names[c] for c in d.fold_classes(k)[1]])
        for k in d.folds})
    for fname, names in [("allclasses.txt", lists.allclasses), ("trainvalclasses.txt", lists.trainval),
                         ("testclasses.txt", lists.test)] + [
            (f"{kind}classes{k}.txt", lists.folds[k][i]) for k in lists.folds for i, kind in enumerate(("train", "val"))]:
        files[fname] = "".join(f"{n}\n" for n in names).encode()
    # Features carry the class signal, so a method trained on them beats chance.
    proj = rng.normal(size=(original.shape[1], feature_dim))
    feats = np.maximum(0, original[labels_new] @ proj / 10 + rng.normal(0, 1.0, (len(order), feature_dim)))
    files["res101.mat"] = _mat_bytes(features=feats.T, labels=(labels_new + 1).reshape(-1, 1).astype(np.float64),
                                     image_files=cell([f"{stored_prefix}{image_files[i]}" for i in order]))
    sizes = SplitSizes(n_images=len(order), n_classes=len(allclasses), n_attributes=original.shape[1],
                       trainval=len(d.splits["trainval"]), test_seen=len(d.splits["test_seen"]),
                       test_unseen=len(d.splits["test_unseen"]))
    return FakeRelease(name=name, files=files, sizes=sizes)


def xlsa17_zip(releases: list[FakeRelease]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for r in releases:
            for fname, data in r.files.items():
                z.writestr(f"xlsa17/data/{r.name}/{fname}", data)
    return buf.getvalue()


def tgz_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def cub_tgz(raw_synthetic: Path) -> bytes:
    """The synthetic set is written in CUB's layout already: pack it as the real tgz is packed."""
    files = {}
    for p in sorted(raw_synthetic.rglob("*")):
        rel = p.relative_to(raw_synthetic).as_posix()
        if p.is_file() and (rel.startswith("CUB_200_2011/") or rel == "attributes.txt"):
            files[rel] = p.read_bytes()
    return tgz_bytes(files)


def _jpeg(path: Path) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    with Image.open(path) as im:
        im.convert("RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


ANIMALS = ["antelope", "grizzly+bear", "killer+whale", "beaver", "dalmatian", "persian+cat", "horse",
           "german+shepherd", "blue+whale", "siamese+cat", "skunk", "mole", "tiger", "hippopotamus", "leopard",
           "moose", "spider+monkey", "humpback+whale", "elephant", "gorilla", "ox", "fox", "sheep", "seal",
           "chimpanzee", "hamster", "squirrel", "rhinoceros", "rabbit", "bat", "giraffe", "wolf"]
PREDICATES = ["black", "white", "blue", "brown"]


def awa2(d: Dataset) -> tuple[bytes, bytes, FakeRelease]:
    """AwA2-data.zip, AwA2-base.zip (metadata only) and the AWA2 xlsa17 release. Class 'antelope' gets four missing values (−1 in
    xlsa17, 0 in predicate-matrix-continuous.txt), as the real files have."""
    names = [ANIMALS[c] for c in range(d.n_classes)]
    predicates = PREDICATES + [f"attr{i}" for i in range(len(PREDICATES), d.n_attributes)]
    files, new_files = {}, []
    for row, (rel, label) in enumerate(zip(d.image_files, d.labels)):
        cls = names[label]
        new = f"{cls}/{cls}_{10001 + row}.jpg"
        new_files.append(new)
        files[f"Animals_with_Attributes2/JPEGImages/{new}"] = _jpeg(d.image_root / rel)
    own = np.round(d.original_att, 2)   # AwA2's matrix has two decimals, and xlsa17 copies it exactly
    antelope = names.index("antelope")
    own[antelope, :4] = 0.0
    files["Animals_with_Attributes2/classes.txt"] = "".join(f"{i + 1}\t{n}\n" for i, n in enumerate(names)).encode()
    files["Animals_with_Attributes2/predicates.txt"] = "".join(
        f"{i + 1}\t{n}\n" for i, n in enumerate(predicates)).encode()
    files["Animals_with_Attributes2/predicate-matrix-continuous.txt"] = "".join(
        " ".join(f"{v:.2f}" for v in row) + "\n" for row in own).encode()
    xl = np.round(d.original_att, 2)
    xl[antelope, :4] = -1.0
    seen_first = [names[c] for c in d.seen_classes] + [names[c] for c in d.unseen_classes]
    release = xlsa17_release(d, "AWA2", names, new_files, f"{CLUSTER_PREFIX}/data/Animals_with_Attributes2//JPEGImages/",
                             original_att=xl[[names.index(n) for n in seen_first]])
    return _zip(files), _zip({k: v for k, v in files.items() if "JPEGImages" not in k}), release


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for k, v in files.items():
            z.writestr(k, v)
    return buf.getvalue()


def sun(d: Dataset) -> tuple[bytes, bytes, FakeRelease]:
    """SUNAttributeDB.tar.gz, SUNAttributeDB_Images.tar.gz and the SUN xlsa17 release. Every third class
    has a sub-folder (`apartment_building/outdoor`), as SUN's nested scenes do."""
    scenes = []
    for c in range(d.n_classes):
        base = f"scene{c:02d}"
        scenes.append(f"{base}/outdoor" if c % 3 == 0 else base)
    class_names = [s.replace("/", "_") for s in scenes]
    images, files = [], {}
    for row, (rel, label) in enumerate(zip(d.image_files, d.labels)):
        scene = scenes[label]
        new = f"{scene[0]}/{scene}/sun_{row:08x}.jpg"
        images.append(new)
        files[f"images/{new}"] = _jpeg(d.image_root / rel)
    att_names = [f"attribute {i}" for i in range(d.n_attributes)]
    labels_cv = d.original_att[d.labels] / 100.0   # per-image votes whose class means are the class vectors
    meta = tgz_bytes({
        "SUNAttributeDB/images.mat": _mat_bytes(images=cell(images)),
        "SUNAttributeDB/attributes.mat": _mat_bytes(attributes=cell(att_names)),
        "SUNAttributeDB/attributeLabels_continuous.mat": _mat_bytes(labels_cv=labels_cv),
    })
    allc = [class_names[c] for c in d.seen_classes] + [class_names[c] for c in d.unseen_classes]
    release = xlsa17_release(d, "SUN", class_names, images, f"{CLUSTER_PREFIX}/MSc/data/SUN/images/",
                             original_att=(d.original_att / 100.0)[[class_names.index(n) for n in allc]])
    return meta, tgz_bytes(files), release


def release_from_metadata(folder: Path, name: str, stored_prefix: str, feature_dim: int = 64,
                          noise: float = 1.0, seed: int = 0) -> FakeRelease:
    """One dataset's xlsa17 folder built from the real release's metadata (`att_splits.mat`, the class lists
    and the per-image index of ../shared/zsl-metadata/<name>), with a res101.mat of random features carrying
    the class signal (`feature_dim` columns instead of 2048: the same layout, a smaller file)."""
    import csv

    from zsl_bench.data.xlsa17 import read_att_splits

    att = read_att_splits(folder / "att_splits.mat")
    with open(folder / "res101_index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    labels = np.array([int(r["label"]) - 1 for r in rows])
    rng = np.random.default_rng(seed)
    features = np.maximum(0, att.att[labels] @ rng.normal(size=(att.att.shape[1], feature_dim))
                          + rng.normal(0, noise, (len(rows), feature_dim)))
    files = {"att_splits.mat": (folder / "att_splits.mat").read_bytes(),
             "allclasses.txt": "".join(f"{n}\n" for n in att.class_names).encode(),
             "res101.mat": _mat_bytes(features=features.T, labels=(labels + 1).reshape(-1, 1).astype(float),
                                      image_files=cell([stored_prefix + r["image_file"] for r in rows]))}
    for lst in ["trainvalclasses.txt", "testclasses.txt"] + [f"{k}classes{i}.txt" for i in (1, 2, 3)
                                                             for k in ("train", "val")]:
        files[lst] = (folder / lst).read_bytes()
    sizes = SplitSizes(n_images=len(rows), n_classes=len(att.class_names), n_attributes=att.att.shape[1],
                       trainval=len(att.trainval_loc), test_seen=len(att.test_seen_loc),
                       test_unseen=len(att.test_unseen_loc))
    return FakeRelease(name=name, files=files, sizes=sizes)


def cub_vector_fixture(metadata: Path, root: Path, feature_dim: int = 2048, noise: float = 3.0):
    """CUB's real split (`metadata`: ../shared/zsl-metadata/CUB) with random `feature_dim`-d features carrying
    the class signal in place of res101.mat, prepared and imported as the release-only path does:
    (dataset, feature store) under `root`. Same sizes and work as the release; not its accuracies."""
    from zsl_bench.backbone import BackboneSpec
    from zsl_bench.data import cub
    from zsl_bench.data.dataset import load_dataset
    from zsl_bench.data.xlsa17 import last_two_components, prepare_from_release, xlsa17_folder
    from zsl_bench.features import FeatureStore
    from zsl_bench.feature_import import import_res101

    release = xlsa17_folder(root / "raw", "CUB")
    release.mkdir(parents=True)
    for name, data in release_from_metadata(metadata, "CUB", "/p1/p2/p3/MSc/", feature_dim=feature_dim,
                                            noise=noise).files.items():
        (release / name).write_bytes(data)
    d = load_dataset(prepare_from_release(root / "raw", root / "prepared", "CUB", "CUB", cub.SIZES,
                                          last_two_components, image_root=root / "images", attribute_names=None))
    spec = BackboneSpec(source="xlsa17_res101").applicable()
    store = FeatureStore(import_res101(d, release / "res101.mat", root / "features",
                                       {"spec": spec, "arch": spec["arch"], "pretraining_data": "imagenet-1k",
                                        "trained_on": None}))
    return d, store


def metadata_archives(shared: Path) -> dict[str, bytes]:
    """The small metadata archives a release-only preparation of SUN and AWA2 also fetches (attribute names),
    in their real layouts, from the real files in ../shared/zsl-metadata."""
    import csv

    with open(shared / "SUN" / "res101_index.csv", newline="") as f:
        sun_images = [r["image_file"] for r in csv.DictReader(f)]
    return {
        "SUNAttributeDB.tar.gz": tgz_bytes({
            "SUNAttributeDB/images.mat": _mat_bytes(images=cell(sun_images)),
            "SUNAttributeDB/attributes.mat": (shared / "SUN" / "attributes.mat").read_bytes()}),
        "AwA2-base.zip": _zip({f"Animals_with_Attributes2/{n}": (shared / "AWA2" / n).read_bytes()
                               for n in ("classes.txt", "predicates.txt", "predicate-matrix-continuous.txt")}),
    }


# --- APY and AWA1: release-only, built from scratch in the xlsa17 layout ---------------------------------------

# APY's proposed split as xlsa17 has it (att_splits.mat allclasses_names and the class lists in
# cetinsamet/attribute-label-embedding@a45093b datasets/APY/): the 20 aPascal classes in VOC order, then aYahoo's 12.
APY_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
               "donkey", "monkey", "goat", "wolf", "jetski", "zebra", "centaur", "mug", "statue", "building", "bag",
               "carriage"]
APY_UNSEEN = ["tvmonitor", "goat", "motorbike", "cow", "jetski", "train", "sheep", "statue", "horse", "person",
              "pottedplant", "donkey"]
APY_VAL = {1: ["aeroplane", "wolf", "carriage", "sofa", "bag"], 2: ["building", "bird", "bicycle", "cat", "centaur"],
           3: ["chair", "wolf", "sofa", "dog", "boat"]}
# AwA's 50 classes in classes.txt order, which is xlsa17's allclasses order for AWA1 and AWA2; the PS unseen ten.
AWA_CLASSES = ANIMALS + ["chihuahua", "rat", "weasel", "otter", "buffalo", "zebra", "giant+panda", "deer", "bobcat",
                         "pig", "lion", "mouse", "polar+bear", "collie", "walrus", "raccoon", "cow", "dolphin"]
AWA_UNSEEN = ["sheep", "dolphin", "bat", "seal", "blue+whale", "rat", "horse", "walrus", "giraffe", "bobcat"]


def small_release(name: str, classes: list[str], unseen: list[str], val: dict[int, list[str]], original_att: np.ndarray,
                  labels: np.ndarray, stored: list[str], feature_dim: int = 64, seed: int = 0) -> FakeRelease:
    """One dataset's xlsa17 folder for images with `labels` (allclasses indices) and `stored` paths, both in
    res101.mat row order: the last fifth of each seen class's rows (one at least) in test_seen, the rest in
    trainval, every unseen row in test_unseen; validation fold K's train classes are the seen ones not in val[K]."""
    import tempfile

    rng = np.random.default_rng(seed)
    seen = [c for c in classes if c not in unseen]
    locs = {"trainval": [], "test_seen": [], "test_unseen": []}
    for c, cls in enumerate(classes):
        rows = np.flatnonzero(labels == c)
        if cls in unseen:
            locs["test_unseen"] += rows.tolist()
        else:
            cut = len(rows) - max(1, len(rows) // 5)
            locs["trainval"] += rows[:cut].tolist()
            locs["test_seen"] += rows[cut:].tolist()
    locs = {k: np.sort(np.array(v)) for k, v in locs.items()}
    with tempfile.TemporaryDirectory() as tmp:
        write_att_splits(Path(tmp) / "att_splits.mat", classes, original_att, locs["trainval"], locs["test_seen"],
                         locs["test_unseen"])
        files = {"att_splits.mat": (Path(tmp) / "att_splits.mat").read_bytes()}
    lists = {"allclasses.txt": classes, "trainvalclasses.txt": seen, "testclasses.txt": unseen}
    for k, val_classes in val.items():
        lists[f"trainclasses{k}.txt"] = [c for c in seen if c not in val_classes]
        lists[f"valclasses{k}.txt"] = val_classes
    files.update({fname: "".join(f"{n}\n" for n in names).encode() for fname, names in lists.items()})
    unit = original_att / np.linalg.norm(original_att, axis=1, keepdims=True)
    features = np.maximum(0, unit[labels] @ rng.normal(size=(unit.shape[1], feature_dim))
                          + rng.normal(0, 0.5, (len(labels), feature_dim)))   # the class signal, as res101's carry it
    files["res101.mat"] = _mat_bytes(features=features.T, labels=(labels + 1).reshape(-1, 1).astype(np.float64),
                                     image_files=cell(stored))
    sizes = SplitSizes(n_images=len(labels), n_classes=len(classes), n_attributes=original_att.shape[1],
                       **{k: len(v) for k, v in locs.items()})
    return FakeRelease(name=name, files=files, sizes=sizes)


def apy_release(objects_per_class: int = 6, seed: int = 0) -> FakeRelease:
    """APY as the release lays it out (as public loaders read it: not checked against a res101.mat here): aPascal's
    objects first — crops of VOC2008 images, so a file comes once per object, here two objects an image, in no
    sorted order — then aYahoo's images; `original_att` a fraction of annotated objects, in [0, 1]."""
    rng = np.random.default_rng(seed)
    pascal = [c for c in range(20) for _ in range(objects_per_class)]
    rng.shuffle(pascal)
    voc_ids = rng.permutation(len(pascal))[np.arange(len(pascal)) // 2]
    stored = [f"{CLUSTER_PREFIX}/data/APY/images_att/VOCdevkit/VOC2008/JPEGImages/2008_{i:06d}.jpg" for i in voc_ids]
    yahoo = [c for c in range(20, 32) for _ in range(objects_per_class)]
    stored += [f"{CLUSTER_PREFIX}/data/APY/ayahoo_test_images/{APY_CLASSES[c]}_{n}.jpg" for n, c in enumerate(yahoo)]
    original = np.round(rng.uniform(0, 1, (32, 64)), 4)
    return small_release("APY", APY_CLASSES, APY_UNSEEN, APY_VAL, original, np.array(pascal + yahoo), stored, seed=seed)


def awa1_release(images_per_class: int = 5, seed: int = 0) -> tuple[FakeRelease, bytes]:
    """AWA1's release and AwA2-base.zip (the metadata archive that names its attributes): `original_att` is
    AwA's continuous matrix with two decimals and −1 at antelope × black, white, blue, brown, where AwA2's
    predicate-matrix-continuous.txt has 0, as the real files have. Rows by class folder, then file name."""
    rng = np.random.default_rng(seed)
    original = np.round(rng.uniform(0, 100, (50, 85)), 2)
    own = original.copy()
    original[0, :4], own[0, :4] = -1.0, 0.0
    predicates = PREDICATES + [f"attr{i}" for i in range(len(PREDICATES), 85)]
    rows = sorted((AWA_CLASSES[c], f"{AWA_CLASSES[c]}_{10001 + 50 * c + i}.jpg", c)
                  for c in range(50) for i in range(images_per_class))
    stored = [f"{CLUSTER_PREFIX}/data/Animals_with_Attributes/JPEGImages/{folder}/{file}" for folder, file, _ in rows]
    seen = [c for c in AWA_CLASSES if c not in AWA_UNSEEN]
    val = {k: seen[k - 1::3][:13] for k in (1, 2, 3)}   # the fixture's own folds (the real ones: 27 / 13 as well)
    release = small_release("AWA1", AWA_CLASSES, AWA_UNSEEN, val, original, np.array([c for *_, c in rows]), stored,
                            seed=seed)
    base = _zip({"Animals_with_Attributes2/classes.txt": "".join(f"{i + 1}\t{n}\n" for i, n in enumerate(AWA_CLASSES)),
                 "Animals_with_Attributes2/predicates.txt": "".join(f"{i + 1}\t{n}\n" for i, n in enumerate(predicates)),
                 "Animals_with_Attributes2/predicate-matrix-continuous.txt":
                     "".join(" ".join(f"{v:.2f}" for v in row) + "\n" for row in own)})
    return release, base
