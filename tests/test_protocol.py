"""Split invariants, on the synthetic set and on the real xlsa17 split files when present."""
import csv

import numpy as np
import pytest

from zsl_bench.data.dataset import load_dataset
from zsl_bench.data.xlsa17 import read_att_splits
from zsl_bench import protocol  # not `from … import test_phase`: pytest would collect it
from zsl_bench.protocol import build_validation_fold, validation_phase


def check_split_invariants(d):
    s = d.splits
    n = len(d.labels)
    main = [s["trainval"], s["test_seen"], s["test_unseen"]]
    assert sum(len(x) for x in main) == n
    assert len(np.unique(np.concatenate(main))) == n, "trainval / test_seen / test_unseen must be disjoint"
    assert set(d.labels[s["test_unseen"]]) == set(d.unseen_classes)
    assert set(d.labels[s["trainval"]]) == set(d.labels[s["test_seen"]]) == set(d.seen_classes)
    assert not set(d.seen_classes) & set(d.unseen_classes)
    for k in d.folds:
        parts = [s[f"fold{k}_train"], s[f"fold{k}_val_seen"], s[f"fold{k}_val_unseen"]]
        joined = np.concatenate(parts)
        assert len(np.unique(joined)) == len(joined), f"fold {k}: parts overlap"
        assert set(joined) == set(s["trainval"]), f"fold {k}: parts must partition trainval exactly"
        train_c, val_c = d.fold_classes(k)
        assert set(d.labels[parts[0]]) == set(train_c) == set(d.labels[parts[1]])
        assert set(d.labels[parts[2]]) == set(val_c)
        assert not set(parts[1]) & set(s["test_seen"])


def test_synthetic_splits_are_disjoint_complete_and_validation_sits_inside_trainval(tiny_project):
    d = load_dataset(tiny_project / "data" / "prepared" / "synthetic")
    check_split_invariants(d)


def test_phases_expose_only_what_each_phase_may_use(tiny_project):
    d = load_dataset(tiny_project / "data" / "prepared" / "synthetic")
    v = validation_phase(d, 1)
    train_c, val_c = d.fold_classes(1)
    assert set(v.candidate_classes) == set(train_c) | set(val_c)
    assert not set(v.candidate_classes) & set(d.unseen_classes), "test-unseen classes must not enter validation"
    assert set(v.train_classes) == set(train_c)
    t = protocol.test_phase(d)
    assert list(t.candidate_classes) == list(range(d.n_classes))
    assert set(t.train_rows) == set(d.splits["trainval"])
    np.testing.assert_array_equal(t.is_seen_class, np.isin(np.arange(d.n_classes), d.seen_classes))


def test_val_seen_is_a_fixed_seeded_fifth_of_each_train_class():
    labels = np.repeat(np.arange(4), 10)
    trainval = np.arange(40)
    a = build_validation_fold(labels, trainval, np.array([0, 1, 2]), np.array([3]), fold=1)
    b = build_validation_fold(labels, trainval, np.array([0, 1, 2]), np.array([3]), fold=1)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert np.bincount(labels[a["val_seen"]], minlength=4).tolist() == [2, 2, 2, 0]
    assert len(a["val_unseen"]) == 10 and len(a["train"]) == 24


# protocol.md §1.4: trainval images of the train / val classes of each validation split.
VAL_SPLIT_COUNTS = {
    "CUB": {1: (4702, 2355), 2: (4699, 2358), 3: (4782, 2275)},
    "SUN": {1: (9280, 1040), 2: (9280, 1040), 3: (9280, 1040)},
    "AWA2": {1: (16187, 7340), 2: (16724, 6803), 3: (16245, 7282)},
}


@pytest.mark.parametrize("dataset", sorted(VAL_SPLIT_COUNTS))
def test_validation_folds_on_the_real_split_files(shared_metadata, dataset):
    folder = shared_metadata / dataset
    att = read_att_splits(folder / "att_splits.mat")
    with open(folder / "res101_index.csv", newline="") as f:
        index = list(csv.DictReader(f))
    labels = np.array([int(r["label"]) - 1 for r in index])     # res101 labels are 1-based
    assert [int(r["res101_row"]) for r in index] == list(range(1, len(index) + 1))
    names = att.class_names
    seen = {names.index(c) for c in (folder / "trainvalclasses.txt").read_text().split()}
    assert set(labels[att.trainval_loc]) == seen == set(labels[att.test_seen_loc])
    for k, (n_train, n_val) in VAL_SPLIT_COUNTS[dataset].items():
        train_c = [names.index(c) for c in (folder / f"trainclasses{k}.txt").read_text().split()]
        val_c = [names.index(c) for c in (folder / f"valclasses{k}.txt").read_text().split()]
        fold = build_validation_fold(labels, att.trainval_loc, np.array(train_c), np.array(val_c), k)
        assert len(fold["train"]) + len(fold["val_seen"]) == n_train
        assert len(fold["val_unseen"]) == n_val
        assert not set(fold["val_seen"]) & set(att.test_seen_loc)
        assert not set(fold["train"]) & set(att.test_seen_loc)
