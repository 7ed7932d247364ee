"""Against the real xlsa17 split files and dataset metadata in ../shared/zsl-metadata (skipped without them)."""
import csv

import numpy as np
import pytest
from scipy.io import loadmat, savemat

from tests.conftest import SHARED_METADATA as SHARED
from tests.real_layouts import cell
from zsl_bench.data import awa2, cub, sun
from zsl_bench.data.xlsa17 import (after_images_folder, directory_listing_order, last_two_components, read_att_splits,
                                   read_res101)
from zsl_bench.protocol import build_validation_fold

SIZES = {"CUB": cub.SIZES, "SUN": sun.SIZES, "AWA2": awa2.SIZES}
STRIP = {"CUB": last_two_components, "SUN": after_images_folder, "AWA2": last_two_components}
# How the authors' cluster paths looked (protocol.md §1.3), with three made-up leading folders.
STORED_PREFIX = {"CUB": "/p1/p2/p3/MSc/", "SUN": "/p1/p2/p3/MSc/data/SUN/", "AWA2": "/p1/p2/p3/data/"}


def index_rows(folder):
    with open(folder / "res101_index.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("name", ["CUB", "SUN", "AWA2"])
def test_split_sizes_and_class_counts_match_the_protocol(shared_metadata, name):
    folder = shared_metadata / name
    att = read_att_splits(folder / "att_splits.mat")
    s = SIZES[name]
    assert att.version == "2.0"
    assert att.original_att.shape == (s.n_classes, s.n_attributes)
    assert (len(att.trainval_loc), len(att.test_seen_loc), len(att.test_unseen_loc)) == (s.trainval, s.test_seen,
                                                                                          s.test_unseen)
    seen = (folder / "trainvalclasses.txt").read_text().split()
    unseen = (folder / "testclasses.txt").read_text().split()
    assert len(seen) + len(unseen) == s.n_classes and not set(seen) & set(unseen)
    assert set(seen) | set(unseen) == set(att.class_names)
    all_locs = np.concatenate([att.trainval_loc, att.test_seen_loc, att.test_unseen_loc])
    assert sorted(all_locs) == list(range(s.n_images))


@pytest.mark.parametrize("name", ["CUB", "SUN", "AWA2"])
def test_res101_index_rebuilt_from_a_real_layout_file(shared_metadata, tmp_path, name):
    """protocol.md §1.8 item 7: a res101.mat in the release layout gives back the bundled per-image index."""
    folder = shared_metadata / name
    rows = index_rows(folder)
    stored = [STORED_PREFIX[name] + r["image_file"] for r in rows]
    savemat(tmp_path / "res101.mat", {"labels": np.array([[float(r["label"])] for r in rows]),
                                      "image_files": cell(stored)})
    res = read_res101(tmp_path / "res101.mat", STRIP[name])
    att = read_att_splits(folder / "att_splits.mat")
    np.testing.assert_array_equal(res.labels, [int(r["label"]) - 1 for r in rows])
    assert directory_listing_order(res.image_files) == list(range(len(rows))), "rows follow the directory listing"
    for f, label in zip(res.image_files, res.labels):
        folder_name = sun.class_of(f) if name == "SUN" else f.split("/")[0]
        assert folder_name == att.class_names[label]
    # the locs of att_splits.mat index the same rows: split column of the index agrees
    split = np.array([r["split"] for r in rows])
    assert set(split[att.trainval_loc]) == {"trainval"} and set(split[att.test_unseen_loc]) == {"test_unseen"}


# protocol.md §1.5: v1 train_loc / val_loc intersected with trainval, and how much of test_seen they hold.
V1 = {"SUN": (9280, 1040, 2320, 260), "AWA2": (16187, 7340, 4031, 1851)}


@pytest.mark.parametrize("name", sorted(V1))
def test_v1_train_val_locs_are_never_used_as_they_are(shared_metadata, name):
    folder = shared_metadata / name
    v1 = read_att_splits(folder / "att_splits_v1_2018.mat")
    assert v1.version == "1"
    n_train, n_val, leak_train, leak_val = V1[name]
    raw = loadmat(folder / "att_splits_v1_2018.mat")
    test_seen = set(v1.test_seen_loc.tolist())
    assert len(set((raw["train_loc"].ravel() - 1).tolist()) & test_seen) == leak_train   # the trap
    assert len(set((raw["val_loc"].ravel() - 1).tolist()) & test_seen) == leak_val
    legacy = v1.v1_locs_within_trainval
    assert (len(legacy["train_loc"]), len(legacy["val_loc"])) == (n_train, n_val)
    # and our fold 1, built from trainclasses1/valclasses1 inside trainval, is exactly that intersection
    labels = np.array([int(r["label"]) - 1 for r in index_rows(folder)])
    names = v1.class_names
    fold = build_validation_fold(labels, v1.trainval_loc,
                                 np.array([names.index(c) for c in (folder / "trainclasses1.txt").read_text().split()]),
                                 np.array([names.index(c) for c in (folder / "valclasses1.txt").read_text().split()]), 1)
    np.testing.assert_array_equal(np.union1d(fold["train"], fold["val_seen"]), legacy["train_loc"])
    np.testing.assert_array_equal(fold["val_unseen"], legacy["val_loc"])


def test_cub_labels_follow_allclasses_not_classes_txt(shared_metadata):
    folder = shared_metadata / "CUB"
    allclasses = (folder / "allclasses.txt").read_text().split()
    ids = [int(c.split(".")[0]) for c in allclasses]
    assert ids[:150] == sorted(ids[:150]) and ids[150:] == sorted(ids[150:]) and ids != sorted(ids)
    first = index_rows(folder)[0]
    assert first["image_file"].split("/")[2] == "001.Black_footed_Albatross" and first["label"] == "151"
    # res101 rows do not follow images.txt: few rows have row number = CUB image id (protocol.md §1.3)
    same = sum(int(r["res101_row"]) == int(r["cub_image_id"]) for r in index_rows(folder))
    assert same / 11788 < 0.05


def test_awa2_has_exactly_four_missing_values(shared_metadata):
    folder = shared_metadata / "AWA2"
    att = read_att_splits(folder / "att_splits.mat")
    predicates = [line.split()[1] for line in (folder / "predicates.txt").read_text().splitlines()]
    classes = [line.split()[1] for line in (folder / "classes.txt").read_text().splitlines()]
    own = np.loadtxt(folder / "predicate-matrix-continuous.txt")[[classes.index(c) for c in att.class_names]]
    cells = awa2.missing_value_cells(att.original_att, own, att.class_names, predicates, folder)
    assert cells == [{"class": "antelope", "attribute": a} for a in ("black", "white", "blue", "brown")]


@pytest.fixture(scope="module", params=["CUB", "SUN", "AWA2"])
def release_only(request, tmp_path_factory):
    """A dataset prepared from an xlsa17-layout release built from the real split files (att_splits.mat,
    class lists, per-image index) with a res101.mat of random features carrying the class signal, then its
    vectors imported as the feature store: the release-only path, without images."""
    from tests.real_layouts import release_from_metadata
    from zsl_bench.backbone import BackboneSpec
    from zsl_bench.data.dataset import load_dataset
    from zsl_bench.data.xlsa17 import prepare_from_release, xlsa17_folder
    from zsl_bench.features import FeatureStore
    from zsl_bench.feature_import import import_res101

    name = request.param
    if not (SHARED / name).is_dir():
        pytest.skip(f"real dataset metadata not available at {SHARED} (it sits beside the repository in the "
                    "development workspace; CI clones do not have it)")
    tmp = tmp_path_factory.mktemp(name)
    release = xlsa17_folder(tmp / "raw", name)
    release.mkdir(parents=True)
    for fname, data in release_from_metadata(SHARED / name, name, STORED_PREFIX[name], feature_dim=256).files.items():
        (release / fname).write_bytes(data)
    out = prepare_from_release(tmp / "raw", tmp / "prepared", name, name, SIZES[name], STRIP[name],
                               image_root=tmp / "raw" / "images", attribute_names=None)
    d = load_dataset(out)
    assert any("sizes match" in c for c in d.meta["checks"])
    spec = BackboneSpec(arch="resnet101", source="xlsa17_res101")
    info = {"spec": spec.applicable(), "arch": spec.applicable()["arch"], "pretraining_data": "imagenet-1k",
            "trained_on": None}
    return d, FeatureStore(import_res101(d, release / "res101.mat", tmp / "features", info))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["eszsl", "sae"])
def test_classic_defaults_are_far_from_chance_on_the_release_layouts(release_only, method):
    """Each dataset's default hyperparameters (the `last` policy: no search, no validation) under each method's
    default convention — ESZSL's {0, 1} targets, SAE's row-normalised W — are far from chance on the real
    splits; under ESZSL's ±1 variant the published defaults collapsed to chance (issue 16)."""
    from zsl_bench.evaluator import Evaluator
    from zsl_bench.registry import get_method

    d, store = release_only
    result = Evaluator(d, store, get_method(method), seed=0, search=False, progress=False).run()
    chance = 1 / len(d.unseen_classes)
    t1 = result.selection["last"]["metrics"]["T1"]
    assert t1 > 5 * chance, f"{method} on {d.name}: default T1 {t1:.3f}, chance {chance:.3f}"
    n_test = len(d.splits["test_seen"]) + len(d.splits["test_unseen"])
    assert result.predictions["scores_val"].shape == (n_test, len(d.class_names))
