"""The plugin contract: every registered method and variant obeys it, a third-party package can add a
method with one entry point, scoring cannot leak into training, and validation picks ignore test."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from zsl_bench.evaluator import Evaluator
from zsl_bench.io import ConfigError
from zsl_bench.method import FitContext, Method, TrainData
from zsl_bench.model_views import parameters
from zsl_bench import protocol
from zsl_bench.registry import all_method_names, get_method, register_method

REPO = Path(__file__).resolve().parents[1]
SHORT = {"epochs": 1, "batches_per_epoch": 2}   # applied to the methods that have these hyperparameters


@pytest.mark.parametrize("name", all_method_names())
def test_catalogue_every_method_and_variant_builds_fits_scores_and_round_trips(region_data, request, name):
    """Generated from the registry: a new method or variant is in this test without editing it. A method
    the CNN's store cannot serve (a ViT's tokens, CLIP's class text) runs on a tiny CLIP store instead."""
    from zsl_bench.runner import NotApplicable, check_applicable

    dataset, store = region_data
    cls = get_method(name)
    try:
        check_applicable(cls, store, cls.default_hparams("synthetic"))
    except NotApplicable:
        dataset, store = request.getfixturevalue("clip_data")[:2]
        check_applicable(cls, store, cls.default_hparams("synthetic"))
    cls.check_declarations()
    overrides = {k: v for k, v in SHORT.items() if k in cls.default_hparams("synthetic")}
    ev = Evaluator(dataset, store, cls, seed=0, search=False, device="cpu", progress=False, hparams=overrides)
    config = ev.configs[0]
    phase = protocol.test_phase(dataset)
    train = TrainData(x=ev.inputs(phase.train_rows), y=np.searchsorted(phase.train_classes,
                                                                       dataset.labels[phase.train_rows]),
                      semantics=ev.semantics(phase.train_classes))
    unseen = ev.semantics(phase.candidate_classes[~phase.is_seen_class])
    method = cls(config, ev.task, "cpu")
    ctx = FitContext(seed=0, device="cpu", progress=False, _on_checkpoint=lambda epoch: None, _unseen=unseen,
                     _declared_unseen=cls.uses_unseen_semantics)
    method.fit(train, ctx)
    rows = phase.eval_rows[:40]
    semantics = ev.semantics(phase.candidate_classes)
    scores = np.asarray(method.score(ev.inputs(rows), semantics))
    assert scores.shape == (len(rows), dataset.n_classes) and np.isfinite(scores).all()
    again = cls(config, ev.task, "cpu")
    again.load_state_dict(method.state_dict())
    np.testing.assert_allclose(again.score(ev.inputs(rows), semantics), scores, rtol=1e-5, atol=1e-5)
    counts = parameters(method)
    assert counts["learned"] <= counts["state_values"]
    assert counts["learned"] > 0 or not method.state_dict(), "a state without learned values"
    if cls.score_variants:
        by_variant = method.score_many(ev.inputs(rows), semantics, {"": {}, **cls.score_variants})
        np.testing.assert_allclose(by_variant[""], scores, rtol=1e-5, atol=1e-5)
    if "attention_maps" in cls.capabilities:
        maps = method.attention_maps(ev.inputs(rows[:3]))
        for m in maps.values():
            np.testing.assert_allclose(m.sum((1, 2)), 1.0, atol=1e-4)


class NearestAttributes(Method):
    """A test method: least squares from features to class attributes, cosine to each class."""
    device = "cpu"
    profiles = {"*": {"ridge": 1.0}}
    search_spaces = {"*": {"ridge": [0.1, 10.0]}}
    seen_cache_in_fit: list = []   # class-level on purpose: what fit found cached, for the leakage test

    def fit(self, train, ctx):
        x = np.asarray(train.x, dtype=np.float64)
        target = train.semantics.att[train.y]
        self.W = np.linalg.solve(x.T @ x + self.hparams["ridge"] * np.eye(x.shape[1]), x.T @ target)

    def score(self, x, semantics):
        p = np.asarray(x, dtype=np.float64) @ self.W
        p /= np.linalg.norm(p, axis=1, keepdims=True) + 1e-12
        return p @ semantics.att.T

    def state_dict(self):
        return {"W": self.W}

    def load_state_dict(self, state):
        self.W = np.asarray(state["W"])


