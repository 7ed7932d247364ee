"""The ablation table's statistics: paired intervals, the detectable ΔH and the A/A floor (zsl_bench.paired_power)."""
import math

import numpy as np
from scipy import stats

from zsl_bench.paired_power import detectable, noise_floor, paired_delta, verdict
from zsl_bench.table_cells import Cell


def test_the_interval_is_students_t_on_the_paired_differences():
    deltas = [1.5, -0.5, 2.0, 0.8, 1.1]
    cell = paired_delta(deltas)
    low, high = stats.ttest_1samp(deltas, 0.0).confidence_interval(0.95)
    assert math.isclose(cell.ci_low, low) and math.isclose(cell.ci_high, high)
    assert cell.n == 5 and math.isclose(cell.std, np.std(deltas, ddof=1))
    assert paired_delta([1.0]).ci_low is None and math.isnan(detectable(paired_delta([1.0])))


def test_a_true_difference_of_the_detectable_size_is_found_about_80_percent_of_the_time():
    """Simulated tables: per-seed Δ ~ N(δ, s²) with δ the detectable size for (s, n); the paired t test
    rejects Δ = 0 in about 80 % of them (the formula uses t quantiles with s for σ: close, not exact)."""
    rng = np.random.default_rng(0)
    n, s = 5, 2.0
    target = detectable(Cell(0.0, s, n))
    assert math.isclose(target, (stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) * s / math.sqrt(n))
    found = np.mean([paired_delta(rng.normal(target, s, n)).excludes_zero for _ in range(4000)])
    assert 0.72 < found < 0.90, found
    null = np.mean([paired_delta(rng.normal(0.0, s, n)).excludes_zero for _ in range(4000)])
    assert null < 0.07, null


def test_the_floor_and_the_verdict():
    aa = paired_delta([0.4, -1.0, 1.2, 0.1])
    floor = noise_floor(aa)
    assert math.isclose(floor, max(abs(aa.ci_low), abs(aa.ci_high)))
    assert verdict(paired_delta([-6.0, -5.5, -6.4, -5.9]), floor) == "separated"
    assert verdict(paired_delta([-0.1, 0.2, -0.3, 0.1]), floor).startswith("not separated (CI holds 0)")
    # consistent but smaller than what an unchanged configuration shows: not separated
    assert verdict(paired_delta([floor / 2 + e for e in (0.01, -0.01, 0.02, 0.0)]), floor) == "not separated"
    assert verdict(paired_delta([1.0, 2.0]), math.nan) == "— (no A/A floor)"
