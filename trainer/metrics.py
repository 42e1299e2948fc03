"""Screening metrics, numpy only: the PhysioNet 2022 challenge scores exactly as the challenge defines
them (docs challenge-2022.md), ranking metrics that agree with scikit-learn, operating points and
bootstrap confidence intervals.

Conventions: `labels` are 0/1 arrays with 1 = Abnormal (refer); `scores` are probabilities or any
monotone score, higher = more likely abnormal. A patient is referred when `score >= threshold`.
Murmur confusion matrices are indexed `confusion[predicted][true]` in the order Present, Unknown,
Absent (runtime.records.MURMUR_CLASSES).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

MURMUR_WEIGHTS = np.array([5.0, 3.0, 1.0])  # by TRUE class: Present, Unknown, Absent


# --- challenge definitions -------------------------------------------------------------------------


def outcome_cost(tp: int, fp: int, fn: int, tn: int) -> float:
    """Mean cost per patient of a referral policy (challenge 2022 outcome cost; lower is better)."""
    n = tp + fp + fn + tn
    if n <= 0:
        raise ValueError("outcome_cost needs at least one patient (tp+fp+fn+tn > 0)")

    def cost_expert(m: float, n: float) -> float:
        r = m / n
        return (25.0 + 397.0 * r - 1718.0 * r**2 + 11296.0 * r**4) * n

    total = 10.0 * n + cost_expert(tp + fp, n) + 10000.0 * tp + 50000.0 * fn
    return float(total / n)


def outcome_weighted_accuracy(tp: int, fp: int, fn: int, tn: int) -> float:
    """(5*TP + TN) / (5*(TP+FN) + FP + TN), reported by the challenge but not ranked."""
    return float((5 * tp + tn) / (5 * (tp + fn) + fp + tn))


def murmur_weighted_accuracy(confusion: Sequence[Sequence[float]] | np.ndarray) -> float:
    """Challenge murmur score: confusion[predicted][true], classes Present, Unknown, Absent."""
    m = np.asarray(confusion, dtype=np.float64)
    if m.shape != (3, 3):
        raise ValueError(f"murmur confusion must be 3x3 [predicted][true], got shape {m.shape}")
    true_counts = m.sum(axis=0)
    denominator = float(MURMUR_WEIGHTS @ true_counts)
    if denominator == 0:
        return float("nan")
    return float(MURMUR_WEIGHTS @ np.diag(m) / denominator)


def confusion_matrix(true_idx: np.ndarray, pred_idx: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts [predicted][true] (the challenge's orientation), int64 [n_classes, n_classes]."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(pred_idx, dtype=np.int64), np.asarray(true_idx, dtype=np.int64)), 1)
    return m


def binary_counts(labels: np.ndarray, referred: np.ndarray) -> tuple[int, int, int, int]:
    """(TP, FP, FN, TN) of boolean referrals against 0/1 labels."""
    y = np.asarray(labels).astype(bool)
    r = np.asarray(referred).astype(bool)
    return int(np.sum(r & y)), int(np.sum(r & ~y)), int(np.sum(~r & y)), int(np.sum(~r & ~y))


# --- ranking metrics ------------------------------------------------------------------------------


def _check_binary(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} vs {s.shape[0]}")
    return y, s


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank (as scipy.stats.rankdata's default)."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    boundaries = np.flatnonzero(np.diff(sorted_values)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(values)]])
    ranks = np.empty(len(values), dtype=np.float64)
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return ranks


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U / (n_pos * n_neg)); nan when one class is absent."""
    y, s = _check_binary(labels, scores)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def auprc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision, sum_n (R_n - R_{n-1}) P_n over distinct thresholds (scikit-learn's
    average_precision_score); nan without positives."""
    y, s = _check_binary(labels, scores)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s_sorted) - 1]
    tps = np.cumsum(y_sorted)[last_of_tie]
    predicted = last_of_tie + 1
    precision = tps / predicted
    recall = tps / n_pos
    recall_steps = np.diff(np.r_[0.0, recall])
    return float(np.sum(recall_steps * precision))


def macro_ovr(metric: Callable[[np.ndarray, np.ndarray], float], true_idx: np.ndarray, probs: np.ndarray) -> float:
    """One-vs-rest macro mean of a binary ranking metric over the columns of probs [N, K]; classes
    without positives are left out (as the challenge's scoring code does)."""
    t = np.asarray(true_idx)
    p = np.asarray(probs, dtype=np.float64)
    values = [metric((t == k).astype(np.int64), p[:, k]) for k in range(p.shape[1])]
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


# --- thresholded metrics --------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b > 0 else float("nan")


def threshold_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Sensitivity, specificity, MAcc (their mean, the 2016 challenge score), F1, precision,
    challenge cost and weighted accuracy when referring `scores >= threshold`."""
    y, s = _check_binary(labels, scores)
    tp, fp, fn, tn = binary_counts(y, s >= threshold)
    sensitivity = _ratio(tp, tp + fn)
    specificity = _ratio(tn, tn + fp)
    precision = _ratio(tp, tp + fp)
    return {
        "threshold": float(threshold),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "macc": (sensitivity + specificity) / 2.0,
        "precision": precision,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "cost": outcome_cost(tp, fp, fn, tn),
        "weighted_accuracy": outcome_weighted_accuracy(tp, fp, fn, tn),
    }


def unweighted_average_recall(confusion: np.ndarray) -> float:
    """UAR: mean over true classes (columns) of the recall; classes without examples are left out."""
    m = np.asarray(confusion, dtype=np.float64)
    true_counts = m.sum(axis=0)
    present = true_counts > 0
    return float(np.mean(np.diag(m)[present] / true_counts[present])) if present.any() else float("nan")


def murmur_metrics(true_idx: np.ndarray, probs: np.ndarray) -> dict[str, object]:
    """Murmur scores for probabilities [N, 3] (Present, Unknown, Absent), predicting the arg-max."""
    p = np.asarray(probs, dtype=np.float64)
    t = np.asarray(true_idx, dtype=np.int64)
    confusion = confusion_matrix(t, p.argmax(axis=1), 3)
    return {
        "weighted_accuracy": murmur_weighted_accuracy(confusion),
        "uar": unweighted_average_recall(confusion),
        "accuracy": float(np.trace(confusion) / max(1, confusion.sum())),
        "auroc": macro_ovr(auroc, t, p),
        "auprc": macro_ovr(auprc, t, p),
        "confusion": confusion.tolist(),
    }


# --- operating points -----------------------------------------------------------------------------


def cost_optimal_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """Threshold minimising the challenge cost on these (validation) data. Every threshold between
    two neighbouring distinct scores gives the same referrals; the midpoint is returned, so the
    choice does not sit on one validation patient's score. Ties in cost go to the lower threshold
    (more referrals: a missed abnormal costs five times a referral)."""
    y, s = _check_binary(labels, scores)
    if len(y) == 0:
        raise ValueError("cannot choose an operating point without validation data")
    distinct = np.unique(s)
    refer_nobody = distinct[-1] + max(1e-6, 0.5 * (distinct[-1] - distinct[0]) / max(1, len(distinct)))
    candidates = np.r_[distinct, refer_nobody]
    costs = np.array([outcome_cost(*binary_counts(y, s >= t)) for t in candidates])
    i = int(np.argmin(costs))
    if i == 0:
        return float(distinct[0] - 1e-6)
    return float((candidates[i - 1] + candidates[i]) / 2.0)


def sensitivity_threshold(labels: np.ndarray, scores: np.ndarray, min_sensitivity: float = 0.95) -> float:
    """The highest threshold whose sensitivity on these (validation) data is >= min_sensitivity."""
    y, s = _check_binary(labels, scores)
    positives = np.sort(s[y == 1])
    if len(positives) == 0:
        raise ValueError("cannot choose a high-sensitivity point: no abnormal examples in the validation data")
    # referring scores >= positives[k] catches len - k positives; keep the largest k that suffices
    k = int(np.floor(len(positives) * (1.0 - min_sensitivity) + 1e-9))
    return float(positives[min(k, len(positives) - 1)])


# --- calibration (Platt scaling) ------------------------------------------------------------------


def fit_platt(logits: np.ndarray, labels: np.ndarray, ridge: float = 1.0, n_iter: int = 100, balanced: bool = False) -> tuple[float, float]:
    """Platt scaling p = sigmoid(a*logit + b): Newton's method with step halving on Platt's smoothed
    targets plus a small ridge pulling (a, b) toward (1, 0), so separable or near-constant validation
    scores give a large but finite slope instead of diverging. Returns (a, b).

    balanced=True weighs the two classes equally (each example by n / (2 * its class count)), so
    a*logit + b estimates the log-likelihood ratio, the probability is for a prior of 1/2, and the
    prevalence of the calibration set does not enter the score."""
    z = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    if n_pos == 0 or n_neg == 0:
        return 1.0, 0.0
    target = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    weight = np.where(y == 1, len(y) / (2 * n_pos), len(y) / (2 * n_neg)) if balanced else np.ones_like(y)

    def loss(a: float, b: float) -> float:
        u = a * z + b
        return float(np.sum(weight * (np.logaddexp(0.0, u) - target * u)) + 0.5 * ridge * ((a - 1.0) ** 2 + b**2))

    a, b = 1.0, 0.0
    current = loss(a, b)
    for _ in range(n_iter):
        p = apply_platt(z, a, b)
        w = weight * p * (1 - p)
        r = weight * (p - target)
        g = np.array([np.sum(r * z) + ridge * (a - 1.0), np.sum(r) + ridge * b])
        h = np.array([[np.sum(w * z * z) + ridge, np.sum(w * z)], [np.sum(w * z), np.sum(w) + ridge]])
        step = np.linalg.solve(h, g)
        scale = 1.0
        while scale > 1e-6 and loss(a - scale * step[0], b - scale * step[1]) > current:
            scale /= 2.0
        a, b = a - scale * step[0], b - scale * step[1]
        previous, current = current, loss(a, b)
        if previous - current < 1e-12:
            break
    return float(a), float(b)


def apply_platt(logits: np.ndarray, a: float, b: float) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * (a * np.asarray(logits, dtype=np.float64) + b)))  # sigmoid without overflow


def calibration_bins(labels: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> dict[str, list[float] | float]:
    """Reliability diagram in equal-width bins, and the expected calibration error."""
    y, p = _check_binary(labels, probs)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1]), 0, n_bins - 1)
    mean_p, frac_pos, counts = [], [], []
    ece = 0.0
    for k in range(n_bins):
        in_bin = index == k
        counts.append(int(in_bin.sum()))
        if in_bin.any():
            mean_p.append(float(p[in_bin].mean()))
            frac_pos.append(float(y[in_bin].mean()))
            ece += in_bin.mean() * abs(mean_p[-1] - frac_pos[-1])
        else:
            mean_p.append(float("nan"))
            frac_pos.append(float("nan"))
    return {"mean_probability": mean_p, "fraction_abnormal": frac_pos, "count": counts, "ece": float(ece)}


# --- summaries ------------------------------------------------------------------------------------


def bootstrap_ci(
    metric: Callable[..., float],
    *arrays: np.ndarray,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of metric(*arrays) over resampled rows (patients). Resamples
    where the metric is undefined (nan, e.g. one class drawn) are dropped."""
    arrays = tuple(np.asarray(a) for a in arrays)
    n = len(arrays[0])
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        rows = rng.integers(0, n, n)
        v = metric(*(a[rows] for a in arrays))
        if not np.isnan(v):
            values.append(v)
    if not values:
        return float("nan"), float("nan")
    tail = (1.0 - confidence) / 2.0 * 100.0
    lo, hi = np.percentile(values, [tail, 100.0 - tail])
    return float(lo), float(hi)


def outcome_summary(labels: np.ndarray, probs: np.ndarray, threshold: float, n_boot: int = 1000, seed: int = 0) -> dict:
    """All outcome metrics at one operating point, AUROC/AUPRC/MAcc with bootstrap 95% intervals."""
    y, p = _check_binary(labels, probs)
    summary = threshold_metrics(y, p, threshold)
    summary["n"] = int(len(y))
    summary["n_abnormal"] = int(y.sum())
    summary["auroc"] = auroc(y, p)
    summary["auprc"] = auprc(y, p)
    summary["auroc_ci"] = bootstrap_ci(auroc, y, p, n_boot=n_boot, seed=seed)
    summary["auprc_ci"] = bootstrap_ci(auprc, y, p, n_boot=n_boot, seed=seed)
    summary["macc_ci"] = bootstrap_ci(lambda a, b: threshold_metrics(a, b, threshold)["macc"], y, p, n_boot=n_boot, seed=seed)
    summary["cost_ci"] = bootstrap_ci(lambda a, b: threshold_metrics(a, b, threshold)["cost"], y, p, n_boot=n_boot, seed=seed)
    return summary


def mean_sd(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation, ignoring nan entries."""
    v = np.asarray([x for x in values if x is not None and not np.isnan(x)], dtype=np.float64)
    if len(v) == 0:
        return {"mean": float("nan"), "sd": float("nan")}
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
