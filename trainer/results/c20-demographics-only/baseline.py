"""Demographics alone, no audio: ridge logistic regression on the 15-value metadata encoding
(runtime.metadata, statistics from each training part), on the saved CirCor partitions. The
floor any demographic-conditioned model must beat, and a measure of what the fields carry.

    python trainer/results/c20-demographics-only/baseline.py ../shared/data/circor trainer/partitions/circor-p*.json
"""

import json
import sys
from pathlib import Path

import numpy as np

from runtime.formats import load_dataset
from runtime.metadata import MetadataStats, encode_batch
from trainer import metrics


def fit_logistic(x, y, ridge=1.0, steps=50):
    x1 = np.c_[x, np.ones(len(x))]
    w = np.zeros(x1.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-x1 @ w))
        grad = x1.T @ (p - y) + ridge * np.r_[w[:-1], 0]
        hess = (x1 * (p * (1 - p))[:, None]).T @ x1 + ridge * np.diag(np.r_[np.ones(len(w) - 1), 0])
        w -= np.linalg.solve(hess, grad)
    return w


def main(data, partitions):
    dataset = load_dataset(data)
    patients = {p.patient_id: p for p in dataset.patients}
    lines = []
    for path in partitions:
        body = json.loads(Path(path).read_text())
        ids_all = [i for f in body["folds"] for i in f["test"]]
        y_all, s_all, r_all, m_all = [], [], [], []
        for fold in body["folds"]:
            test, val = set(fold["test"]), set(fold["validation"])
            train = [i for i in ids_all if i not in test and i not in val]
            stats = MetadataStats.fit([patients[i].demographics for i in train])
            enc = lambda ids: encode_batch([patients[i].demographics for i in ids], stats)
            lab = lambda ids: np.array([patients[i].outcome == "Abnormal" for i in ids], dtype=float)
            w = fit_logistic(enc(train), lab(train))
            score = lambda ids: np.c_[enc(ids), np.ones(len(ids))] @ w
            v_ids, t_ids = sorted(val), sorted(test)
            a, b = metrics.fit_platt(score(v_ids), lab(v_ids).astype(int))
            threshold = metrics.cost_optimal_threshold(lab(v_ids).astype(int), metrics.apply_platt(score(v_ids), a, b))
            y_all.append(lab(t_ids)); s_all.append(score(t_ids))
            r_all.append(metrics.apply_platt(score(t_ids), a, b) >= threshold)
        y, s, r = np.concatenate(y_all).astype(int), np.concatenate(s_all), np.concatenate(r_all)
        auroc = metrics.auroc(y, s)
        ci = metrics.bootstrap_ci(metrics.auroc, y, s, n_boot=1000)
        tm = metrics.threshold_metrics(y, r.astype(float), 0.5)
        lines.append(f"{Path(path).name}: demographics-only AUROC {auroc:.3f} [{ci[0]:.3f}, {ci[1]:.3f}], cost {tm['cost']:.0f}, "
                     f"sensitivity {tm['sensitivity']:.3f}, specificity {tm['specificity']:.3f}, referred {r.mean():.2f}")
    refer_all = metrics.outcome_cost(*metrics.binary_counts(y, np.ones_like(y)))
    lines.append(f"referring every child: cost {refer_all:.0f}")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
