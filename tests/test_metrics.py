"""Metrics on cases small enough to compute by hand (protocol.md §2)."""
import numpy as np
import pytest

from zsl_bench.metrics import (ausuc, best_gamma_for_h, gzsl_accuracies, harmonic_mean, mean_per_class_accuracy,
                               per_class_accuracy, seen_unseen_curve, zsl_top1)


def test_per_class_average_differs_from_per_sample_average():
    # class 0: 8 samples, all right; class 1: 2 samples, both wrong.
    labels = np.array([0] * 8 + [1] * 2)
    predictions = np.array([0] * 8 + [0] * 2)
    assert mean_per_class_accuracy(labels, predictions, np.array([0, 1])) == pytest.approx(0.5)
    assert np.mean(labels == predictions) == pytest.approx(0.8)  # what per-sample averaging would report


def test_class_without_test_images_is_left_out_not_counted_as_zero():
    labels = np.array([0, 0, 2])
    predictions = np.array([0, 1, 2])
    acc = per_class_accuracy(labels, predictions, np.array([0, 1, 2]))
    assert np.isnan(acc[1]) and acc[0] == 0.5 and acc[2] == 1.0
    assert mean_per_class_accuracy(labels, predictions, np.array([0, 1, 2])) == pytest.approx(0.75)
    assert np.isnan(mean_per_class_accuracy(labels, predictions, np.array([5])))


def test_harmonic_mean_is_zero_when_both_sides_are_zero():
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert harmonic_mean(0.5, 0.25) == pytest.approx(1 / 3)


# Three classes: 0 and 1 seen, 2 unseen. Four test images; integer scores keep the gaps exact.
SCORES = np.array([
    [9.0, 1.0, 5.0],   # label 0: seen leads by 4
    [2.0, 8.0, 7.0],   # label 1: seen leads by 1
    [6.0, 0.0, 4.0],   # label 2: seen (wrong) leads by 2
    [1.0, 3.0, 2.0],   # label 2: seen (wrong) leads by 1
])
LABELS = np.array([0, 1, 2, 2])
SEEN = np.array([True, True, False])


def test_zsl_top1_ranks_unseen_classes_only():
    # Only one unseen class: every unseen image is right when seen classes are excluded.
    assert zsl_top1(SCORES, LABELS, SEEN) == 1.0


def test_gzsl_at_gamma_zero_and_after_calibration():
    r0 = gzsl_accuracies(SCORES, LABELS, SEEN, 0.0)
    assert (r0.U, r0.S, r0.H) == (0.0, 1.0, 0.0)
    # γ = 1.5 flips the images whose seen lead is 1 (images 2 and 4) to the unseen class, not images 1 and 3.
    r = gzsl_accuracies(SCORES, LABELS, SEEN, 1.5)
    assert r.U == pytest.approx(0.5)           # one of two unseen images right, one unseen class
    assert r.S == pytest.approx(0.5)           # class 0 right (1.0), class 1 wrong (0.0)
    assert r.H == pytest.approx(0.5)


def test_gamma_sweep_curve_and_ausuc_by_hand():
    curve = seen_unseen_curve(SCORES, LABELS, SEEN)
    # Switch points (seen max − unseen max): 4, 1, 2, 1 → pieces γ < 1, 1–2, 2–4, γ > 4.
    np.testing.assert_allclose(curve.U, [0.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(curve.S, [1.0, 0.5, 0.5, 0.0])
    # Area under S(U): 0→0.5 trapezoid (1.0+0.5)/2·0.5 = 0.375, 0.5→1.0 at S = 0.5: 0.25, then a vertical drop.
    assert ausuc(SCORES, LABELS, SEEN) == pytest.approx(0.625)
    # Best H is 2/3 on the piece γ ∈ (2, 4).
    g = best_gamma_for_h(SCORES, LABELS, SEEN)
    assert 2 < g < 4
    assert gzsl_accuracies(SCORES, LABELS, SEEN, g).H == pytest.approx(2 / 3)


def test_curve_matches_brute_force_sweep_on_random_scores():
    rng = np.random.default_rng(0)
    n, c = 200, 9
    labels = rng.integers(0, c, n)
    scores = rng.normal(size=(n, c)) + 2.0 * np.eye(c)[labels]
    seen = np.arange(c) < 6
    curve = seen_unseen_curve(scores, labels, seen)
    for gamma, u, s in zip(curve.gammas, curve.U, curve.S):
        r = gzsl_accuracies(scores, labels, seen, gamma)
        assert (r.U, r.S) == pytest.approx((u, s), abs=1e-12)
    # The curve runs from all-seen (U = 0) to all-unseen predictions (S = 0, U = ZSL accuracy).
    assert curve.U[0] == 0 and curve.S[-1] == 0
    assert curve.U[-1] == pytest.approx(zsl_top1(scores, labels, seen))


def test_metrics_are_computed_in_float64_whatever_the_stored_dtype():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(50, 5)).astype(np.float32)
    labels = rng.integers(0, 5, 50)
    seen = np.array([True, True, True, False, False])
    a = gzsl_accuracies(scores, labels, seen, 0.3)
    b = gzsl_accuracies(scores.astype(np.float64), labels, seen, 0.3)
    assert a == b
