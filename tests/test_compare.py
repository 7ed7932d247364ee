"""`zsl-bench compare`: bootstrap intervals, published numbers, empty cells, formats, MLflow = records."""
import csv
import io
import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest

from zsl_bench import bootstrap, metrics
from zsl_bench.compare import RENDERERS, compare
from zsl_bench.params import load_params
from zsl_bench.paths import ProjectPaths
from zsl_bench.protocol import TABLE_METRICS
from zsl_bench.policies import SELECTION_POLICIES
from zsl_bench.run_results import RunResult, from_mlflow, load_results


def _scores(rng, n_classes=12, n_seen=8, per_class=15):
    labels = np.repeat(np.arange(n_classes), per_class)
    seen = np.arange(n_classes) < n_seen
    scores = rng.normal(size=(len(labels), n_classes))
    scores[np.arange(len(labels)), labels] += 1.5
    return scores, labels, seen


def _test_scores(scores, labels, seen, gamma=0.3):
    return bootstrap.TestScores(labels=labels, seen_class_mask=seen, image_rows=np.arange(len(labels)),
                                t1_scores=scores, gzsl_scores=scores, gamma=gamma, ausuc_scores=scores)


def test_multiplicities_of_one_give_exactly_the_metrics_module():
    scores, labels, seen = _scores(np.random.default_rng(0))
    got = bootstrap.resampled_metrics(_test_scores(scores, labels, seen), np.ones((1, len(labels))))
    g = metrics.gzsl_accuracies(scores, labels, seen, 0.3)
    assert got["T1"][0] == pytest.approx(metrics.zsl_top1(scores, labels, seen), abs=1e-12)
    assert (got["U"][0], got["S"][0], got["H"][0]) == pytest.approx((g.U, g.S, g.H), abs=1e-12)
    assert got["AUSUC"][0] == pytest.approx(metrics.ausuc(scores, labels, seen), abs=1e-12)


def test_a_resample_equals_the_metrics_of_the_resampled_test_set():
    rng = np.random.default_rng(1)
    scores, labels, seen = _scores(rng)
    m = bootstrap.stratified_multiplicities(labels, 3, rng)
    assert np.array_equal(np.stack([np.bincount(labels, weights=row) for row in m]),
                          np.tile(np.bincount(labels), (3, 1)))   # every class keeps its size
    got = bootstrap.resampled_metrics(_test_scores(scores, labels, seen), m)
    for r in range(3):
        idx = np.repeat(np.arange(len(labels)), m[r].astype(int))   # the resampled test set itself
        assert got["AUSUC"][r] == pytest.approx(metrics.ausuc(scores[idx], labels[idx], seen), abs=1e-12)
        assert got["H"][r] == pytest.approx(metrics.gzsl_accuracies(scores[idx], labels[idx], seen, 0.3).H, abs=1e-12)


def _method_pair(rng, p_a, p_b, seeds=(0, 1, 2), n_classes=10, per_class=30):
    """Two methods on the same test set whose top-1 is right with probability p_a / p_b per image."""
    out = ({}, {})
    labels = np.repeat(np.arange(n_classes), per_class)
    seen = np.arange(n_classes) < n_classes // 2
    for seed in seeds:
        for side, p in zip(out, (p_a, p_b)):
            scores = rng.normal(size=(len(labels), n_classes))
            right = rng.random(len(labels)) < p
            scores[np.arange(len(labels)), labels] += np.where(right, 10.0, -10.0)
            side[seed] = _test_scores(scores, labels, seen, gamma=0.0)
    return out


def test_equally_good_methods_get_an_interval_containing_zero():
    a, b = _method_pair(np.random.default_rng(2), 0.6, 0.6)
    intervals = bootstrap.paired_intervals(a, b)
    assert all(iv.low <= 0 <= iv.high for k, iv in intervals.items() if k != "AUSUC")
    same = bootstrap.paired_intervals(a, a)
    assert all(iv.low == iv.high == 0 for iv in same.values())


