"""Fold summaries: operating points apply to calibrated probabilities, rankings to calibrated logits."""

from __future__ import annotations

import numpy as np
import pytest

from trainer import metrics
from trainer.summary import FoldOutcome, summarize


def outcome(name: str, seed: int, a: float = 3.0, b: float = -0.5) -> FoldOutcome:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 80)
    logits = rng.normal(labels * 1.5 - 0.75, 1.0) * 8.0  # large logits: probabilities saturate
    probabilities = metrics.apply_platt(logits, a, b)
    return FoldOutcome(name, [f"{name}-{i}" for i in range(80)], labels, logits, probabilities, None, None,
                       np.zeros((80, 5)), labels, probabilities, (a, b), {"cost_optimal": 0.4, "high_sensitivity": 0.2},
                       [], 3, 1.0, 0.5)


def test_fold_and_pooled_operating_points_use_probabilities_and_agree(tmp_path):
    folds = [outcome("fold1", 1), outcome("fold2", 2)]
    summary = summarize(folds, n_boot=50)
    for f in folds:
        expected = metrics.threshold_metrics(f.test_labels, f.test_probabilities, 0.4)
        assert summary["folds"][f.name]["cost_optimal"]["cost"] == pytest.approx(expected["cost"])
    pooled = summary["pooled"]["cost_optimal"]
    assert pooled["tp"] == sum(summary["folds"][f.name]["cost_optimal"]["tp"] for f in folds)
    assert pooled["fn"] == sum(summary["folds"][f.name]["cost_optimal"]["fn"] for f in folds)


def test_auroc_ranks_calibrated_logits_so_saturated_probabilities_do_not_tie():
    f = outcome("fold1", 3, a=50.0)
    assert len(np.unique(f.test_probabilities)) < len(np.unique(f.test_logits))  # saturation made ties
    summary = summarize([f], n_boot=50)
    assert summary["folds"]["fold1"]["auroc"] == pytest.approx(metrics.auroc(f.test_labels, f.test_logits))


def test_fold_outcomes_round_trip_through_their_files(tmp_path):
    f = outcome("fold1", 4)
    f.save(tmp_path)
    loaded = FoldOutcome.load(tmp_path)
    assert loaded.platt == f.platt and loaded.test_murmur is None
    assert np.array_equal(loaded.test_logits, f.test_logits) and loaded.test_ids == f.test_ids
