"""Train once, re-evaluate forever (issue 28): a policy added after the runs fills every view from their traces
and retrains nothing; `zsl-bench status` names each stale run and why; selection_gap.md comes from the runs."""
from __future__ import annotations

import json
import shutil

import pytest
import yaml

from zsl_bench import policies
from zsl_bench.params import load_params
from zsl_bench.paths import ProjectPaths
from zsl_bench.policies import Plan, SelectionPolicy, fixed_point, validation_choice


class ValAtDefaultGamma(SelectionPolicy):
    """`val`'s checkpoint with the method's own fixed γ: a checkpoint the runs kept scores for."""
    name = "val-fixed"
    title = "val-fixed: the validation-selected checkpoint with the method's default γ"

    def plan(self, ctx):
        c = validation_choice(ctx, ctx.selection_metric)
        point = fixed_point(c["config_id"], c["epoch"])
        return Plan(point, point, point, "fixed", "validation, default γ")


class FirstCheckpoint(SelectionPolicy):
    """The first checkpoint of the last configuration: no policy of the runs' time kept its scores."""
    name = "first-of-last"
    title = "first-of-last: the last configuration's first checkpoint"

    def plan(self, ctx):
        last = max(r["config_id"] for r in ctx.validation)
        first = next(r for r in ctx.validation if r["config_id"] == last)
        point = fixed_point(first["config_id"], first["epoch"])
        return Plan(point, point, point, "zero", "first checkpoint of the last configuration")


class NeedsANewMetric(SelectionPolicy):
    """Reads a trace column no run recorded (a metric added after the runs)."""
    name = "by-new-metric"
    title = "by-new-metric: best H_new on test"

    def plan(self, ctx):
        target = policies.best_of("H_new")
        return Plan(target, target, target, "best", "best H_new")


def run_states(paths, params) -> dict:
    from zsl_bench.run_status import status

    return {(r.method, r.seed, r.stage, r.replicate): r for r in status(params, paths)}


def test_a_policy_added_after_the_runs_fills_every_view_and_retrains_nothing(trained_project, monkeypatch, tmp_path,
                                                                              capsys):
    from zsl_bench.compare import compare, render_md
    from zsl_bench.records import find_records
    from zsl_bench.report import write_reports
    from zsl_bench.run_results import RunResult
    from zsl_bench.tracking import record_metrics

    paths = ProjectPaths(trained_project)
    params = load_params(paths)
    folders_before = sorted(p for p in (trained_project / "runs").rglob("done"))
    before = run_states(paths, params)
    assert {s.state for k, s in before.items() if k[2] == "train"} == {"current"}
    monkeypatch.setitem(policies.POLICIES, ValAtDefaultGamma.name, ValAtDefaultGamma())
    monkeypatch.setitem(policies.POLICIES, FirstCheckpoint.name, FirstCheckpoint())

    after = run_states(paths, params)
    assert {k: (s.state, s.why) for k, s in after.items()} == {k: (s.state, s.why) for k, s in before.items()}
    assert sorted(p for p in (trained_project / "runs").rglob("done")) == folders_before, "nothing retrained"

    records = find_records(trained_project / "runs")
    for r in records:   # the new policy's numbers are the traces' own rows at its checkpoint
        entry = r.policy("val-fixed")
        head = r.policy("val")
        row = next(x for x in r["traces"]["test"] if (x["config_id"], x["epoch"]) == (head["config_id"], head["epoch"]))
        assert entry["metrics"]["H"] == row["H_fixed"] and entry["metrics"]["T1"] == row["T1"]
    written = write_reports(records, tmp_path / "reports")
    results_md = (tmp_path / "reports" / "results.md").read_text()
    assert "selection: val-fixed" in results_md and "selection: first-of-last" in results_md
    assert any(p.name == "results.csv" for p in written)
    assert "val-fixed" in set(line.split(",")[3] for line in (tmp_path / "reports" / "results.csv").read_text().splitlines())
    monkeypatch.setitem(policies.POLICIES, NeedsANewMetric.name, NeedsANewMetric())
    lacking = records[0].metrics("by-new-metric")
    assert all(v != v for v in lacking.values()), "no number guessed"
    assert "reads 'H_new', which the run's traces do not record" in capsys.readouterr().err
    del policies.POLICIES[NeedsANewMetric.name]
    mirrored = record_metrics(records[0])
    assert mirrored["val-fixed.H"] == records[0].metrics("val-fixed")["H"]

    results = [RunResult.from_record(r) for r in records]
    (comp,) = compare(results, ["eszsl", "ale"], policy="val-fixed", expected_seeds=2)
    text = render_md([comp], ["eszsl", "ale"], "records")
    assert "val-fixed" in text
    delta = next(row for row in comp.rows if row.kind == "difference")
    assert delta.cells["H"].ci_low is not None, "its scores were kept: the paired interval is there"
    (comp,) = compare(results, ["eszsl", "ale"], policy="first-of-last", expected_seeds=2)
    ale = next(row for row in comp.rows if row.kind == "method" and row.name.startswith("ale"))
    assert ale.cells["H"].n == 2, "its numbers come from the traces"
    delta = next(row for row in comp.rows if row.kind == "difference")
    assert delta.cells["H"].ci_low is None and "no test scores kept" in delta.note, delta.note