def test_a_dominant_method_gets_an_interval_excluding_zero():
    a, b = _method_pair(np.random.default_rng(3), 0.9, 0.4)
    intervals = bootstrap.paired_intervals(a, b)
    for k in ("T1", "U", "S", "H"):
        assert intervals[k].excludes_zero and intervals[k].low > 20, (k, intervals[k])


def test_no_interval_when_the_test_sets_differ():
    a, b = _method_pair(np.random.default_rng(4), 0.6, 0.6, seeds=(0,))
    moved = bootstrap.TestScores(**{**a[0].__dict__, "image_rows": a[0].image_rows + 1})
    assert bootstrap.paired_intervals({0: moved}, b) == "different test sets"
    assert bootstrap.paired_intervals(a, {5: b[0]}) == "no seed run by both"


def _result(method, dataset, seed, h):
    m = {k: 100.0 * h for k in ("T1", "U", "S", "H", "AUSUC")}   # RunResult holds percent
    return RunResult(dataset=dataset, method=method, seed=seed, run_key=f"{method}{seed}", created_unix=0.0,
                     uses_unseen_semantics=False, wall_s=1.0, metrics={p: m for p in ("val", "paper", "oracle", "last")},
                     predictions=None)


def test_cells_say_why_they_are_empty_and_real_datasets_show_published_numbers():
    results = [_result("transzero", "cub", s, 0.5 + 0.01 * s) for s in (0, 1)]
    comps = compare(results, ["transzero", "mgmrn", "eszsl"], policy="paper", expected_seeds=3)
    text = RENDERERS["md"](comps, ["transzero", "mgmrn", "eszsl"], "test")
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "0 of 3 seeds run" in rows["mgmrn"] and "none published" in rows["mgmrn"]
    assert "50.5 ± 0.7" in rows["transzero"] and "76.8; 69.3 / 68.3 / 68.8 (Chen et al., AAAI 2022" in rows["transzero"]
    assert "53.9; 12.6 / 63.8 / 21.0" in rows["eszsl"]
    assert "no seed run by both" in rows["Δ mgmrn − transzero"]
    assert "predictions.npz missing" not in text
    assert "published = the authors' numbers" in text and "selection paper" in text
    assert rows["transzero"].rstrip(" |").endswith("50.5 ± 0.7; H 50.5 ± 0.7")   # ours under the paper's rule
    synthetic = compare([_result("eszsl", "synthetic", 0, 0.3)], ["eszsl"])
    assert "published" not in RENDERERS["md"](synthetic, ["eszsl"], "test")


def test_every_format_carries_the_same_numbers():
    results = [_result(m, "cub", s, h + 0.02 * s) for m, h in (("eszsl", 0.4), ("sae", 0.3)) for s in (0, 1, 2)]
    comps = compare(results, ["eszsl", "sae"])
    rows = list(csv.DictReader(io.StringIO(RENDERERS["csv"](comps, ["eszsl", "sae"], "test"))))
    h = next(r for r in rows if r["name"] == "Δ sae − eszsl" and r["metric"] == "H")
    assert float(h["mean"]) == pytest.approx(-10.0) and float(h["std"]) == pytest.approx(0.0) and h["n"] == "3"
    assert next(r for r in rows if r["name"] == "eszsl" and r["metric"] == "T1")["published"] == "53.9000"
    payload = json.loads(RENDERERS["json"](comps, ["eszsl", "sae"], "test"))
    cell = payload["datasets"][0]["rows"][0]["cells"]["H"]
    assert cell["mean"] == pytest.approx(42.0) and cell["n"] == 3 and payload["units"] == "percent"
    tex = RENDERERS["latex"](comps, ["eszsl", "sae"], "test")
    body = [line for line in tex.splitlines() if line.endswith(r"\\")]
    assert len({line.count("&") for line in body}) == 1 and r"42.0 $\pm$ 2.0" in tex and r"$\Delta$ sae" in tex


