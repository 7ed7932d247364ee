"""The synthetic generator and the CUB + xlsa17 loader path it shares with real CUB."""
import dataclasses
import shutil

import numpy as np
import pytest

from tests.conftest import TINY_SYNTHETIC
from zsl_bench.data import cub
from zsl_bench.data.dataset import load_dataset
from zsl_bench.data.synthetic import SyntheticConfig, XLSA17_NAME, design_classes, generate
from zsl_bench.data.synthetic_render import GROUPS
from zsl_bench.data.xlsa17 import read_att_splits
from zsl_bench.io import DataError, sha256_tree

SMALL = SyntheticConfig(**{**TINY_SYNTHETIC, "images_per_class": 4})


def test_generator_is_byte_identical_for_a_seed_and_differs_across_seeds(tmp_path):
    a = generate(tmp_path / "a", SMALL, progress=False)
    b = generate(tmp_path / "b", SMALL, progress=False)
    c = generate(tmp_path / "c", SyntheticConfig(**{**TINY_SYNTHETIC, "images_per_class": 4, "seed": 4}),
                 progress=False)
    assert sha256_tree(a) == sha256_tree(b)
    assert sha256_tree(a) != sha256_tree(c)


def test_generator_writes_the_cub_layout_and_xlsa17_lists(tmp_path):
    root = generate(tmp_path / "s", SMALL, progress=False)
    cub_root = root / "CUB_200_2011"
    for rel in ("images.txt", "image_class_labels.txt", "classes.txt", "bounding_boxes.txt",
                "attributes/class_attribute_labels_continuous.txt", "attributes/image_attribute_labels.txt",
                "parts/parts.txt", "parts/part_locs.txt"):
        assert (cub_root / rel).is_file(), rel
    assert (root / "attributes.txt").is_file()  # at the archive root, as in the real tgz
    names = [line.split()[1] for line in (root / "attributes.txt").read_text().splitlines()]
    assert "has_wing_color::red" in names and all("::" in n for n in names)
    images = (cub_root / "images.txt").read_text().splitlines()
    assert all(line.split()[1].endswith(".png") for line in images)
    n_attr = len(names)
    assert len((cub_root / "attributes/image_attribute_labels.txt").read_text().splitlines()) == len(images) * n_attr
    for f in ("allclasses", "trainvalclasses", "testclasses", "trainclasses1", "valclasses3"):
        assert (root / "xlsa17" / "data" / XLSA17_NAME / f"{f}.txt").is_file()


def test_class_matrix_is_the_percentage_of_images_showing_each_attribute(tmp_path):
    root = generate(tmp_path / "s", SMALL, progress=False)
    cub_root = root / "CUB_200_2011"
    labels = np.loadtxt(cub_root / "image_class_labels.txt", dtype=int)[:, 1] - 1
    rows = np.loadtxt(cub_root / "attributes/image_attribute_labels.txt", usecols=(0, 1, 2), dtype=int)
    n_img, n_attr = labels.size, rows[:, 1].max()
    present = np.zeros((n_img, n_attr))
    present[rows[:, 0] - 1, rows[:, 1] - 1] = rows[:, 2]
    expected = np.stack([100 * present[labels == c].mean(0) for c in range(SMALL.n_classes)])
    got = np.loadtxt(cub_root / "attributes/class_attribute_labels_continuous.txt")
    np.testing.assert_allclose(got, expected, atol=1e-9)
    # every image shows exactly one value per group
    assert (present.sum(1) == len(GROUPS)).all()


def test_class_design_covers_values_and_keeps_unseen_classes_new():
    cfg = SyntheticConfig()
    dominant, unseen, folds, _ = design_classes(cfg, np.random.default_rng([cfg.seed, 0]))
    seen = np.setdiff1d(np.arange(cfg.n_classes), unseen)
    for g, group in enumerate(GROUPS):
        counts = np.bincount(dominant[seen, g], minlength=len(group.values))
        assert counts.min() >= 2, f"{group.name}: a value is dominant in fewer than two seen classes"
    assert len({tuple(r) for r in dominant}) == cfg.n_classes
    for k, (train, val) in folds.items():
        assert set(train) | set(val) == set(seen) and not set(train) & set(val)
        assert len(val) == round(cfg.val_class_fraction * len(seen))
    scales = {g.scale for g in GROUPS}
    assert scales == {"whole", "mid", "small"}
    assert {g.kind for g in GROUPS} == {"color", "pattern", "shape"}


