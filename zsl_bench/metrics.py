"""Accuracy metrics of the GBU protocol (protocol.md §2), defined once for every method.

Conventions used throughout:
- `scores` is an N×C matrix over candidate classes (columns), `labels` holds column indices,
  `is_seen_class` is a boolean vector over columns.
- Accuracy is averaged over classes, never over samples (GBU eq. 21). A class with no test
  sample has no accuracy: it is left out of the average rather than counted as 0 or NaN.
- Calibrated stacking (Chao et al. 2016) subtracts γ from every seen-class column before the
  argmax. Ties resolve to the lower column index, as `numpy.argmax` does.
- Everything is computed in float64, whatever dtype the scores were stored in, so that metrics
  recomputed from a saved float32 matrix agree with the recorded ones.
"""
from __future__ import annotations

from dataclasses import dataclass

import math

import numpy as np


def per_class_accuracy(labels: np.ndarray, predictions: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Top-1 accuracy of each class in `classes`; NaN where a class has no sample."""
    labels = np.asarray(labels)
    predictions = np.asarray(predictions)
    acc = np.full(len(classes), np.nan)
    for i, c in enumerate(classes):
        of_class = labels == c
        n = int(of_class.sum())
        if n:
            acc[i] = float((predictions[of_class] == c).sum()) / n
    return acc


def mean_per_class_accuracy(labels: np.ndarray, predictions: np.ndarray, classes: np.ndarray) -> float:
    """Mean of per-class top-1 over the classes that have at least one sample (NaN if none)."""
    acc = per_class_accuracy(labels, predictions, classes)
    present = ~np.isnan(acc)
    return float(acc[present].mean()) if present.any() else float("nan")


def harmonic_mean(u, s):
    """H = 2US / (U + S), 0 where U + S = 0; for numbers (a float back) or arrays (elementwise)."""
    u, s = np.asarray(u, dtype=np.float64), np.asarray(s, dtype=np.float64)
    total = u + s
    with np.errstate(invalid="ignore", divide="ignore"):
        h = np.where(total > 0, 2.0 * u * s / np.where(total > 0, total, 1.0), 0.0)
    return float(h) if h.ndim == 0 else h


def mean_std(values) -> tuple[float, float, int]:
    """(mean, sample std with ddof = 1, n) of the finite values; std is NaN for n < 2 (undefined, and
    shown as "no std"), mean NaN for n = 0. Every table and figure summarises seeds with this."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if not len(v):
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan, len(v)


def zsl_top1(scores: np.ndarray, labels: np.ndarray, is_seen_class: np.ndarray) -> float:
    """ZSL T1: unseen-class samples, argmax over unseen columns only, averaged over unseen classes."""
    scores = np.asarray(scores, dtype=np.float64)
    is_seen_class = np.asarray(is_seen_class, dtype=bool)
    unseen_cols = np.flatnonzero(~is_seen_class)
    rows = ~is_seen_class[labels]
    predictions = unseen_cols[np.argmax(scores[rows][:, unseen_cols], axis=1)]
    return mean_per_class_accuracy(labels[rows], predictions, unseen_cols)


def calibrated_predictions(scores: np.ndarray, is_seen_class: np.ndarray, gamma: float) -> np.ndarray:
    """argmax over all columns after subtracting γ from seen-class scores."""
    adjusted = np.asarray(scores, dtype=np.float64) - gamma * np.asarray(is_seen_class, dtype=np.float64)
    return np.argmax(adjusted, axis=1)


@dataclass(frozen=True)
class GZSLResult:
    U: float
    S: float
    H: float
    gamma: float


def gzsl_accuracies(scores: np.ndarray, labels: np.ndarray, is_seen_class: np.ndarray,
                    gamma: float = 0.0) -> GZSLResult:
    """GZSL U, S and H at calibration γ: argmax over all classes, per-class means per side."""
    is_seen_class = np.asarray(is_seen_class, dtype=bool)
    labels = np.asarray(labels)
    predictions = calibrated_predictions(scores, is_seen_class, gamma)
    seen_cols, unseen_cols = np.flatnonzero(is_seen_class), np.flatnonzero(~is_seen_class)
    seen_rows = is_seen_class[labels]
    u = mean_per_class_accuracy(labels[~seen_rows], predictions[~seen_rows], unseen_cols)
    s = mean_per_class_accuracy(labels[seen_rows], predictions[seen_rows], seen_cols)
    return GZSLResult(U=u, S=s, H=harmonic_mean(u, s), gamma=float(gamma))


@dataclass(frozen=True)
class SeenUnseenCurve:
    """The exact seen–unseen accuracy curve of calibrated stacking.

    As γ grows, each sample switches once from its best seen class to its best unseen class, at
    γ = max_seen − max_unseen. Between two consecutive switch points U and S are constant, so the
    curve is exact: `gammas[k]` is a representative γ (the midpoint) of the k-th constant piece,
    `U[k]`/`S[k]` its accuracies. No step size, no dependence on the scale of the scores.
    """
    gammas: np.ndarray
    U: np.ndarray
    S: np.ndarray
    points: np.ndarray      # the sorted distinct switch points; piece k lies between points[k-1] and points[k]

    @property
    def H(self) -> np.ndarray:
        return harmonic_mean(self.U, self.S)

    def at(self, gammas) -> tuple[np.ndarray, np.ndarray]:
        """(U, S) at any γ (exact; a γ equal to a switch point is read as just above it)."""
        piece = np.searchsorted(self.points, np.asarray(gammas, dtype=np.float64), side="left")
        return self.U[piece], self.S[piece]

    def best_gamma_on_grid(self, step: float) -> float:
        """The γ with the best H among multiples of `step` (a fixed-step sweep from 0 outwards, as released
        code does it); among equal H the one closest to 0, the negative one first. Exact: a piece of the
        curve is reachable when a grid point lies strictly inside it."""
        lo = np.concatenate([[-np.inf], self.points])      # piece k = (lo[k], hi[k])
        hi = np.concatenate([self.points, [np.inf]])
        j_lo = np.where(np.isfinite(lo), np.floor(lo / step) + 1, -np.inf)   # first grid index above lo
        j_hi = np.where(np.isfinite(hi), np.ceil(hi / step) - 1, np.inf)     # last grid index below hi
        reachable = j_lo <= j_hi
        nearest = np.clip(0.0, j_lo, j_hi) * step                            # the grid γ closest to 0
        h = np.where(reachable, self.H, -1.0)
        best = np.flatnonzero(np.isclose(h, h.max(), rtol=0, atol=1e-12))
        order = np.lexsort((nearest[best] > 0, np.abs(nearest[best])))
        return float(np.round(nearest[best[order[0]]] / step) * step)

    def best_gamma(self) -> float:
        """The γ that maximises H; among equal H the one closest to 0 (least calibration); 0 if H is 0."""
        h = self.H
        if h.max() == 0:
            return 0.0
        best = np.flatnonzero(np.isclose(h, h.max(), rtol=0, atol=1e-12))
        return float(self.gammas[best[np.argmin(np.abs(self.gammas[best]))]])

    def auc(self) -> float:
        """AUSUC: area under S as a function of U (trapezoid rule, points sorted by U)."""
        order = np.lexsort((-self.S, self.U))
        u, s = self.U[order], self.S[order]
        return float(np.sum((u[1:] - u[:-1]) * (s[1:] + s[:-1]) / 2.0))


@dataclass(frozen=True)
class SwitchPoints:
    """What the seen–unseen curve is made of: each sample's switch point (γ at which its prediction
    moves from its best seen to its best unseen class) and what it contributes to U once γ passes it
    (`gain_unseen`) or to S while γ is below it (`gain_seen`). A gain is the sample's weight in its
    side's per-class mean, 1 / (its class count × classes present), when its best class is right."""
    switch: np.ndarray
    gain_unseen: np.ndarray
    gain_seen: np.ndarray


def switch_points(scores: np.ndarray, labels: np.ndarray, is_seen_class: np.ndarray) -> SwitchPoints:
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    is_seen_class = np.asarray(is_seen_class, dtype=bool)
    seen_cols, unseen_cols = np.flatnonzero(is_seen_class), np.flatnonzero(~is_seen_class)
    if len(seen_cols) == 0 or len(unseen_cols) == 0:
        raise ValueError("a seen-unseen curve needs at least one seen and one unseen class")

    best_seen = seen_cols[np.argmax(scores[:, seen_cols], axis=1)]
    best_unseen = unseen_cols[np.argmax(scores[:, unseen_cols], axis=1)]
    rows = np.arange(len(labels))
    switch = scores[rows, best_seen] - scores[rows, best_unseen]  # seen wins while γ < switch

    is_seen_row = is_seen_class[labels]
    counts = np.bincount(labels, minlength=scores.shape[1]).astype(np.float64)
    weight = np.zeros(len(labels))
    for side in (is_seen_row, ~is_seen_row):
        n_present = len(np.unique(labels[side]))
        if n_present:
            weight[side] = 1.0 / (counts[labels[side]] * n_present)
    return SwitchPoints(switch=switch,
                        gain_unseen=np.where(~is_seen_row & (best_unseen == labels), weight, 0.0),
                        gain_seen=np.where(is_seen_row & (best_seen == labels), weight, 0.0))


def seen_unseen_curve(scores: np.ndarray, labels: np.ndarray, is_seen_class: np.ndarray) -> SeenUnseenCurve:
    sp = switch_points(scores, labels, is_seen_class)
    points = np.unique(sp.switch)
    # Accuracy on each piece: piece k lies between points[k-1] and points[k] (k = 0..len(points)).
    piece = np.searchsorted(points, sp.switch)
    u_gain = np.bincount(piece, weights=sp.gain_unseen, minlength=len(points) + 1)
    s_gain = np.bincount(piece, weights=sp.gain_seen, minlength=len(points) + 1)
    U = np.concatenate([[0.0], np.cumsum(u_gain[:len(points)])])
    S = np.cumsum(s_gain[::-1])[::-1]  # piece j keeps the seen samples that switch at or after points[j]
    mids = (points[1:] + points[:-1]) / 2.0
    spread = max(1.0, float(points[-1] - points[0]))
    gammas = np.concatenate([[points[0] - spread], mids, [points[-1] + spread]])
    return SeenUnseenCurve(gammas=gammas, U=U, S=S, points=points)


def ausuc(scores: np.ndarray, labels: np.ndarray, is_seen_class: np.ndarray) -> float:
    return seen_unseen_curve(scores, labels, is_seen_class).auc()


def best_gamma_for_h(scores: np.ndarray, labels: np.ndarray, is_seen_class: np.ndarray) -> float:
    return seen_unseen_curve(scores, labels, is_seen_class).best_gamma()
