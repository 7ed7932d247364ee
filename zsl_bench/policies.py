"""Selection policies: which checkpoint and which γ a reported number comes from, read off a run's traces.

A run records, for every checkpoint of its sweeps, the metrics under every calibration (traces.py): the
validation trace (mean over the validation folds) and the test trace. A policy is a named object that picks
from those traces alone (`SelectionPolicy.plan`: per table metric, a filter and a key maximised over the test
trace). Policies are evaluations of a run, not part of it: a run's key leaves this module out
(code_identity.READS_TRACES_ONLY), and every view — report, compare, MLflow, regress — reads a policy's
numbers through `evaluate(record, policy)`, so a new or changed policy fills every table from existing runs.
The evaluator streams the same plans over the test sweep to keep the selected checkpoints' scores
(`Keeper`); a policy added later finds its scores where it selects a checkpoint some policy of the run's
time kept (`scores_at`), and says what is missing where not.

Policies (add one = one class and one line in POLICIES, in the order tables show them):
- `val`    the headline: configuration, epoch and γ chosen on validation; γ in units of each image's score
           spread, so it means the same on the refit model (protocol.spread_standardise);
- `paper`  each method's own published rule (its `PaperRule`): e.g. best test H at a fixed offset;
- `oracle` T1, H (at the exact test-best γ, in raw or spread units, whichever is higher) and AUSUC each
           maximised on test: an upper bound of every other policy, labelled;
- `last`   default hyperparameters, final checkpoint, the method's default γ.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from zsl_bench.traces import CALIBRATIONS, read_gzsl

# ---- what a policy picks -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """One selected checkpoint: the test row maximising `key` among rows passing `keep` (the first wins a
    tie, as published code keeps a best value only when a later one is strictly better)."""
    key: Callable[[dict, int], float]          # (test row, its position in the trace) → value to maximise
    keep: Callable[[dict], bool] = lambda row: True


def fixed_point(config_id: int, epoch) -> Target:
    return Target(key=lambda row, i: 0.0, keep=lambda row: (row["config_id"], row["epoch"]) == (config_id, epoch))


def best_of(column: str, keep=lambda row: True) -> Target:
    return Target(key=lambda row, i: row[column] if np.isfinite(row[column]) else -math.inf, keep=keep)


@dataclass(frozen=True)
class Plan:
    """A policy's targets for one run: the checkpoint of each table metric and the calibration of H."""
    T1: Target
    H: Target
    AUSUC: Target
    calibration: str
    selected_on: str


@dataclass(frozen=True)
class RunContext:
    """What a policy may read besides the test trace: the validation trace (mean over folds) and the
    method's declarations. Never test scores."""
    validation: list[dict]
    selection_metric: str
    folds: tuple[int, ...]
    paper_rule: object | None     # method.PaperRule


class SelectionPolicy:
    name = ""
    title = ""

    def plan(self, ctx: RunContext) -> Plan | None:
        """None: the policy does not apply to this run (e.g. no paper rule declared)."""
        raise NotImplementedError


def validation_choice(ctx: RunContext, metric: str) -> dict:
    """The validation row (mean over folds) with the best `metric`; the first wins a tie."""
    return max(ctx.validation, key=lambda r: r[metric] if np.isfinite(r[metric]) else -math.inf)


class Val(SelectionPolicy):
    name = "val"
    title = ("val (headline): configuration, epoch and γ chosen on validation only, refit on trainval, tested "
             "once; γ in units of each image's score spread")

    def plan(self, ctx):
        c = validation_choice(ctx, ctx.selection_metric)
        point = fixed_point(c["config_id"], c["epoch"])
        folds = ", ".join(map(str, ctx.folds))
        return Plan(point, point, point, "val",
                    f"validation fold{'s' * (len(ctx.folds) > 1)} {folds} (mean), max {ctx.selection_metric}; "
                    "γ max mean val H, in units of each image's score spread")