class FeatureHoarder(NearestAttributes):
    """Tries to cache what `score` sees (evaluation features, unseen semantics) and train on it in later
    epochs: the evaluator scores a frozen copy, so the cache never reaches the model that trains."""
    profiles = {"*": {"ridge": 1.0, "epochs": 3}}
    search_spaces = {}

    def fit(self, train, ctx):
        for epoch in range(1, self.hparams["epochs"] + 1):
            cached = getattr(self, "cached_eval_x", None)
            FeatureHoarder.seen_cache_in_fit.append(cached is not None)
            x = np.asarray(train.x, dtype=np.float64)
            if cached is not None:   # what a leaking method would do: fit the evaluation images too
                x = np.concatenate([x, cached])
            target = train.semantics.att[train.y]
            target = np.concatenate([target, np.zeros((len(x) - len(target), target.shape[1]))])
            self.W = np.linalg.solve(x.T @ x + np.eye(x.shape[1]), x.T @ target)
            ctx.evaluate(epoch)

    def score(self, x, semantics):
        self.cached_eval_x = np.asarray(x, dtype=np.float64)
        return super().score(x, semantics)


def test_whatever_score_keeps_during_fit_cannot_reach_training(region_data):
    dataset, store = region_data
    register_method("test-hoarder")(FeatureHoarder)
    FeatureHoarder.seen_cache_in_fit.clear()
    Evaluator(dataset, store, FeatureHoarder, seed=0, search=False, progress=False).run()
    assert len(FeatureHoarder.seen_cache_in_fit) == 6          # 3 epochs × (validation + test)
    assert not any(FeatureHoarder.seen_cache_in_fit), "a cache made in score() reached fit()"


def test_val_selection_ignores_adversarial_test_scores(region_data, monkeypatch):
    """Test-phase scores are replaced by ones that make the *worst* validation choice the best on test:
    the `val` pick (config, epoch, γ and its validation numbers) does not move; `oracle` does."""
    dataset, store = region_data
    cls = get_method("ale")
    honest = Evaluator(dataset, store, cls, seed=0, progress=False, hparams={"epochs": 3}).run()
    val_pick = honest.selection["val"]
    worst = min(honest.validation_trace, key=lambda r: r["H"])

    class Adversary(cls):
        def score(self, x, semantics):
            scores = super().score(x, semantics)
            if len(semantics) == dataset.n_classes:   # the test phase scores every class
                is_worst = self.hparams == honest.configs[worst["config_id"]] and self._epoch == worst["epoch"]
                return scores if is_worst else -scores   # every other point is made worse than chance on test
            return scores

        def fit(self, train, ctx):
            evaluate = ctx.evaluate

            def tagged(epoch):
                self._epoch = epoch
                evaluate(epoch)
            ctx.evaluate = tagged
            super().fit(train, ctx)

    Adversary.name = "ale"
    attacked = Evaluator(dataset, store, Adversary, seed=0, progress=False, hparams={"epochs": 3}).run()
    for key in ("config_id", "epoch", "validation"):
        assert attacked.selection["val"][key] == val_pick[key], key
    oracle = attacked.selection["oracle"]["points"]["H"]
    assert (oracle["config_id"], oracle["epoch"]) == (worst["config_id"], worst["epoch"])
    assert (worst["config_id"], worst["epoch"]) != (val_pick["config_id"], val_pick["epoch"])