def test_twin_pairs_differ_only_at_their_scale_and_reach_the_prepared_dataset(tmp_path):
    """The ground truth of granularity: a fine pair's twins share every group but the small parts (where they
    differ in each), a coarse pair's every group but the body's shape and pattern; both twins are unseen, the
    unseen classes get their own image count, and the pairs travel into dataset.json by class name."""
    from zsl_bench.data.synthetic import PAIR_SCALES, prepare_source

    cfg = SyntheticConfig(**{**TINY_SYNTHETIC, "images_per_class": 4, "unseen_images_per_class": 6,
                             "fine_pairs": 1, "coarse_pairs": 1})
    dominant, unseen, _, pairs = design_classes(cfg, np.random.default_rng([cfg.seed, 0]))
    assert [p["kind"] for p in pairs] == ["fine", "coarse"]
    for p in pairs:
        a, b = p["classes"]
        assert a in unseen and b in unseen
        differs = {GROUPS[g].name for g in np.flatnonzero(dominant[a] != dominant[b])}
        assert differs == set(p["groups"]) == {g.name for g in GROUPS if PAIR_SCALES[p["kind"]](g)}
    assert {g.scale for g in GROUPS if PAIR_SCALES["fine"](g)} == {"small"}
    assert {g.name for g in GROUPS if PAIR_SCALES["coarse"](g)} == {"has_shape", "has_body_pattern"}
    assert len({tuple(r) for r in dominant}) == cfg.n_classes

    d = load_dataset(prepare_source(tmp_path / "raw", tmp_path / "prepared", dataclasses.asdict(cfg), progress=False))
    declared = d.meta["class_pairs"]
    assert [p["kind"] for p in declared] == ["fine", "coarse"]
    assert all(n in d.class_names for p in declared for n in p["classes"])
    counts = np.bincount(d.labels, minlength=d.n_classes)
    assert counts[d.unseen_classes].min() >= 5 and counts[d.seen_classes].max() <= 4
    with pytest.raises(DataError, match="twin pairs need"):
        design_classes(SyntheticConfig(**{**TINY_SYNTHETIC, "fine_pairs": 3}), np.random.default_rng(0))


def test_loader_maps_directory_order_and_allclasses_order(tiny_project):
    d = load_dataset(tiny_project / "data" / "prepared" / "synthetic")
    raw = tiny_project / "data" / "raw" / "synthetic"
    layout = cub.read_cub_layout(raw)
    # rows follow the sorted directory listing, not images.txt
    assert d.image_files == sorted(layout.image_files, key=lambda p: tuple(p.split("/", 1)))
    assert d.image_files != layout.image_files
    # labels index allclasses.txt: seen classes first, then unseen (as CUB's xlsa17 lists do)
    allclasses = (raw / "xlsa17" / "data" / XLSA17_NAME / "allclasses.txt").read_text().split()
    for row in (0, len(d.labels) // 2, len(d.labels) - 1):
        assert allclasses[d.labels[row]] == d.image_files[row].split("/")[0]
    assert list(d.seen_classes) == list(range(len(d.seen_classes)))
    att = read_att_splits(raw / "xlsa17" / "data" / XLSA17_NAME / "att_splits.mat")
    np.testing.assert_allclose(d.original_att, att.original_att)
    np.testing.assert_allclose(np.linalg.norm(d.att, axis=1), 1.0)


def _copy_raw(tiny_project, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(tiny_project / "data" / "raw" / "synthetic", raw)
    return raw, raw / "xlsa17" / "data" / XLSA17_NAME


def test_loader_rejects_a_class_order_mix_up_naming_the_file(tiny_project, tmp_path):
    raw, xl = _copy_raw(tiny_project, tmp_path)
    cont = raw / "CUB_200_2011" / "attributes" / "class_attribute_labels_continuous.txt"
    lines = cont.read_text().splitlines()
    lines[0], lines[1] = lines[1], lines[0]
    cont.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="original_att differs"):
        cub.prepare(raw, xl, tmp_path / "out", "synthetic")
    assert not (tmp_path / "out").exists(), "a failed prepare must leave nothing behind"


def test_loader_rejects_overlapping_locs(tiny_project, tmp_path):
    from scipy.io import loadmat

    from zsl_bench.data.xlsa17 import write_att_splits

    raw, xl = _copy_raw(tiny_project, tmp_path)
    m = read_att_splits(xl / "att_splits.mat")
    leaky = np.concatenate([m.trainval_loc, m.test_seen_loc[:3]])  # the v1-style trap: test_seen inside train
    write_att_splits(xl / "att_splits.mat", m.class_names, m.original_att, leaky, m.test_seen_loc, m.test_unseen_loc)
    assert "trainval_loc" in loadmat(xl / "att_splits.mat")
    with pytest.raises(DataError, match="overlap"):
        cub.prepare(raw, xl, tmp_path / "out", "synthetic")


def test_loader_reports_a_corrupt_split_file(tiny_project, tmp_path):
    raw, xl = _copy_raw(tiny_project, tmp_path)
    (xl / "att_splits.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataError, match="att_splits.mat"):
        cub.prepare(raw, xl, tmp_path / "out", "synthetic")


def test_loader_reports_wrong_sizes_against_published_numbers(tiny_project, tmp_path):
    raw, xl = _copy_raw(tiny_project, tmp_path)
    with pytest.raises(DataError, match="published"):
        cub.prepare(raw, xl, tmp_path / "out", "synthetic", expected=cub.SIZES)


def test_cub_metadata_matches_the_real_split_file(shared_metadata):
    """CUB's continuous class matrix, permuted into allclasses order, equals xlsa17 original_att."""
    folder = shared_metadata / "CUB"
    att = read_att_splits(folder / "att_splits.mat")
    classes = [line.split()[1] for line in (folder / "classes.txt").read_text().splitlines()]
    continuous = np.loadtxt(folder / "class_attribute_labels_continuous.txt")
    permuted = continuous[[classes.index(n) for n in att.class_names]]
    np.testing.assert_array_equal(permuted, att.original_att)
    assert att.version == "2.0"
    assert (len(att.trainval_loc), len(att.test_seen_loc), len(att.test_unseen_loc)) == (
        cub.SIZES.trainval, cub.SIZES.test_seen, cub.SIZES.test_unseen)