def test_status_names_each_stale_run_and_why(trained_project, monkeypatch, tmp_path):
    from zsl_bench import code_identity
    from zsl_bench.run_status import render

    paths = ProjectPaths(trained_project)
    params = load_params(paths)
    states = run_states(paths, params)
    assert {k[:2]: s.state for k, s in states.items() if k[2] == "train"} == {
        ("eszsl", 0): "current", ("eszsl", 1): "current", ("ale", 0): "current", ("ale", 1): "current"}
    assert "4 configured runs: 4 current; nothing to run" in render(list(states.values()))

    # a params.yaml key: only ALE's runs, named by the key
    changed = yaml.safe_load((trained_project / "params.yaml").read_text())
    changed["methods"]["ale"] = {"hparams": {"synthetic": {"lr": 0.05}}}
    (trained_project / "params.yaml").write_text(yaml.safe_dump(changed))
    states = run_states(paths, load_params(paths))
    assert states[("eszsl", 0, "train", 0)].state == "current"
    ale = states[("ale", 0, "train", 0)]
    assert ale.state == "stale" and "params.yaml methods.ale.hparams.synthetic" in ale.why
    assert ale.compute_s > 0, "the replaced run's wall time"
    (trained_project / "params.yaml").write_text(yaml.safe_dump(params))

    # the features: every run, named by the folder
    index = trained_project / "features" / "synthetic" / "resnet10t" / "index.json"
    saved = index.read_text()
    meta = json.loads(saved)
    for entry in meta["arrays"].values():
        entry["sha256"] = "0" * 64
    index.write_text(json.dumps(meta))
    states = run_states(paths, params)
    assert all(s.state == "stale" and any("features changed" in w for w in s.why)
               for k, s in states.items() if k[2] == "train")
    index.write_text(saved)

    # the dataset (re-prepared, its features extracted from it again): every run, named by the folder
    dataset_json = trained_project / "data" / "prepared" / "synthetic" / "dataset.json"
    saved_dataset = dataset_json.read_text()
    dataset_json.write_text(json.dumps({**json.loads(saved_dataset), "fingerprint": "another-version"}))
    (blocked_why,) = {s.why for s in run_states(paths, params).values()}   # features from the older dataset
    assert "extracted from another version of dataset synthetic; run the extract stage again" in blocked_why[0]
    index.write_text(json.dumps({**json.loads(saved), "dataset_fingerprint": "another-version"}))
    states = run_states(paths, params)
    assert all(s.state == "stale" and "the dataset changed (data/prepared/synthetic)" in s.why
               for k, s in states.items() if k[2] == "train")
    dataset_json.write_text(saved_dataset)
    index.write_text(saved)

    # executed code: one character in a module every run loads, named by the file
    for sub in ("zsl_bench", "methods", "pipelines"):
        shutil.copytree(code_identity.ROOT / sub, tmp_path / "src" / sub, ignore=shutil.ignore_patterns("__pycache__"))
    metrics = tmp_path / "src" / "zsl_bench" / "metrics.py"
    metrics.write_text(metrics.read_text() + "\nEXTRA = 1\n")
    monkeypatch.setattr(code_identity, "ROOT", tmp_path / "src")
    states = run_states(paths, params)
    assert all(s.state == "stale" and s.why == ("code: zsl_bench/metrics.py",)
               for k, s in states.items() if k[2] == "train")
    text = render(list(states.values()))
    assert "stale    synthetic/resnet10t ale seed 0 [train]" in text and "code: zsl_bench/metrics.py" in text


def test_status_on_the_command_line_says_what_a_repro_would_run(trained_project):
    import subprocess
    import sys

    params = yaml.safe_load((trained_project / "params.yaml").read_text())
    params["train"]["seeds"] = [0, 1, 2]   # one more seed: two runs to make, costed from the seeds done
    (trained_project / "params.yaml").write_text(yaml.safe_dump(params))
    out = subprocess.run([sys.executable, "-m", "zsl_bench.cli", "status"], cwd=trained_project, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "current  synthetic/resnet10t eszsl seed 0 [train]\n" in out.stdout   # listed, nothing to explain
    assert "missing  synthetic/resnet10t eszsl seed 2 [train]  (" in out.stdout and "never run" in out.stdout
    assert "6 configured runs: 4 current, 2 missing; bringing them current takes about" in out.stdout, out.stdout
    assert not list((trained_project / "runs").rglob("seed2")), "status trains nothing"


@pytest.mark.slow
def test_selection_gap_report_comes_from_existing_runs(trained_project, tmp_path):
    from zsl_bench.records import find_records
    from zsl_bench.selection_gap import gap_rows, write_selection_gap

    records = find_records(trained_project / "runs")
    written = write_selection_gap(records, tmp_path)
    text = (tmp_path / "selection_gap.md").read_text()
    assert written[0].name == "selection_gap.md" and written[1].name == "selection_gap_synthetic-resnet10t.png"
    rows = {(r["method"], r["policy"]): r for r in gap_rows(records)}
    for method in ("eszsl", "ale"):
        oracle = rows[(method, "oracle")]
        mine = [r for r in records if r.method == method]
        assert oracle["H"] == pytest.approx(sum(r.metrics("oracle")["H"] - r.metrics("val")["H"] for r in mine) / 2)
        assert oracle["H"] >= 0 and oracle["H_ci"][0] <= oracle["H"] <= oracle["H_ci"][1]
        assert f"| {method} | 2 |" in text
