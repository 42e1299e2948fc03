"""Fold predictions and their summaries (numpy only: pcg-eval and the report read these too).

    FoldOutcome: one fold's test predictions, validation choices and timings; saved as
    <fold dir>/outcome.npz + outcome.json so an interrupted cross-validation resumes per fold.
    summarize(outcomes): metrics.json content: per fold, mean and sd over folds, and pooled (the
    test folds concatenated), with bootstrap 95% intervals.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer import metrics

OPERATING_POINTS = ("cost_optimal", "high_sensitivity")


@dataclass
class FoldOutcome:
    name: str
    test_ids: list[str]
    test_labels: np.ndarray  # 0/1 refer labels (outcome Abnormal; murmur task: Present or Unknown)
    test_logits: np.ndarray  # crop-averaged logits, uncalibrated
    test_probabilities: np.ndarray  # Platt-calibrated
    test_murmur: np.ndarray | None  # [N, 3] murmur probabilities (murmur task)
    test_murmur_labels: np.ndarray | None
    test_site_weights: np.ndarray  # [N, S]
    validation_labels: np.ndarray
    validation_probabilities: np.ndarray
    platt: tuple[float, float]
    thresholds: dict[str, float]
    history: list[dict]
    best_epoch: int
    seconds: float
    seconds_per_epoch: float
    test_logits_unadapted: np.ndarray | None = None  # with --adapt-bn: the same models' test logits before adaptation
    platt_unadapted: tuple[float, float] | None = None  # with --adapt-bn: Platt fitted to the unadapted validation logits

    @property
    def test_scores(self) -> np.ndarray:
        """Calibrated logits a*z + b: the ranking score. Same order as the probabilities, but never
        tied by saturation at 0 or 1, and comparable across folds (pooled AUROC)."""
        return self.platt[0] * self.test_logits + self.platt[1]

    _ARRAYS = ("test_labels", "test_logits", "test_probabilities", "test_murmur", "test_murmur_labels",
               "test_site_weights", "validation_labels", "validation_probabilities", "test_logits_unadapted")

    def save(self, folder: Path) -> None:
        arrays = {k: getattr(self, k) for k in self._ARRAYS if getattr(self, k) is not None}
        np.savez(folder / "outcome.npz", **arrays)
        scalars = {k: v for k, v in self.__dict__.items() if k not in self._ARRAYS}
        (folder / "outcome.json").write_text(json.dumps(scalars, indent=1))

    @classmethod
    def load(cls, folder: Path) -> FoldOutcome:
        scalars = json.loads((folder / "outcome.json").read_text())
        with np.load(folder / "outcome.npz") as data:
            arrays = {k: (data[k] if k in data else None) for k in cls._ARRAYS}
        scalars["platt"] = tuple(scalars["platt"])
        return cls(**scalars, **arrays)


def fold_metrics(outcome: FoldOutcome, n_boot: int = 1000) -> dict:
    """Test metrics of one fold at each operating point chosen on its validation part."""
    result = {"n": int(len(outcome.test_labels)), "best_epoch": outcome.best_epoch, "seconds": outcome.seconds,
              "seconds_per_epoch": outcome.seconds_per_epoch, "thresholds": outcome.thresholds}
    y, p = outcome.test_labels, outcome.test_scores
    result["auroc"] = metrics.auroc(y, p)
    result["auprc"] = metrics.auprc(y, p)
    result["auroc_ci"] = metrics.bootstrap_ci(metrics.auroc, y, p, n_boot=n_boot)
    for point in OPERATING_POINTS:
        result[point] = metrics.threshold_metrics(y, outcome.test_probabilities, outcome.thresholds[point])
    result["ece"] = metrics.calibration_bins(y, outcome.test_probabilities)["ece"]
    if outcome.test_murmur is not None:
        result["murmur"] = metrics.murmur_metrics(outcome.test_murmur_labels, outcome.test_murmur)
    return result


def pooled_metrics(outcomes: list[FoldOutcome], n_boot: int = 1000) -> dict:
    """Test folds concatenated: each patient scored once by the model that did not see it. Each
    fold's decisions use that fold's own threshold (its referrals are concatenated)."""
    y = np.concatenate([o.test_labels for o in outcomes])
    p = np.concatenate([o.test_scores for o in outcomes])
    result: dict = {"n": int(len(y)), "n_abnormal": int(y.sum())}
    result["auroc"] = metrics.auroc(y, p)
    result["auroc_ci"] = metrics.bootstrap_ci(metrics.auroc, y, p, n_boot=n_boot)
    result["auprc"] = metrics.auprc(y, p)
    result["auprc_ci"] = metrics.bootstrap_ci(metrics.auprc, y, p, n_boot=n_boot)
    for point in OPERATING_POINTS:
        referred = np.concatenate([o.test_probabilities >= o.thresholds[point] for o in outcomes])
        # referral flags as scores with threshold 0.5 reproduce each fold's own decision
        flags = referred.astype(np.float64)
        result[point] = metrics.threshold_metrics(y, flags, 0.5)
        del result[point]["threshold"]
        result[point]["macc_ci"] = metrics.bootstrap_ci(lambda a, b: metrics.threshold_metrics(a, b, 0.5)["macc"], y, flags, n_boot=n_boot)
        result[point]["cost_ci"] = metrics.bootstrap_ci(lambda a, b: metrics.threshold_metrics(a, b, 0.5)["cost"], y, flags, n_boot=n_boot)
    if outcomes[0].test_murmur is not None:
        t = np.concatenate([o.test_murmur_labels for o in outcomes])
        m = np.concatenate([o.test_murmur for o in outcomes])
        result["murmur"] = metrics.murmur_metrics(t, m)
        result["murmur"]["weighted_accuracy_ci"] = metrics.bootstrap_ci(
            lambda a, b: metrics.murmur_metrics(a, b)["weighted_accuracy"], t, m, n_boot=n_boot)
        result["murmur"]["uar_ci"] = metrics.bootstrap_ci(lambda a, b: metrics.murmur_metrics(a, b)["uar"], t, m, n_boot=n_boot)
    return result


def by_group(outcomes: list[FoldOutcome], group_of: dict[str, str], n_boot: int = 1000) -> dict:
    """Pooled test predictions split by database/campaign: AUROC and cost-optimal MAcc per group."""
    ids = [i for o in outcomes for i in o.test_ids]
    y = np.concatenate([o.test_labels for o in outcomes])
    p = np.concatenate([o.test_scores for o in outcomes])
    referred = np.concatenate([o.test_probabilities >= o.thresholds["cost_optimal"] for o in outcomes]).astype(np.float64)
    groups = np.array([group_of[i] for i in ids])
    result = {}
    for g in sorted(set(groups.tolist())):
        rows = groups == g
        m = metrics.threshold_metrics(y[rows], referred[rows], 0.5)
        result[g] = {
            "n": int(rows.sum()), "n_abnormal": int(y[rows].sum()),
            "auroc": metrics.auroc(y[rows], p[rows]),
            "auroc_ci": metrics.bootstrap_ci(metrics.auroc, y[rows], p[rows], n_boot=n_boot),
            "macc": m["macc"], "sensitivity": m["sensitivity"], "specificity": m["specificity"],
            "macc_ci": metrics.bootstrap_ci(lambda a, b: metrics.threshold_metrics(a, b, 0.5)["macc"], y[rows], referred[rows], n_boot=n_boot),
        }
    return result


def summarize(outcomes: list[FoldOutcome], group_of: dict[str, str] | None = None, n_boot: int = 1000) -> dict:
    """metrics.json body: per fold, mean and sd across folds, pooled, and per database."""
    per_fold = {o.name: fold_metrics(o, n_boot) for o in outcomes}
    across = {"auroc": metrics.mean_sd([f["auroc"] for f in per_fold.values()]),
              "auprc": metrics.mean_sd([f["auprc"] for f in per_fold.values()])}
    for point in OPERATING_POINTS:
        for key in ("cost", "macc", "sensitivity", "specificity", "f1", "weighted_accuracy"):
            across[f"{point}.{key}"] = metrics.mean_sd([f[point][key] for f in per_fold.values()])
    if outcomes[0].test_murmur is not None:
        for key in ("weighted_accuracy", "uar", "auroc"):
            across[f"murmur.{key}"] = metrics.mean_sd([f["murmur"][key] for f in per_fold.values()])
    summary = {"folds": per_fold, "mean_sd": across, "pooled": pooled_metrics(outcomes, n_boot)}
    if group_of is not None:
        summary["by_group"] = by_group(outcomes, group_of, n_boot)
    if all(o.test_logits_unadapted is not None for o in outcomes):
        summary["unadapted"] = unadapted_metrics(outcomes, group_of, n_boot)
    return summary


def unadapted_metrics(outcomes: list[FoldOutcome], group_of: dict[str, str] | None, n_boot: int = 1000) -> dict:
    """The same models' test AUROC before batch-norm adaptation (pcg-train --adapt-bn): pooled, and
    per database, so adaptation is judged on identical models and patients."""
    y = np.concatenate([o.test_labels for o in outcomes])
    p = np.concatenate([(o.platt_unadapted or o.platt)[0] * o.test_logits_unadapted + (o.platt_unadapted or o.platt)[1] for o in outcomes])
    result = {"auroc": metrics.auroc(y, p), "auroc_ci": metrics.bootstrap_ci(metrics.auroc, y, p, n_boot=n_boot)}
    if group_of is not None:
        groups = np.array([group_of[i] for o in outcomes for i in o.test_ids])
        result["by_group"] = {g: metrics.auroc(y[groups == g], p[groups == g]) for g in sorted(set(groups.tolist()))}
    return result
