"""trainer.metrics reproduces the challenge's worked values and agrees with reference definitions."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from trainer import metrics


@pytest.mark.parametrize(
    "tp, fp, fn, tn, expected",
    [
        (100, 100, 0, 0, 15010.000),
        (0, 0, 100, 100, 25035.000),
        (50, 0, 0, 50, 5510.000),
        (456, 486, 0, 0, 14850.764),
        (300, 200, 156, 286, 12123.277),
    ],
)
def test_outcome_cost_matches_the_challenge_worked_values(tp, fp, fn, tn, expected):
    assert metrics.outcome_cost(tp, fp, fn, tn) == pytest.approx(expected, abs=5e-4)


def test_outcome_cost_rejects_an_empty_population():
    with pytest.raises(ValueError, match="at least one patient"):
        metrics.outcome_cost(0, 0, 0, 0)


def test_murmur_weighted_accuracy_of_predicting_absent_for_everyone_is_0_3874():
    # predicted Absent for all: row Absent holds the true counts 179 / 68 / 695
    confusion = [[0, 0, 0], [0, 0, 0], [179, 68, 695]]
    assert round(metrics.murmur_weighted_accuracy(confusion), 4) == 0.3874


def test_murmur_weighted_accuracy_weights_by_the_true_class():
    # one Present right (5), one Unknown predicted Absent (0 of 3): 5 / 8
    confusion = metrics.confusion_matrix(np.array([0, 1]), np.array([0, 2]), 3)
    assert confusion[2][1] == 1  # [predicted][true]
    assert metrics.murmur_weighted_accuracy(confusion) == pytest.approx(5 / 8)


def test_outcome_weighted_accuracy_definition():
    assert metrics.outcome_weighted_accuracy(10, 5, 2, 20) == pytest.approx((50 + 20) / (60 + 25))


def test_auroc_equals_the_mann_whitney_statistic_with_ties():
    stats = pytest.importorskip("scipy.stats", reason="scipy (dev extra) gives the reference Mann-Whitney U")
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.normal(labels * 0.7, 1.0), 1)  # rounding makes ties
    u = stats.mannwhitneyu(scores[labels == 1], scores[labels == 0]).statistic
    expected = u / (labels.sum() * (1 - labels).sum())
    assert metrics.auroc(labels, scores) == pytest.approx(expected, abs=1e-12)


def test_auroc_hand_values():
    assert metrics.auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert metrics.auroc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert np.isnan(metrics.auroc([1, 1], [0.2, 0.3]))


def test_auprc_matches_the_step_definition_computed_by_hand():
    # scikit-learn's documented example: average_precision_score -> 0.8333...
    assert metrics.auprc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.83333333)
    # a tie between a positive and a negative is one threshold: P=0.5 at R=1 after P=1 at R=0.5
    assert metrics.auprc([1, 1, 0], [0.9, 0.5, 0.5]) == pytest.approx(0.5 * 1.0 + 0.5 * (2 / 3))


def test_threshold_metrics_counts_and_macc():
    labels = np.array([1, 1, 1, 0, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.2, 0.7, 0.1, 0.1, 0.3])
    m = metrics.threshold_metrics(labels, scores, 0.5)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 3)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["macc"] == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert m["f1"] == pytest.approx(4 / 6)
    assert m["cost"] == pytest.approx(metrics.outcome_cost(2, 1, 1, 3))


def test_cost_optimal_threshold_minimises_cost_over_every_threshold():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = rng.normal(labels * 1.0, 1.0)
    t = metrics.cost_optimal_threshold(labels, scores)
    best = min(metrics.outcome_cost(*metrics.binary_counts(labels, scores >= s)) for s in np.r_[scores, np.inf])
    assert metrics.threshold_metrics(labels, scores, t)["cost"] == pytest.approx(best)
    assert not np.any(scores == t)  # midpoint between two scores


def test_sensitivity_threshold_reaches_the_requested_sensitivity_and_no_higher_threshold_does():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 500)
    scores = rng.normal(labels * 1.0, 1.0)
    t = metrics.sensitivity_threshold(labels, scores, 0.95)
    assert metrics.threshold_metrics(labels, scores, t)["sensitivity"] >= 0.95
    next_up = np.min(scores[scores > t])
    assert metrics.threshold_metrics(labels, scores, next_up)["sensitivity"] < 0.95


def test_platt_scaling_recovers_a_known_logistic_relation():
    rng = np.random.default_rng(2)
    logits = rng.normal(0.0, 2.0, 20000)
    labels = rng.random(20000) < 1.0 / (1.0 + np.exp(-(0.5 * logits - 1.0)))
    a, b = metrics.fit_platt(logits, labels)
    assert a == pytest.approx(0.5, abs=0.05)
    assert b == pytest.approx(-1.0, abs=0.07)
    calibrated = metrics.apply_platt(logits, a, b)
    assert metrics.calibration_bins(labels, calibrated)["ece"] < metrics.calibration_bins(labels, 1 / (1 + np.exp(-logits)))["ece"]


def test_bootstrap_interval_contains_the_point_estimate_and_narrows_with_more_data():
    rng = np.random.default_rng(4)

    def width(n):
        labels = rng.integers(0, 2, n)
        scores = rng.normal(labels, 1.0)
        lo, hi = metrics.bootstrap_ci(metrics.auroc, labels, scores, n_boot=300)
        assert lo <= metrics.auroc(labels, scores) <= hi
        return hi - lo

    assert width(2000) < width(100)


def test_murmur_metrics_uar_and_macro_auroc():
    true = np.array([0, 0, 1, 2, 2, 2])
    probs = np.array(
        [[0.8, 0.1, 0.1], [0.2, 0.1, 0.7], [0.1, 0.6, 0.3], [0.1, 0.1, 0.8], [0.2, 0.2, 0.6], [0.7, 0.2, 0.1]]
    )
    m = metrics.murmur_metrics(true, probs)
    assert m["uar"] == pytest.approx((1 / 2 + 1 + 2 / 3) / 3)
    assert m["weighted_accuracy"] == pytest.approx((5 * 1 + 3 * 1 + 2) / (5 * 2 + 3 * 1 + 3))
    assert m["confusion"][2][0] == 1  # a Present predicted Absent


def test_metrics_module_imports_without_torch():
    code = "import sys, trainer.metrics, trainer.evaluate, trainer.report, trainer.summary; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_platt_scaling_stays_finite_on_separable_or_constant_validation_scores():
    separable = metrics.fit_platt(np.array([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0]), np.array([0, 0, 0, 1, 1, 1]))
    constant = metrics.fit_platt(np.full(20, 0.7), np.array([0, 1] * 10))
    for a, b in (separable, constant):
        assert np.isfinite(a) and np.isfinite(b) and abs(a) < 50 and abs(b) < 50
    calibrated = metrics.apply_platt(np.array([-3.0, 3.0]), *separable)
    assert 0.0 < calibrated[0] < 0.5 < calibrated[1] < 1.0  # still ordered, never saturated to 0 or 1
    assert metrics.apply_platt(np.array([0.7]), *constant)[0] == pytest.approx(0.5, abs=0.05)