class Paper(SelectionPolicy):
    name = "paper"
    title = ("paper: each method's own published rule (its README): e.g. best test H at a fixed offset; "
             "test-selected for the attention methods, so not comparable with val")

    def plan(self, ctx):
        rule = ctx.paper_rule
        if rule is None:
            return None
        calibration = {"fixed": "fixed", "zero": "zero", "test-grid": "grid"}[rule.calibration]
        if rule.checkpoint == "validation":
            c = validation_choice(ctx, rule.validation_metric)
            point = fixed_point(c["config_id"], c["epoch"])
            return Plan(point, point, point, calibration,
                        f"paper rule: validation max {rule.validation_metric}; {CALIBRATIONS[calibration].title}")
        # Test-selected over the method's own checkpoints, with its published configuration (the defaults).
        defaults = lambda row: row["config_id"] == 0  # noqa: E731
        h = best_of("H" + CALIBRATIONS[calibration].suffix, defaults)
        t1 = best_of("T1", defaults) if "T1" in rule.separately else h
        auc = best_of("AUSUC", defaults) if "AUSUC" in rule.separately else h
        return Plan(t1, h, auc, calibration,
                    f"paper rule: test, default configuration, best {', '.join(rule.separately)} each over the "
                    f"checkpoints; {CALIBRATIONS[calibration].title}")


class Oracle(SelectionPolicy):
    name = "oracle"
    title = ("oracle: test-selected upper bound (T1, H at the exact test-best γ and AUSUC each maximised on "
             "test over every configuration and checkpoint; γ in raw or spread units, whichever is higher); "
             "never a headline")

    def plan(self, ctx):
        return Plan(best_of("T1"), best_of("H"), best_of("AUSUC"), "best",
                    "test set: T1, H (with test-best γ) and AUSUC each maximised separately")


class Last(SelectionPolicy):
    name = "last"
    title = "last: default hyperparameters, final checkpoint, the method's default γ"

    def plan(self, ctx):
        point = Target(key=lambda row, i: float(i), keep=lambda row: row["config_id"] == 0)
        return Plan(point, point, point, "fixed", "default hyperparameters, final checkpoint, default γ")


POLICIES: dict[str, SelectionPolicy] = {p.name: p for p in (Val(), Paper(), Oracle(), Last())}
SELECTION_POLICIES = tuple(POLICIES)      # the order tables show them in
HEADLINE_POLICY = Val.name
PAPER_POLICY = Paper.name       # each method's own published rule: compare's column beside the published numbers
ORACLE_POLICY = Oracle.name
COMPARISON_POLICIES = (HEADLINE_POLICY, PAPER_POLICY)   # comparisons.md: the headline beside each method's own rule
METRIC_TARGETS = ("T1", "H", "AUSUC")


def metrics_of(plan: Plan, rows: dict[str, dict]) -> dict:
    """The table metrics of a plan from its selected test rows (metric → row)."""
    h_row = rows["H"]
    return {"T1": rows["T1"]["T1"], "AUSUC": rows["AUSUC"]["AUSUC"], **read_gzsl(h_row, plan.calibration),
            **{f"{k}_gamma0": h_row[f"{k}_gamma0"] for k in ("U", "S", "H")}, "calibration": plan.calibration}


def pick_rows(plan: Plan, test_trace: list[dict]) -> dict[str, tuple[int, dict]] | None:
    """metric → (position, row) of the selected test rows; None when no row passes a target's filter."""
    out = {}
    for metric in METRIC_TARGETS:
        target = getattr(plan, metric)
        best = None
        for i, row in enumerate(test_trace):
            if target.keep(row) and (best is None or target.key(row, i) > best[2]):
                best = (i, row, target.key(row, i))
        if best is None:
            return None
        out[metric] = best[:2]
    return out


def selection_entry(plan: Plan, rows: dict[str, dict]) -> dict:
    """What a record keeps of one policy: its metrics (fractions), the checkpoint of each metric, and how."""
    return {"metrics": metrics_of(plan, rows), "selected_on": plan.selected_on,
            "points": {m: {"config_id": r["config_id"], "epoch": r["epoch"]} for m, r in rows.items()},
            "config_id": rows["H"]["config_id"], "epoch": rows["H"]["epoch"]}


