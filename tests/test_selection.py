"""The selection policies and calibrations (zsl_bench/policies.py, zsl_bench/traces.py) and the protocol rules they rest on."""
from __future__ import annotations


import numpy as np
import pytest

from zsl_bench.evaluator import Evaluator, random_configs, search_mode
from zsl_bench.io import ConfigError
from zsl_bench.method import Method, PaperRule
from zsl_bench.metrics import gzsl_accuracies, seen_unseen_curve
from zsl_bench.protocol import resolve_folds, spread_standardise
from zsl_bench.policies import (POLICIES, SELECTION_POLICIES, Plan, RunContext, SelectionPolicy,
                                 metrics_from_traces, validation_choice, fixed_point)


class Ridge(Method):
    """Attributes regressed from features; iterative in name only (three checkpoints of a shrinking ridge),
    so selection has epochs to choose from. Declares a fixed-offset paper rule like TransZero's."""
    paper = "test"
    device = "cpu"
    default_calibration_gamma = 0.05
    paper_rule = PaperRule(checkpoint="test", calibration="fixed", source="tests")
    profiles = {"*": {"ridge": 1.0}}
    search_spaces = {"*": {"ridge": [0.1, 10.0]}}
    refit_scale = (1.0, 0.0)     # (a, b): what the refit on trainval does to every score

    def fit(self, train, ctx):
        x, a = np.asarray(train.x, dtype=np.float64), train.semantics.att[train.y]
        self.refit = len(train.semantics) > self.n_validation_train_classes   # trainval has more classes
        for epoch in (1, 2, 3):
            lam = self.hparams["ridge"] * 10.0 ** (1 - epoch)
            self.W = np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ a)
            ctx.evaluate(epoch)

    def score(self, x, semantics):
        s = np.asarray(x, dtype=np.float64) @ self.W @ semantics.att.T
        a, b = self.refit_scale if self.refit else (1.0, 0.0)
        return a * s + b

    def state_dict(self):
        return {"W": self.W}

    def load_state_dict(self, state):
        self.W = np.asarray(state["W"])


@pytest.fixture(scope="module")
def data(tiny_project):
    from zsl_bench.data.dataset import load_dataset
    from zsl_bench.features import FeatureStore
    from zsl_bench.paths import ProjectPaths

    paths = ProjectPaths(tiny_project)
    d = load_dataset(paths.prepared("synthetic"))
    Ridge.n_validation_train_classes = len(d.fold_classes(1)[0])
    return d, FeatureStore(paths.features("synthetic", "resnet10t"))


def run(data, cls=Ridge, **kw):
    d, store = data
    return Evaluator(d, store, cls, seed=0, progress=False, **kw).run()


def test_spread_standardise_removes_any_positive_affine_map():
    s = np.random.default_rng(0).normal(size=(20, 7))
    np.testing.assert_allclose(spread_standardise(3.7 * s - 12.0), spread_standardise(s), atol=1e-12)
    assert np.array_equal(np.argsort(spread_standardise(s), axis=1), np.argsort(s, axis=1))
    assert np.all(np.isfinite(spread_standardise(np.ones((2, 4)))))   # a constant row stays finite


@pytest.mark.parametrize("a,b", [(7.3, -40.0), (0.02, 3.0)])
def test_val_numbers_do_not_move_when_the_refit_rescales_its_scores(data, a, b):
    """The headline γ is chosen on validation and applied to the refit model: in units of each image's score
    spread it means the same whatever a > 0 and b the refit applies; in raw units (the old rule) it does not."""
    base = run(data)
    scaled_cls = type("ScaledRidge", (Ridge,), {"refit_scale": (a, b)})
    scaled = run(data, scaled_cls)
    for k in ("T1", "U", "S", "H", "AUSUC", "gamma"):
        assert scaled.selection["val"]["metrics"][k] == pytest.approx(base.selection["val"]["metrics"][k], abs=1e-9), k
    # AUSUC, oracle and T1 never depended on the scale; the raw-unit γ of the old rule does.
    assert scaled.selection["oracle"]["metrics"]["H"] == pytest.approx(base.selection["oracle"]["metrics"]["H"])
    p = scaled.predictions
    raw_rule = gzsl_accuracies(p["scores_val"], p["labels"], p["seen_class_mask"], p["gamma_val"]).H
    assert raw_rule != pytest.approx(base.selection["val"]["metrics"]["H"], abs=1e-3)