PLUGIN = '''
import numpy as np
from zsl_bench.method import Method


class MeanAttributes(Method):
    """Third-party test method: each class's features predicted from its attributes by the seen-class
    mean feature direction (least squares), cosine to the image."""
    device = "cpu"
    paper = "a third-party test plugin"
    profiles = {"*": {"ridge": 1.0}}

    def fit(self, train, ctx):
        x = np.asarray(train.x, dtype=np.float64)
        a = train.semantics.att[train.y]
        self.W = np.linalg.solve(a.T @ a + self.hparams["ridge"] * np.eye(a.shape[1]), a.T @ x)

    def score(self, x, semantics):
        protos = semantics.att @ self.W
        protos /= np.linalg.norm(protos, axis=1, keepdims=True) + 1e-12
        x = np.asarray(x, dtype=np.float64)
        return (x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)) @ protos.T

    def state_dict(self):
        return {"W": self.W}

    def load_state_dict(self, state):
        self.W = np.asarray(state["W"])
'''


@pytest.fixture
def plugin_site(tmp_path):
    """A folder laid out as pip installs a package: the module and its .dist-info with one entry point."""
    site = tmp_path / "site"
    (site / "zslb_toy_plugin").mkdir(parents=True)
    (site / "zslb_toy_plugin" / "__init__.py").write_text(PLUGIN)
    (site / "zslb_toy_plugin" / "published.json").write_text(
        '{"CUB": {"T1": 1.0, "U": null, "S": null, "H": null, "source": "made up for a test"}}\n')
    info = site / "zslb_toy_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zslb-toy-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[zsl_bench.methods]\nmeanatt = zslb_toy_plugin:MeanAttributes\n")
    return site


def test_a_third_party_package_adds_a_method_with_one_entry_point(plugin_site, project_copy):
    import os

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_site), os.environ.get("PYTHONPATH", "")])}
    listed = subprocess.run([sys.executable, "-m", "zsl_bench.cli", "methods"], capture_output=True, text=True,
                            env=env, cwd=project_copy)
    assert listed.returncode == 0 and "meanatt" in listed.stdout and "a third-party test plugin" in listed.stdout
    import yaml

    params = yaml.safe_load((project_copy / "params.yaml").read_text())
    params["train"]["methods"], params["train"]["seeds"] = ["meanatt"], [0]
    params["methods"]["meanatt"] = {}
    (project_copy / "params.yaml").write_text(yaml.safe_dump(params))
    ran = subprocess.run([sys.executable, "-m", "zsl_bench_pipelines.train", "synthetic", "meanatt", "0"],
                         capture_output=True, text=True, env=env, cwd=project_copy)
    assert ran.returncode == 0, ran.stderr
    from zsl_bench.records import find_records

    (record,) = find_records(project_copy / "runs")
    assert record.method == "meanatt" and record["method_info"]["paper"] == "a third-party test plugin"
    assert 0.0 <= record.metrics("val")["T1"] <= 100.0
    compared = subprocess.run([sys.executable, "-m", "zsl_bench.cli", "compare", "meanatt"], capture_output=True,
                              text=True, env=env, cwd=project_copy)
    assert compared.returncode == 0 and "meanatt" in compared.stdout, compared.stderr


def test_core_names_no_method():
    """`zsl_bench/` holds no method name in executable code: no identifier and no string that is a method
    name (a key, a comparison, a list of names). Comments, docstrings and prose in messages and help text
    may mention methods as examples or as the origin of a file format."""
    import ast
    import io
    import re
    import tokenize

    from zsl_bench.registry import available_methods

    alternatives = "|".join(sorted({m.split(".")[0] for m in available_methods()}))   # every method shipped
    assert len(alternatives.split("|")) >= 12
    names = re.compile(rf"\b({alternatives})\b", re.I)
    found = []
    for path in sorted((REPO / "zsl_bench").rglob("*.py")):
        source = path.read_text()
        docstrings = {(n.body[0].lineno, n.body[0].col_offset) for n in ast.walk(ast.parse(source))
                      if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef)) and n.body
                      and isinstance(n.body[0], ast.Expr) and isinstance(getattr(n.body[0], "value", None), ast.Constant)
                      and isinstance(n.body[0].value.value, str)}
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE) or tok.start in docstrings:
                continue
            text = tok.string
            if tok.type == tokenize.STRING:
                text = text.lstrip("rbfuRBFU").strip("'\"")
                if not re.fullmatch(rf"({alternatives})(\.[\w-]+)?", text, re.I):
                    continue
            if names.search(text):
                found.append(f"{path.relative_to(REPO)}:{tok.start[0]}: {tok.string[:60]}")
    assert not found, "method names in core code:\n" + "\n".join(found)


