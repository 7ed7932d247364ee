"""Paired bootstrap intervals for the difference between two methods, from their saved test scores.

A resample draws, within each seed and within each test class, as many test images as the class has,
with replacement (stratified, so every class keeps its count and per-class means stay defined). Both
methods are scored on the same resample (paired), the per-seed differences are averaged over the
seeds both ran, and the 2.5 % and 97.5 % quantiles of that average over the resamples form the 95 %
interval. What is held fixed: the trained models and everything selection chose (epoch,
hyperparameters, γ); the interval is about which test images happened to be drawn, while the spread
over seeds is reported separately as the std.

Metrics are computed for all resamples at once from per-image multiplicities (an R × N matrix), with
the same definitions as `metrics.py` (a test checks that multiplicities of 1 give exactly its values).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zsl_bench.metrics import calibrated_predictions, harmonic_mean, switch_points
from zsl_bench.records import Predictions

RESAMPLES = 1000
LEVEL = 0.95
BOOTSTRAP_SEED = 20240  # fixed, so that the same runs always give the same interval
METRICS = ("T1", "U", "S", "H", "AUSUC")
CHUNK = 250  # resamples per block, to bound memory on large test sets (AWA2: 12k images)


@dataclass(frozen=True)
class TestScores:
    """One run's saved test scores under one selection policy (see `predictions.npz` in the README)."""
    labels: np.ndarray
    seen_class_mask: np.ndarray
    image_rows: np.ndarray
    t1_scores: np.ndarray
    gzsl_scores: np.ndarray
    gamma: float
    ausuc_scores: np.ndarray

    @classmethod
    def load(cls, predictions: Path, policy: str) -> "TestScores":
        return cls.of(Predictions.load(predictions), policy)   # raises DataError naming the file when damaged

    @classmethod
    def of(cls, p: Predictions, policy: str) -> "TestScores":
        """The scores `policy` used, from predictions already read (one read serves every policy of a run)."""
        t1, _ = p.scores(policy, "T1")
        gzsl, gamma = p.scores(policy, "H")
        auc, _ = p.scores(policy, "AUSUC")
        return cls(labels=p.labels, seen_class_mask=p.seen_class_mask, image_rows=p.image_rows, t1_scores=t1,
                   gzsl_scores=gzsl, gamma=gamma, ausuc_scores=auc)

    def same_test_set(self, other: "TestScores") -> bool:
        return (np.array_equal(self.image_rows, other.image_rows) and np.array_equal(self.labels, other.labels)
                and np.array_equal(self.seen_class_mask, other.seen_class_mask))


def stratified_multiplicities(labels: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """[R, N]: how often each test image is drawn in each resample, drawing within each class."""
    labels = np.asarray(labels)
    out = np.zeros((n_resamples, len(labels)))
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n = len(idx)
        draws = rng.integers(0, n, size=(n_resamples, n)) + n * np.arange(n_resamples)[:, None]
        out[:, idx] = np.bincount(draws.ravel(), minlength=n_resamples * n).reshape(n_resamples, n)
    return out


def _class_mean_accuracy(m: np.ndarray, correct: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per resample: mean over the classes present of each class's (multiplicity-weighted) accuracy."""
    classes, inverse = np.unique(labels, return_inverse=True)
    if not len(classes):
        return np.full(m.shape[0], np.nan)
    weight = 1.0 / (np.bincount(inverse)[inverse] * len(classes))   # a sample's share of its side's mean
    return (m * correct) @ weight


def _ausuc(m: np.ndarray, scores: np.ndarray, labels: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Per resample: the exact AUSUC of `metrics.seen_unseen_curve` with sample gains × multiplicities."""
    sp = switch_points(scores, labels, seen)
    _, piece = np.unique(sp.switch, return_inverse=True)
    order = np.argsort(piece, kind="stable")
    last = np.searchsorted(piece[order], np.arange(piece.max() + 1), side="right") - 1  # last sample of each piece
    cum_u = np.cumsum((m * sp.gain_unseen)[:, order], axis=1)[:, last]   # U earned once γ passes piece k
    cum_s = np.cumsum((m * sp.gain_seen)[:, order], axis=1)[:, last]
    zero = np.zeros((m.shape[0], 1))
    u = np.concatenate([zero, cum_u], axis=1)
    s = cum_s[:, -1:] - np.concatenate([zero, cum_s], axis=1)
    return np.sum((u[:, 1:] - u[:, :-1]) * (s[:, 1:] + s[:, :-1]) / 2.0, axis=1)


def resampled_metrics(ts: TestScores, m: np.ndarray) -> dict[str, np.ndarray]:
    """T1, U, S, H, AUSUC (fractions) for every resample (row of `m`)."""
    labels, seen = ts.labels, ts.seen_class_mask
    seen_row = seen[labels]
    unseen_cols = np.flatnonzero(~seen)
    t1_pred = unseen_cols[np.argmax(np.asarray(ts.t1_scores, dtype=np.float64)[~seen_row][:, unseen_cols], axis=1)]
    gzsl_pred = calibrated_predictions(ts.gzsl_scores, seen, ts.gamma)
    out = {"T1": _class_mean_accuracy(m[:, ~seen_row], t1_pred == labels[~seen_row], labels[~seen_row]),
           "U": _class_mean_accuracy(m[:, ~seen_row], gzsl_pred[~seen_row] == labels[~seen_row], labels[~seen_row]),
           "S": _class_mean_accuracy(m[:, seen_row], gzsl_pred[seen_row] == labels[seen_row], labels[seen_row])}
    out["H"] = harmonic_mean(out["U"], out["S"])
    out["AUSUC"] = _ausuc(m, ts.ausuc_scores, labels, seen)
    return out


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    n_seeds: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_intervals(a: dict[int, TestScores], b: dict[int, TestScores], n_resamples: int = RESAMPLES,
                     level: float = LEVEL) -> dict[str, Interval] | str:
    """Bootstrap interval (in %) of mean over seeds of (a − b), per metric; a string says why there is none."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return "no seed run by both"
    if not all(a[s].same_test_set(b[s]) for s in seeds):
        return "different test sets"
    total = {k: np.zeros(n_resamples) for k in METRICS}
    for seed in seeds:
        rng = np.random.default_rng([BOOTSTRAP_SEED, seed])
        for start in range(0, n_resamples, CHUNK):
            m = stratified_multiplicities(a[seed].labels, min(CHUNK, n_resamples - start), rng)
            ma, mb = resampled_metrics(a[seed], m), resampled_metrics(b[seed], m)
            for k in METRICS:
                total[k][start:start + len(m)] += ma[k] - mb[k]
    tail = (1.0 - level) / 2.0
    return {k: Interval(*(100.0 * np.quantile(v / len(seeds), [tail, 1.0 - tail])), n_seeds=len(seeds))
            for k, v in total.items()}
