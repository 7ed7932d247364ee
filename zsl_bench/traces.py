"""What a run records at every checkpoint: the metrics under every calibration (`CALIBRATIONS`) of the
test sweep (`test_row`), and the validation trace averaged over the folds (`mean_over_folds`).

These traces are the run's evidence: every selection policy (policies.py) picks from them afterwards, so
this module is part of a run's key and the policies are not (code_identity.READS_TRACES_ONLY).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

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
