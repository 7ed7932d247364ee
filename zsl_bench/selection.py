"""Selection policies and calibrations: which checkpoint and which γ a reported number comes from.

A run records, for every checkpoint of its sweeps, the metrics under every calibration (`CALIBRATIONS`):
the validation trace (mean over the validation folds) and the test trace. A selection policy is a named
object that picks from those traces alone (`SelectionPolicy.targets`: per metric, a filter and a key
maximised over the test trace), so a new policy's numbers can be computed from existing records without
retraining (`metrics_from_traces`). The evaluator streams the same targets over the test sweep to keep
the selected checkpoints' scores for predictions.npz (`Keeper`).

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

from zsl_bench.metrics import gzsl_accuracies, seen_unseen_curve
from zsl_bench.protocol import spread_standardise

GZSL_KEYS = ("U", "S", "H", "gamma")


@dataclass(frozen=True)
class Calibration:
    """How γ is chosen for a checkpoint's GZSL numbers; `suffix` names its columns in a trace row."""
    name: str
    suffix: str
    title: str


CALIBRATIONS = {c.name: c for c in (
    Calibration("best", "", "γ maximising H on these very scores (exact, raw or spread units, whichever is higher)"),
    Calibration("zero", "_gamma0", "γ = 0 (no calibration)"),
    Calibration("fixed", "_fixed", "γ = the method's default (raw score units)"),
    Calibration("grid", "_grid", "γ maximising test H on the paper rule's grid (raw units, swept from 0)"),
    Calibration("val", "_val", "γ of the checkpoint chosen on validation, in units of each image's score spread"),
)}


def gzsl_columns(calibration: str, u: float, s: float, h: float, gamma: float) -> dict:
    sfx = CALIBRATIONS[calibration].suffix
    return {f"U{sfx}": u, f"S{sfx}": s, f"H{sfx}": h, f"gamma{sfx}": gamma}


def read_gzsl(row: dict, calibration: str) -> dict:
    sfx = CALIBRATIONS[calibration].suffix
    return {k: row.get(f"{k}{sfx}", math.nan) for k in GZSL_KEYS}


def test_row(scores: np.ndarray, labels: np.ndarray, is_seen_class: np.ndarray, *, t1: float,
             default_gamma: float, grid_step: float, val_gamma: float | None) -> dict:
    """Every calibration's U/S/H/γ of one test checkpoint, and its AUSUC (raw scores, exact)."""
    curve = seen_unseen_curve(scores, labels, is_seen_class)
    z = spread_standardise(scores)
    row = {"T1": t1, "AUSUC": curve.auc()}

    def at(name, gamma, s=scores):
        g = gzsl_accuracies(s, labels, is_seen_class, gamma)
        row.update(gzsl_columns(name, g.U, g.S, g.H, float(gamma)))

    # The test-best γ in both spaces a policy can calibrate in, so `oracle` bounds `val` from above too.
    spread_curve = seen_unseen_curve(z, labels, is_seen_class)
    spread_wins = spread_curve.H.max() > curve.H.max()
    if spread_wins:
        at("best", spread_curve.best_gamma(), z)
    else:
        at("best", curve.best_gamma())
    row["space_best"] = "spread" if spread_wins else "raw"
    at("zero", 0.0)
    at("fixed", default_gamma)
    at("grid", curve.best_gamma_on_grid(grid_step))
    if val_gamma is None:
        row.update(gzsl_columns("val", math.nan, math.nan, math.nan, math.nan))
    else:
        at("val", val_gamma, z)
    return row


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
HEADLINE_POLICY = "val"
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


# ---- validation over several folds -------------------------------------------------------------------------

def best_mean_gamma(curves: list) -> tuple[float, float, float, float]:
    """(γ, mean U, mean S, mean H) at the γ maximising the folds' mean H (curves of spread-standardised
    scores); among equal mean H the γ closest to 0; γ = 0 when every H is 0. One fold: its own best γ."""
    from zsl_bench.metrics import harmonic_mean

    candidates = np.unique(np.concatenate([c.gammas for c in curves] + [[0.0]]))
    us = [c.at(candidates) for c in curves]
    u = np.mean([x[0] for x in us], axis=0)
    s = np.mean([x[1] for x in us], axis=0)
    h = np.mean([harmonic_mean(*x) for x in us], axis=0)
    if h.max() <= 0:
        i = int(np.flatnonzero(candidates == 0.0)[0])
    else:
        best = np.flatnonzero(np.isclose(h, h.max(), rtol=0, atol=1e-12))
        i = int(best[np.argmin(np.abs(candidates[best]))])
    return float(candidates[i]), float(u[i]), float(s[i]), float(h[i])


def mean_over_folds(fold_rows: dict[int, list[dict]], curves: dict[tuple, list]) -> list[dict]:
    """The validation trace selection reads: per checkpoint, T1 and AUSUC averaged over the folds, and U, S,
    H at the γ that maximises the mean H (`best_mean_gamma`). `curves[(config_id, epoch)]`: one per fold."""
    by_point = [{(x["config_id"], x["epoch"]): x for x in rows} for rows in fold_rows.values()]
    out = []
    for r in next(iter(fold_rows.values())):
        point = (r["config_id"], r["epoch"])
        per_fold = [rows[point] for rows in by_point]
        gamma, u, s, h = best_mean_gamma(curves[point])
        out.append({"config_id": r["config_id"], "epoch": r["epoch"], "folds": len(per_fold),
                    **{k: float(np.mean([x[k] for x in per_fold])) for k in ("T1", "AUSUC", "U_gamma0", "S_gamma0",
                                                                           "H_gamma0")},
                    "U": u, "S": s, "H": h, "gamma": gamma})
    return out