def record_of(out, rule=Ridge.paper_rule) -> dict:
    """The parts of a record.json that policies read, from an evaluator output."""
    import dataclasses

    return {"traces": {"validation": out.validation_trace, "test": out.test_trace},
            "config": {"selection_metric": "H", "folds": [1]}, "selection": out.selection,
            "method_info": {"paper_rule": dataclasses.asdict(rule) if rule else None}}


def test_every_policy_is_computed_from_the_traces_alone(data):
    """What the evaluator recorded for each policy is what the policy reads off the traces, with no model or
    score; and the scores it kept (predictions) give the same numbers."""
    from zsl_bench.records import Predictions

    out = run(data)
    ctx = RunContext(validation=out.validation_trace, selection_metric="H", folds=(1,), paper_rule=Ridge.paper_rule)
    assert set(out.selection) == set(SELECTION_POLICIES)
    for name, policy in POLICIES.items():
        from_traces = metrics_from_traces(policy, ctx, out.test_trace)
        assert from_traces["metrics"] == out.selection[name]["metrics"], name
        assert from_traces["points"] == out.selection[name]["points"], name
    p = Predictions(**{k: out.predictions[k] for k in ("labels", "class_ids", "class_names", "seen_class_mask",
                                                        "unseen_sample_mask", "image_rows")}, arrays=out.predictions,
                    record=record_of(out))
    for name in SELECTION_POLICIES:
        scores, gamma = p.scores(name, "H")
        assert gzsl_accuracies(scores, p.labels, p.seen_class_mask, gamma).H == pytest.approx(
            out.selection[name]["metrics"]["H"]), name
        assert seen_unseen_curve(p.scores(name, "AUSUC")[0], p.labels, p.seen_class_mask).auc() == pytest.approx(
            out.selection[name]["metrics"]["AUSUC"]), name


def test_paper_policy_follows_the_declared_rule(data):
    """A fixed-offset, test-selected rule: best test H at the method's default γ over the defaults' checkpoints,
    best T1 separately; never another configuration of the grid."""
    out = run(data)
    defaults = [r for r in out.test_trace if r["config_id"] == 0]
    paper = out.selection["paper"]
    assert paper["metrics"]["H"] == max(r["H_fixed"] for r in defaults)
    assert paper["metrics"]["gamma"] == Ridge.default_calibration_gamma
    assert paper["metrics"]["T1"] == max(r["T1"] for r in defaults)
    assert {p["config_id"] for p in paper["points"].values()} == {0}
    for policy in ("val", "paper", "last"):   # oracle bounds every policy, whatever space its γ is in
        for k in ("T1", "H", "AUSUC"):
            assert out.selection["oracle"]["metrics"][k] >= out.selection[policy]["metrics"][k] - 1e-12, (policy, k)


def test_a_new_policy_needs_no_retraining(data):
    """A policy added after the runs (choose on validation T1) reads the recorded traces and gives what a run
    selecting on T1 gives."""
    class ValByT1(SelectionPolicy):
        name = "val-T1"

        def plan(self, ctx):
            c = validation_choice(ctx, "T1")
            point = fixed_point(c["config_id"], c["epoch"])
            return Plan(point, point, point, "val", "validation T1")

    out = run(data)
    ctx = RunContext(validation=out.validation_trace, selection_metric="H", folds=(1,), paper_rule=None)
    offline = metrics_from_traces(ValByT1(), ctx, out.test_trace)
    retrained = run(data, selection_metric="T1").selection["val"]
    for k in ("T1", "U", "S", "H", "AUSUC", "gamma"):
        assert offline["metrics"][k] == pytest.approx(retrained["metrics"][k]), k
    assert POLICIES["paper"].plan(ctx) is None   # a method without a paper rule has no paper numbers