def test_mlflow_and_records_give_the_same_table(trained_project):
    from mlflow.tracking import MlflowClient

    from zsl_bench.tracking import experiment_name, sync

    paths = ProjectPaths(trained_project)
    records_results, _ = load_results(paths.runs, None, "records")
    from zsl_bench.records import find_records

    assert sync(find_records(paths.runs), paths.tracking_uri, paths.mlflow_artifacts) == (4, 0)
    mlflow_results, where = load_results(paths.runs, paths.tracking_uri, "mlflow")
    assert where.startswith("MLflow") and len(mlflow_results) == 4
    assert [(r.method, r.seed, r.metrics) for r in mlflow_results] == \
           [(r.method, r.seed, r.metrics) for r in records_results]
    assert all(r.predictions is not None and r.predictions.is_file() for r in mlflow_results)
    for fmt in ("md", "json"):
        a = RENDERERS[fmt](compare(records_results, ["eszsl", "ale"]), ["eszsl", "ale"], "X")
        b = RENDERERS[fmt](compare(mlflow_results, ["eszsl", "ale"]), ["eszsl", "ale"], "X")
        assert a == b and "[" in a
    # what compare reads is what MLflow's own client shows
    client = MlflowClient(tracking_uri=paths.tracking_uri)
    exp = client.get_experiment_by_name(experiment_name())
    official = {r.data.tags["run_key"]: r.data.metrics["val.H"] for r in client.search_runs([exp.experiment_id])
                if "run_key" in r.data.tags}
    assert {r.run_key: r.metrics["val"]["H"] for r in from_mlflow(paths.tracking_uri)} == official
    # a run whose folder is gone leaves the mirror at the next sync
    gone = find_records(paths.runs)[0]
    import shutil

    shutil.rmtree(gone["_folder"])
    assert sync(find_records(paths.runs), paths.tracking_uri, paths.mlflow_artifacts) == (0, 1)
    assert len(from_mlflow(paths.tracking_uri)) == 3


def test_compare_cli_prints_the_table(trained_project):
    out = subprocess.run([sys.executable, "-m", "zsl_bench.cli", "compare", "eszsl", "ale", "--source", "records"],
                         capture_output=True, text=True, cwd=trained_project)
    assert out.returncode == 0, out.stderr
    assert "Δ ale − eszsl" in out.stdout and "95 % paired bootstrap" in out.stdout and "ddof = 1" in out.stdout


def test_no_runs_is_one_answer_from_either_source_and_creates_no_mirror(trained_project):
    """`compare` without runs of the methods exits 1 with one line, with or without --dataset/--selection,
    from records or MLflow; asking an absent MLflow mirror does not create an empty mlflow.db; and for one
    table both sources' headers count the same runs (those of the table, not every run they hold)."""
    def compare_cli(*args):
        return subprocess.run([sys.executable, "-m", "zsl_bench.cli", "compare", *args], capture_output=True,
                              text=True, cwd=trained_project)

    paths = ProjectPaths(trained_project)
    for args in (("sae", "dazle"), ("sae", "dazle", "--dataset", "synthetic", "--selection", "paper"),
                 ("eszsl", "ale", "--source", "mlflow"),
                 ("eszsl", "ale", "--source", "mlflow", "--dataset", "synthetic", "--selection", "paper")):
        out = compare_cli(*args)
        assert out.returncode == 1 and "no runs of" in out.stderr and "dvc repro" in out.stderr, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1
    assert not paths.mlflow_db.exists(), "asking an absent mirror created an empty mlflow.db"

    from zsl_bench.records import find_records
    from zsl_bench.tracking import sync

    import yaml

    from zsl_bench.stages import train_run

    params = yaml.safe_load((trained_project / "params.yaml").read_text())
    params["train"]["methods"].append("sae")
    params["methods"]["sae"] = {}
    (trained_project / "params.yaml").write_text(yaml.safe_dump(params))
    for seed in (0, 1):   # configured runs of a method outside the table: not counted in its header
        train_run("synthetic", "sae", seed, load_params(paths), paths, progress=False)
    sync(find_records(paths.runs), paths.tracking_uri, paths.mlflow_artifacts)
    outs = [compare_cli("eszsl", "ale", "--source", src, "--format", "md").stdout for src in ("records", "mlflow")]
    assert [re.search(r"\((\d+) runs\)", out).group(1) for out in outs] == ["4", "4"], outs


