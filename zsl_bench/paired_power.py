"""Paired differences over seeds, with their power stated: what an ablation table can and cannot detect.

A variant and the official configuration run on the same seeds with common random numbers (the same
initialisation of every shared part and the same batches), so their per-seed difference Δ removes most of
the draw. Over n seeds:

- the 95 % interval of the mean Δ is Student's t: mean ± t(0.975, n−1) · s / √n;
- the smallest true Δ the table detects with 80 % power in that two-sided test is
  (t(0.975, n−1) + t(0.80, n−1)) · s / √n (the usual normal-approximation formula with t quantiles, s
  standing for the unknown true spread: an estimate, exact only as n grows);
- the A/A noise floor is the largest |mean Δ| an unchanged configuration shows at 95 %: |mean| plus the
  interval's half-width, from the A/A replicate (the same configuration on an independent stream).
"""
from __future__ import annotations

import math

import numpy as np

from zsl_bench.metrics import mean_std
from zsl_bench.table_cells import Cell

ALPHA, POWER = 0.05, 0.80


def _t(q: float, df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(q, df))


def paired_delta(deltas) -> Cell:
    """mean ± std of per-seed differences with the 95 % t interval of the mean (none for n < 2)."""
    mean, std, n = mean_std(deltas)
    if n < 2:
        return Cell(mean, std, n)
    half = _t(1 - ALPHA / 2, n - 1) * std / math.sqrt(n)
    return Cell(mean, std, n, mean - half, mean + half)


def detectable(delta: Cell) -> float:
    """The smallest |true Δ| detected with 80 % power at α = 0.05 (two-sided) given this row's spread and n."""
    if delta.n < 2 or not np.isfinite(delta.std):
        return math.nan
    return (_t(1 - ALPHA / 2, delta.n - 1) + _t(POWER, delta.n - 1)) * delta.std / math.sqrt(delta.n)


def noise_floor(aa: Cell) -> float:
    """The largest |mean Δ| an unchanged configuration reaches at 95 %: |mean| + the interval's half-width."""
    if aa.ci_low is None:
        return math.nan
    return max(abs(aa.ci_low), abs(aa.ci_high))


def verdict(delta: Cell, floor: float) -> str:
    """Separated: the paired interval excludes 0 and the mean lies beyond the A/A floor; otherwise not."""
    if delta.ci_low is None:
        return "— (n < 2)"
    if not np.isfinite(floor):
        return "— (no A/A floor)"
    if delta.excludes_zero and abs(delta.mean) > floor:
        return "separated"
    return "not separated" + ("" if delta.excludes_zero else " (CI holds 0)")