def test_grid_gamma_is_the_brute_force_sweep():
    rng = np.random.default_rng(1)
    s, y, seen = rng.normal(size=(150, 9)), rng.integers(0, 9, 150), np.arange(9) < 5
    curve = seen_unseen_curve(s, y, seen)
    grid = np.round(np.arange(-600, 601) * 0.01, 2)
    h = np.array([gzsl_accuracies(s, y, seen, g).H for g in grid])
    best = grid[np.isclose(h, h.max(), atol=1e-12)]
    assert curve.best_gamma_on_grid(0.01) == pytest.approx(best[np.argmin(np.abs(best))])


def test_random_search_draws_each_hyperparameter_from_its_own_stream():
    default = {"lr": 1.0, "wd": 0.0, "depth": 2}
    space = {"lr": [0.1, 0.3, 1.0, 3.0], "wd": [0.0, 1e-4, 1e-3]}
    a = random_configs(default, space, 6)
    assert a == random_configs(default, space, 6) and a[0] == default
    b = random_configs(default, {**space, "depth": [1, 2, 3, 4]}, 6)
    assert [c["lr"] for c in a[1:]] == [c["lr"] for c in b[1:len(a)]]   # adding depth moves no lr draw
    assert search_mode("random:8") == "random:8" and search_mode(False) == "none"
    with pytest.raises(ConfigError, match="grid, none or random:N"):
        search_mode("random:0")


def test_folds_auto_refuses_folds_the_backbone_trained_on(data):
    d, store = data
    spec = store.index["backbone_spec"]
    assert spec["source"] == "train_on_seen"
    assert resolve_folds("auto", d, spec) == (1,)
    with pytest.raises(ConfigError, match="fold 2 would leak"):
        resolve_folds([1, 2], d, spec)
    assert resolve_folds("auto", d, {"source": "pretrained"}) == tuple(d.folds)


def test_several_folds_average_before_choosing(data):
    """With folds 1–3 (pretend the backbone never saw them) each checkpoint's validation H is the best mean
    over folds at one shared γ: never above the mean of the folds' own best H, and equal with one fold."""
    out = run(data, folds=(1, 2, 3))
    per_fold = {}
    for r in out.validation_folds:
        per_fold.setdefault((r["config_id"], r["epoch"]), []).append(r)
    for r in out.validation_trace:
        rows = per_fold[(r["config_id"], r["epoch"])]
        assert r["folds"] == 3 and len(rows) == 3
        assert r["T1"] == pytest.approx(np.mean([x["T1"] for x in rows]))
        assert r["H"] <= np.mean([x["H"] for x in rows]) + 1e-12
    chosen = max(out.validation_trace, key=lambda r: r["H"])
    assert (out.selection["val"]["config_id"], out.selection["val"]["epoch"]) == (chosen["config_id"], chosen["epoch"])
    assert out.selection["val"]["metrics"]["gamma"] == chosen["gamma"]
    one = run(data, folds=(2,))
    fold2 = [r for r in out.validation_folds if r["fold"] == 2]
    assert [r["H"] for r in one.validation_trace] == pytest.approx([r["H"] for r in fold2])


def test_every_configuration_shares_the_fit_streams_and_only_a_replicate_draws_anew(data):
    """Common random numbers: each grid configuration (and so each ablation variant) of a phase is fitted from
    the same seed, so validation compares configurations, not draws; an A/A replicate gets other seeds."""
    seen = []

    class SeedRidge(Ridge):
        def fit(self, train, ctx):
            seen.append((self.hparams["ridge"], ctx.seed))
            super().fit(train, ctx)

    def seeds_by_phase(**kw):
        seen.clear()
        run(data, SeedRidge, search="grid", **kw)
        return list(seen)

    base = seeds_by_phase()
    configs = {r for r, _ in base}
    assert configs >= {0.1, 10.0}
    validation = {s for _, s in base[:len(configs)]}   # every grid point on fold 1: one stream
    assert len(validation) == 1
    assert len({s for _, s in base}) >= 2, "validation and the refit on trainval draw their own streams"
    again = seeds_by_phase(replicate=1)
    assert not {s for _, s in base} & {s for _, s in again}