def metrics_from_traces(policy: SelectionPolicy, ctx: RunContext, test_trace: list[dict]) -> dict | None:
    """A policy's record entry read off recorded traces, without any model or score."""
    plan = policy.plan(ctx)
    picked = pick_rows(plan, test_trace) if plan else None
    if picked is None:
        return None
    return selection_entry(plan, {m: row for m, (i, row) in picked.items()})


class Keeper:
    """Streams the test sweep for every policy's targets: keeps the scores (and ZSL-scorer scores) of each
    target's best checkpoint so far, so no more than a few score matrices are held at once."""

    def __init__(self, plans: dict[str, Plan]):
        self.plans = plans
        self.best: dict[tuple[str, str], tuple[float, int, np.ndarray, np.ndarray | None]] = {}
        self.position = 0

    def observe(self, row: dict, scores: np.ndarray, t1_scores: np.ndarray | None) -> list[str]:
        """Record one test checkpoint; returns the policies whose H target this checkpoint now is."""
        i, self.position = self.position, self.position + 1
        now_h = []
        for name, plan in self.plans.items():
            for metric in METRIC_TARGETS:
                target = getattr(plan, metric)
                if not target.keep(row):
                    continue
                k = target.key(row, i)
                if (name, metric) not in self.best or k > self.best[(name, metric)][0]:
                    self.best[(name, metric)] = (k, i, scores, t1_scores)
                    if metric == "H":
                        now_h.append(name)
        return now_h

    def state_dict(self) -> dict:
        """What it has kept so far (its plans come from the validation trace, which a resumed run recomputes)."""
        return {"best": dict(self.best), "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.position = dict(state["best"]), int(state["position"])

    def outputs(self, test_trace: list[dict]) -> tuple[dict, dict[str, np.ndarray]]:
        """After the sweep: (the record's `selection`: each plan's entry at its kept checkpoints, predictions.npz's
        per-policy arrays: the kept scores, each policy's γ and the units it applies in)."""
        selection, arrays = {}, {}
        for name, plan in self.plans.items():
            rows = {m: test_trace[self.best[(name, m)][1]] for m in METRIC_TARGETS}
            selection[name] = selection_entry(plan, rows)
            arrays[f"gamma_{name}"] = np.float64(selection[name]["metrics"]["gamma"])
            arrays[f"calibration_{name}"] = np.str_(gamma_space(plan, rows["H"]))
        return selection, {**arrays, **self.predictions()}

    def predictions(self) -> dict[str, np.ndarray]:
        """predictions.npz arrays: `scores_<policy>` (its H checkpoint), `scores_<policy>_T1|AUSUC` where that
        metric came from another checkpoint, `scores_zsl_<policy>` (ZSL scorer at its T1 checkpoint),
        `gamma_<policy>` is written by the caller (it needs the selected row)."""
        out = {}
        for name in self.plans:
            _, h_pos, h_scores, _ = self.best[(name, "H")]
            out[f"scores_{name}"] = h_scores
            for metric in ("T1", "AUSUC"):
                _, pos, scores, _ = self.best[(name, metric)]
                if pos != h_pos:
                    out[f"scores_{name}_{metric}"] = scores
            t1_scores = self.best[(name, "T1")][3]
            if t1_scores is not None:
                out[f"scores_zsl_{name}"] = t1_scores
        return out


def gamma_space(plan: Plan, h_row: dict) -> str:
    """The units γ applies in for a plan's H: "spread" (each image's score spread, protocol.spread_standardise)
    for `val`, and for the test-best calibration where that space won on this row; else "raw"."""
    spread = plan.calibration == "val" or (plan.calibration == "best" and h_row.get("space_best") == "spread")
    return "spread" if spread else "raw"


# ---- every view's one way to a policy's numbers ---------------------------------------------------------------

def context_of(record) -> RunContext:
    """What a policy may read of a run record besides its test trace."""
    from zsl_bench.method import PaperRule

    rule = record["method_info"].get("paper_rule")
    return RunContext(validation=record["traces"]["validation"], selection_metric=record["config"]["selection_metric"],
                      folds=tuple(record["config"]["folds"]), paper_rule=PaperRule(**rule) if rule else None)


def evaluate(record, policy: str) -> dict | None:
    """The record entry of `policy` (metrics as fractions, the checkpoint of each metric, how it was selected,
    γ's units) computed from the run's recorded traces with the policy as it is now; None where the policy does
    not apply (e.g. `paper` for a method without a paper rule). Raises KeyError for an unknown policy."""
    cache = getattr(record, "__dict__", {}).setdefault("evaluated_policies", {})   # RunRecord: once per read
    if policy not in cache:
        chosen = POLICIES[policy]
        try:
            plan = chosen.plan(context_of(record))
            picked = pick_rows(plan, record["traces"]["test"]) if plan else None
        except KeyError as e:   # a column this run's traces never recorded (a metric newer than the run)
            have = sorted(record["traces"]["test"][0]) if record["traces"]["test"] else []
            raise TracesLack(f"{record.get('_folder', 'this run')}: policy {policy!r} reads {e}, which the run's "
                             f"traces do not record (they have {', '.join(have)}); rerun the run with this "
                             "zsl-bench to record it") from None
        if picked is None:
            cache[policy] = None
        else:
            rows = {m: row for m, (i, row) in picked.items()}
            cache[policy] = {**selection_entry(plan, rows), "gamma_space": gamma_space(plan, rows["H"])}
    return cache[policy]


class TracesLack(LookupError):
    """A policy reads a trace column the run never recorded: the view says which, instead of guessing."""


def kept_checkpoints(record) -> dict[tuple[str, tuple], str]:
    """Which test scores the run kept, by what they are and where: ("raw" | "zsl", (config_id, epoch)) → the
    predictions.npz array. The run kept its time's policies' picks (the record's `selection`)."""
    out = {}
    for name, entry in (record.get("selection") or {}).items():
        points = {m: (p["config_id"], p["epoch"]) for m, p in entry.get("points", {}).items()}
        for metric, point in points.items():
            own = f"scores_{name}_{metric}" if metric != "H" and points[metric] != points.get("H") else f"scores_{name}"
            out.setdefault(("raw", point), own)
        if "T1" in points:
            out.setdefault(("zsl", points["T1"]), f"scores_zsl_{name}")
    return out


class ScoresNotKept(LookupError):
    """The run kept no test scores at the checkpoint a policy selects (the policy is newer than the run): its
    numbers still come from the traces; what needs the scores (an interval, a curve) says so."""


def scores_at(record, arrays: dict, policy: str, metric: str) -> tuple[np.ndarray, float]:
    """(scores, γ) with which `policy` reaches its `metric` on this run, from predictions.npz's `arrays`: T1 from
    the ZSL scorer's matrix when the method has one; H in the units its γ applies in, so argmax(scores − γ ·
    seen) is its prediction; AUSUC from raw scores. A policy newer than the run finds the scores wherever a
    policy of the run's time kept that checkpoint; elsewhere ScoresNotKept says which checkpoint is missing."""
    from zsl_bench.io import DataError
    from zsl_bench.protocol import spread_standardise

    entry = evaluate(record, policy)
    if entry is None:
        raise DataError(f"policy {policy!r} does not apply to this run")
    point = (entry["points"][metric]["config_id"], entry["points"][metric]["epoch"])
    kept = kept_checkpoints(record)
    # T1 of a method with a ZSL scorer comes from that scorer's matrix only, never from the GZSL scores
    zsl_scorer = ("zsl_scorer" in (record.get("method_info") or {}).get("capabilities", [])
                  or any(k.startswith("scores_zsl_") for k in arrays))
    name = kept.get(("zsl", point)) if metric == "T1" else None
    if name not in arrays and not (metric == "T1" and zsl_scorer):
        name = kept.get(("raw", point))
    if name not in arrays:
        raise ScoresNotKept(f"{record.get('_folder', 'this run')}: no test scores kept at the checkpoint {policy!r} "
                        f"selects for {metric} (configuration {point[0]}, epoch {point[1]}): the run predates the "
                        "policy; its numbers come from the traces, its intervals need the run redone")
    scores = arrays[name]
    if metric == "T1" and name.startswith("scores_zsl_"):
        return scores, 0.0
    if metric == "H":
        gamma = float(entry["metrics"]["gamma"])
        return (spread_standardise(scores) if entry["gamma_space"] == "spread" else scores), gamma
    return scores, 0.0