def test_fclswgan_s_paper_t1_comes_from_its_zsl_settings_variant():
    """The official f-CLSWGAN T1 comes from a ZSL run with the ZSL scripts' settings: `fclswgan.zsl` trains
    with them (CUB 70 generator epochs; SUN 54, 100 features per class, classifier lr 5e-4; a user's override
    still wins), and the `paper` column's T1 is that variant's `paper` T1 (its H stays the GZSL run's);
    without the variant's runs the cell says how to get them."""
    from zsl_bench.registry import get_method

    zsl, gzsl = get_method("fclswgan.zsl"), get_method("fclswgan")
    assert (gzsl.default_hparams("CUB")["epochs"], zsl.default_hparams("CUB")["epochs"]) == (56, 70)
    assert {k: zsl.default_hparams("SUN")[k] for k in ("epochs", "syn_num", "classifier_lr")} == \
        {"epochs": 54, "syn_num": 100, "classifier_lr": 5e-4}
    assert zsl.default_hparams("SUN", {"syn_num": 50})["syn_num"] == 50
    assert gzsl.paper_rule.t1_from == "zsl" and "`zsl` variant" in gzsl.paper_rule.describe(0.0)
    apn = get_method("apn.zsl")   # APN's ZSL scripts too: CUB in episodes of 8 × 3, warm-up 4, regular 5e-6
    assert {k: apn.default_hparams("CUB")[k] for k in ("sampler", "pretrain_epoch", "regular")} == \
        {"sampler": "episodes", "pretrain_epoch": 4, "regular": 5e-6}
    assert get_method("apn").default_hparams("CUB")["sampler"] == "shuffle" and apn.default_hparams("AWA2")["l_xe"] == 0

    def run(method, seed, t1, h):
        metrics = {p: {k: math.nan for k in TABLE_METRICS} for p in SELECTION_POLICIES}
        metrics["paper"] = {**metrics["paper"], "T1": t1, "H": h}
        metrics["val"] = {**metrics["val"], "T1": t1 - 5, "H": h - 5}
        return RunResult(dataset="CUB", method=method, seed=seed, run_key=f"{method}{seed}", created_unix=0.0,
                         uses_unseen_semantics=True, wall_s=1.0, metrics=metrics, predictions=None)

    gan = [run("fclswgan", s, 50.0 + s, 40.0 + s) for s in (0, 1)]
    row = lambda results: compare(results, ["fclswgan", "eszsl"], "CUB")[0].rows[0]   # noqa: E731
    alone = row(gan)
    assert alone.paper["H"].mean == 40.5 and alone.paper["T1"].n == 0
    assert "fclswgan.zsl, not run here" in RENDERERS["md"](compare(gan, ["fclswgan", "eszsl"], "CUB"), ["fclswgan", "eszsl"], "records")
    both = row(gan + [run("fclswgan.zsl", s, 60.0 + s, 1.0) for s in (0, 1)])
    assert (both.paper["T1"].mean, both.paper["T1"].n, both.paper["H"].mean) == (60.5, 2, 40.5)
    assert both.paper_t1_from == "fclswgan.zsl" and both.cells["T1"].mean == 45.5   # `val` stays the GZSL run's