def test_unknown_dataset_profile_and_hparam_fail_before_any_work(project_copy):
    import yaml

    from zsl_bench import stages
    from zsl_bench.params import load_params
    from zsl_bench.paths import ProjectPaths

    params = yaml.safe_load((project_copy / "params.yaml").read_text())
    params["methods"]["ale"] = {"hparams": {"synthetic": {"learning_rate": 0.1}}}
    (project_copy / "params.yaml").write_text(yaml.safe_dump(params))
    paths = ProjectPaths(project_copy)
    checked = load_params(paths)   # the file's structure is fine; the method's settings are the train stage's check
    with pytest.raises(ConfigError, match=r"methods.ale.hparams.synthetic: method ale has no hyperparameter "
                                          r"'learning_rate'; its hyperparameters: batch_size, epochs, lr"):
        stages.train("synthetic", checked, paths)
    assert not (project_copy / "runs").exists()


class WithZSLScorer(NearestAttributes):
    """GZSL scores from the attribute regression; ZSL scores from a deliberately different rule (the
    unseen class *least* like the prediction), so that T1 can only match if it was read from score_zsl."""
    capabilities = frozenset({"zsl_scorer"})
    profiles = {"*": {"ridge": 1.0}}
    search_spaces = {}

    def score_zsl(self, x, unseen):
        return -np.asarray(x, dtype=np.float64) @ self.W @ unseen.att.T


def test_a_zsl_scorer_gives_t1_and_every_reader_agrees(region_data, tmp_path):
    """T1 comes from `score_zsl` (stored as scores_zsl_*), U/S/H/AUSUC from `score`; the records, the
    bootstrap and the independent recompute script all read T1 from the same matrix."""
    from zsl_bench.bootstrap import TestScores, resampled_metrics
    from zsl_bench.metrics import zsl_top1
    from zsl_bench.records import Predictions

    dataset, store = region_data
    register_method("test-zsl-scorer")(WithZSLScorer)
    out = Evaluator(dataset, store, WithZSLScorer, seed=0, search=False, progress=False).run()
    p = out.predictions
    seen = p["seen_class_mask"]
    t1 = zsl_top1(p["scores_zsl_val"], p["labels"], seen)
    assert out.selection["val"]["metrics"]["T1"] == pytest.approx(t1)
    assert t1 != pytest.approx(zsl_top1(p["scores_val"], p["labels"], seen)), "the two rules should differ here"
    np.savez(tmp_path / "predictions.npz", **p)
    record = {"selection": out.selection, "traces": {"validation": out.validation_trace, "test": out.test_trace},
              "config": {"selection_metric": "H", "folds": [1]}, "method_info": {"paper_rule": None}}
    (tmp_path / "record.json").write_text(json.dumps(record))   # which checkpoint each array holds
    loaded = Predictions.load(tmp_path / "predictions.npz")
    ts = TestScores.load(tmp_path / "predictions.npz", "val")
    assert resampled_metrics(ts, np.ones((1, len(loaded.labels))))["T1"][0] == pytest.approx(t1)
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import recompute_metrics
    finally:
        sys.path.pop(0)
    assert recompute_metrics.recompute(tmp_path)["val.T1"] == pytest.approx(t1)
