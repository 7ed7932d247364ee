"""Report figures: the data each figure draws, the rebuilt models and their attention maps, the PNGs."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from zsl_bench.protocol import spread_standardise
from zsl_bench import figures, model_views
from zsl_bench.map_families import attribute_weighted_attention
from zsl_bench.figures import data as fdata, plots, style
from zsl_bench.metrics import seen_unseen_curve, zsl_top1
from zsl_bench.records import RunRecord

REGION_METHODS = ("dazle", "transzero", "mgmrn")


@pytest.fixture(scope="module")
def runs(region_project, tmp_path_factory):
    """(paths, records): the tiny region project with runs of eszsl (seeds 0, 1) and of each region
    method (seed 0, 1 epoch), defaults only."""
    from zsl_bench import stages
    from zsl_bench.params import load_params
    from zsl_bench.paths import ProjectPaths
    from zsl_bench.records import find_records

    root = tmp_path_factory.mktemp("figures") / "project"
    shutil.copytree(region_project, root, symlinks=True)
    paths = ProjectPaths(root)
    params = load_params(paths)
    params["train"]["search"] = False
    for name in REGION_METHODS:   # one epoch each, set the way a user sets it (params.yaml's methods section)
        params["methods"][name] = {"hparams": {"synthetic": {"epochs": 1}}}
    for method, seed in (("eszsl", 0), ("eszsl", 1), *((m, 0) for m in REGION_METHODS)):
        stages.train_run("synthetic", method, seed, params, paths, progress=False)
    # as configured_records keeps them: a method's own records (not Mg-MRN's per-branch score variants)
    records = [r for r in find_records(paths.runs) if "score_variant_of" not in r]
    assert sorted(r["method"] for r in records) == sorted(["eszsl", "eszsl", *REGION_METHODS])
    return paths, records


def by_method(records, name):
    return [r for r in records if r["method"] == name]


# --- data behind the figures --------------------------------------------------------------------------------

def test_curve_data_is_the_metrics_curve_and_the_point_is_the_recorded_operating_point(runs):
    _, records = runs
    for r in records:
        pred = r.predictions()
        d = fdata.seen_unseen_data(pred)
        curve = seen_unseen_curve(spread_standardise(pred.arrays["scores_val"]), pred.labels, pred.seen_class_mask)
        np.testing.assert_array_equal(d["U"], 100 * curve.U)
        np.testing.assert_array_equal(d["S"], 100 * curve.S)
        m = r["selection"]["val"]["metrics"]
        assert d["AUSUC"] == pytest.approx(100 * m["AUSUC"])
        assert (d["point_U"], d["point_S"], d["gamma"]) == pytest.approx((100 * m["U"], 100 * m["S"], m["gamma"]))
        on_curve = np.isclose(d["U"], d["point_U"]) & np.isclose(d["S"], d["point_S"])
        assert on_curve.any(), f"{r['method']}: the val-γ point is a point of the curve"


def test_unseen_per_class_accuracy_is_the_zsl_setting(runs):
    _, records = runs
    for r in records:
        pred = r.predictions()
        ids, names, acc = fdata.unseen_per_class_accuracy(pred)
        unseen_cols = np.flatnonzero(~pred.seen_class_mask)
        np.testing.assert_array_equal(ids, pred.class_ids[unseen_cols])
        assert list(names) == list(pred.class_names[unseen_cols])
        assert np.nanmean(acc) == pytest.approx(zsl_top1(pred.arrays["scores_val"], pred.labels, pred.seen_class_mask))
        assert np.nanmean(acc) == pytest.approx(r["selection"]["val"]["metrics"]["T1"])


def rebuild_method(record, paths):
    """The run's val-selected model from state.pt (a test's own check of what was saved at train time)."""
    from zsl_bench.data.dataset import load_dataset
    from zsl_bench.evaluator import Evaluator
    from zsl_bench.features import FeatureStore
    from zsl_bench.registry import get_method

    cls = get_method(record["method"])
    evaluator = Evaluator(load_dataset(paths.prepared("synthetic")), FeatureStore(paths.features("synthetic", "resnet10t")), cls,
                          seed=0, search=False, device="cpu", progress=False)
    method = cls(record["selected_configs"]["val"], evaluator.task, "cpu")
    method.load_state_dict(torch.load(Path(record["_folder"]) / "state.pt", weights_only=False))
    return method, evaluator


def test_parameter_counts_are_the_values_in_the_fitted_state(runs):
    """Counted at train time into record["model"]["parameters"]; the cost figure reads only that."""
    paths, records = runs
    for r in by_method(records, "eszsl"):
        with np.load(Path(r["_folder"]) / "state.npz") as f:
            size = f["V"].size
        assert r["model"]["parameters"] == {"state_values": size, "learned": size, "fixed": []}
    for name in REGION_METHODS:
        r = by_method(records, name)[0]
        state = torch.load(Path(r["_folder"]) / "state.pt", weights_only=False)
        counts = r["model"]["parameters"]
        assert counts["state_values"] == sum(v.numel() for v in state.values())
        method, _ = rebuild_method(r, paths)
        assert counts["learned"] == sum(p.numel() for p in method.net.parameters() if p.requires_grad)
        assert counts["learned"] == counts["state_values"] - sum(state[k].numel() for k in counts["fixed"])
        # DAZLE and TransZero train their word vectors; Mg-MRN keeps them fixed (a buffer)
        assert counts["fixed"] == (["head.w2v"] if name == "mgmrn" else []), name


def test_rebuilt_models_reproduce_the_recorded_val_scores_and_views(runs):
    """state.pt + hparams.val + the evaluator's Task and inputs give back the run's own test scores and the
    attention maps views.npz saved at train time."""
    paths, records = runs
    for name in REGION_METHODS:
        r = by_method(records, name)[0]
        pred = r.predictions()
        method, evaluator = rebuild_method(r, paths)
        scores = method.score(evaluator.inputs(pred.image_rows), evaluator.semantics(pred.class_ids))
        np.testing.assert_allclose(scores, pred.arrays["scores_val"], rtol=1e-4, atol=1e-4, err_msg=name)
        views = r.views()
        maps = method.attention_maps(evaluator.inputs(views["rows"]), views["weights"])
        for key, m in zip(views["map_names"], views["maps"]):
            np.testing.assert_allclose(maps[str(key)], m, rtol=1e-4, atol=1e-6, err_msg=f"{name} {key}")


def test_attention_images_are_a_fixed_choice_of_distinct_unseen_classes(runs):
    _, records = runs
    chosen = [model_views.attention_images((p := r.predictions()).labels, p.unseen_sample_mask, p.image_rows)
              for r in records]
    pred = records[0].predictions()
    first = chosen[0]
    assert len(first) == 4 and all(np.array_equal(c, first) for c in chosen), "same images for every run"
    assert pred.unseen_sample_mask[first].all()
    assert len(set(pred.labels[first])) == 4
    unseen = np.flatnonzero(pred.unseen_sample_mask)
    for pos in first:   # the first test image of its class in dataset row order
        same = unseen[pred.labels[unseen] == pred.labels[pos]]
        assert pred.image_rows[pos] == pred.image_rows[same].min()
    for name in REGION_METHODS:   # the saved views are of those images
        r = by_method(records, name)[0]
        assert np.array_equal(r.views()["rows"], pred.image_rows[first]), name


def test_attention_maps_have_the_grid_shape_and_are_distributions_over_regions(runs):
    paths, records = runs
    from zsl_bench.features import FeatureStore

    grid = FeatureStore(paths.features("synthetic", "resnet10t")).shape("layer4")[2:]
    for name in REGION_METHODS:
        r = by_method(records, name)[0]
        data = {**fdata.attention_data(r), "weights": r.views()["weights"]}
        expected = {"dazle": {"attention"}, "transzero": {"decoder attention"},
                    "mgmrn": {"fine (layer2)", "mid (layer3)", "coarse (layer4)"}}[name]
        assert set(data["maps"]) == expected
        for key, m in data["maps"].items():
            assert m.shape == (4, *grid), (name, key)
            assert (m >= 0).all(), (name, key)
            np.testing.assert_allclose(m.sum((1, 2)), 1.0, atol=1e-5, err_msg=f"{name} {key}")
        assert data["images"].shape == (4, 64, 64, 3) and data["images"].dtype == np.uint8
        np.testing.assert_allclose(data["weights"].sum(1), 1.0)
        assert ((data["weights"] > 0).sum(1) <= model_views.TOP_ATTRIBUTES).all()


def test_one_attribute_weight_gives_that_attributes_own_attention_cell_by_cell(runs):
    """The hook's map under a one-hot weight is the network's own attention row, reshaped row-major
    onto the grid (Mg-MRN: own and fused token blocks added)."""
    paths, records = runs
    for name in REGION_METHODS:
        r = by_method(records, name)[0]
        method, evaluator = rebuild_method(r, paths)
        rows = r.predictions().image_rows[:3]
        x = evaluator.inputs(rows)
        n_attr = method.task.n_attributes
        i = 5
        onehot = np.zeros((3, n_attr))
        onehot[:, i] = 1.0
        maps = method.attention_maps(x, onehot)
        with torch.no_grad():
            if name == "dazle":
                raw = {"attention": method.net(method.tensor(x.read(np.arange(3))[0]),
                                               method.tensor(np.ones((1, n_attr))))[1]}
            elif name == "transzero":
                raw = {"decoder attention": method.net.attribute_scores(method.tensor(x.read(np.arange(3))[0]))[1]}
            else:
                from zsl_bench_methods.mgmrn import BRANCH_NAMES

                _, att = method.net["head"](method.inputs(x, np.arange(3)))
                raw = {BRANCH_NAMES[k]: a for k, a in att.items()}
        for key, a in raw.items():
            h, w = maps[key].shape[1:]
            expected = a[:, i].numpy().reshape(3, -1, h, w).sum(1)
            np.testing.assert_allclose(maps[key], expected, rtol=1e-5, atol=1e-7, err_msg=f"{name} {key}")
        uniform = method.attention_maps(x)   # no weights: the mean over attributes
        for key, a in raw.items():
            h, w = uniform[key].shape[1:]
            np.testing.assert_allclose(uniform[key], a.numpy().mean(1).reshape(3, -1, h, w).sum(1), rtol=1e-5,
                                       atol=1e-7)


def test_attribute_weighted_attention_and_class_weights():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 2 * 6))
    attention = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)   # two token blocks on a 2×3 grid
    weights = np.array([[1.0, 0.0, 3.0], [0.0, 2.0, 0.0]])
    out = attribute_weighted_attention(attention, weights, (2, 3))
    assert out.shape == (2, 2, 3)
    np.testing.assert_allclose(out.sum((1, 2)), 1.0)
    expected0 = (0.25 * attention[0, 0] + 0.75 * attention[0, 2]).reshape(2, 2, 3).sum(0)
    np.testing.assert_allclose(out[0], expected0)
    np.testing.assert_allclose(out[1], attention[1, 1].reshape(2, 2, 3).sum(0))
    with pytest.raises(ValueError, match="do not tile"):
        attribute_weighted_attention(attention, weights, (5, 5))
    with pytest.raises(ValueError, match="attribute weights"):
        attribute_weighted_attention(attention, weights[:, :2], (2, 3))

    att = np.array([[0.1, 0.9, -1.0, 0.5, 0.0], [-1.0, -1.0, -1.0, -1.0, -1.0]])
    w = model_views.class_attribute_weights(att, top_k=2)
    np.testing.assert_allclose(w[0], [0, 0.9 / 1.4, 0, 0.5 / 1.4, 0])
    np.testing.assert_allclose(w[1], 0.2), "a class without positive attributes: uniform"


def test_short_class_names():
    assert fdata.short_class_name("001.Black_footed_Albatross") == "Black footed Albatross"
    assert fdata.short_class_name("antelope") == "antelope"
    long = fdata.short_class_name("123.A_very_long_class_name_that_goes_on_and_on", max_len=20)
    assert len(long) == 20 and long.endswith("…")


# --- the PNGs -------------------------------------------------------------------------------------------

def png(path: Path):
    from PIL import Image

    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.format, im.size, np.asarray(im.convert("L"))


def test_write_figures_writes_every_figure_as_a_valid_png_of_its_size(runs, tmp_path):
    paths, records = runs
    written = figures.write_figures(records, tmp_path / "reports", progress=False)
    folder = tmp_path / "reports" / "figures"
    n_unseen = len(fdata.unseen_per_class_accuracy(records[0].predictions())[0])
    labels, ns = fdata.curve_legend(fdata.group_records(records)["synthetic/resnet10t"])
    assert ns == [1, 2] and labels["eszsl"].startswith("eszsl — AUSUC ") and labels["eszsl"].endswith("(n = 2)")
    expected = {
        "synthetic-resnet10t_seen_unseen_curves.png": style.curve_figsize(list(labels.values())),
        "synthetic-resnet10t_unseen_per_class_accuracy.png": style.per_class_figsize(n_unseen),
        "synthetic-resnet10t_accuracy_vs_cost.png": plots.COST_SIZE,
        "synthetic-resnet10t_attention_dazle.png": style.attention_figsize(1),
        "synthetic-resnet10t_attention_transzero.png": style.attention_figsize(1),
        "synthetic-resnet10t_attention_mgmrn.png": style.attention_figsize(3),
    }
    assert {p.name for p in written} == set(expected) and all(p.parent == folder for p in written)
    for name, size in expected.items():
        fmt, pixels, grey = png(folder / name)
        assert fmt == "PNG" and pixels == style.pixels(size), name
        assert grey.std() > 10, f"{name}: not a blank image"
        assert (folder / name).stat().st_size < 1_500_000, name
    assert not list(folder.glob(".*")), "no temporary files left"


def test_figures_without_region_runs_or_predictions_are_skipped_with_a_reason(runs, tmp_path, capsys):
    paths, records = runs
    eszsl = by_method(records, "eszsl")
    no_predictions = tmp_path / "copy"
    shutil.copytree(eszsl[1]["_folder"], no_predictions)
    (no_predictions / "predictions.npz").unlink()
    broken = [eszsl[0], RunRecord.read(no_predictions)]
    written = figures.write_figures(broken, tmp_path, progress=False)
    assert sorted(p.name for p in written) == ["synthetic-resnet10t_accuracy_vs_cost.png", "synthetic-resnet10t_seen_unseen_curves.png",
                                              "synthetic-resnet10t_unseen_per_class_accuracy.png"]
    out = capsys.readouterr().out
    assert "skipped synthetic/resnet10t attention figures: no run of a method that declares attention maps" in out
    assert "runs of eszsl in the prediction figures: no predictions.npz" in out


def test_per_class_figure_with_many_classes_draws_markers(runs, tmp_path, monkeypatch):
    _, records = runs
    monkeypatch.setattr(plots, "BAR_LIMIT", 0)
    groups = fdata.group_records(records)["synthetic/resnet10t"]
    with __import__("matplotlib").rc_context(style.FONT):
        path = plots.per_class_figure("synthetic", groups, style.colours(list(groups)), tmp_path / "m.png")
    n_unseen = len(fdata.unseen_per_class_accuracy(records[0].predictions())[0])
    assert png(path)[1] == style.pixels(style.per_class_figsize(n_unseen))
