"""Seed ensemble post hoc: mean calibrated logit over LODO runs of several seeds, per recording."""
import sys, json
from pathlib import Path
import numpy as np
sys.path.insert(0, ".")
from trainer.summary import FoldOutcome
from trainer import metrics
adapted, unadapted, labels = {}, {}, {}
for run in sys.argv[1:]:
    for d in sorted(Path(run).glob("training-*")):
        o = FoldOutcome.load(d)
        pu = o.platt_unadapted or o.platt
        for i, y, s, u in zip(o.test_ids, o.test_labels, o.test_scores, pu[0] * o.test_logits_unadapted + pu[1]):
            adapted.setdefault(i, []).append(s); unadapted.setdefault(i, []).append(u); labels[i] = y
ids = sorted(labels)
y = np.array([labels[i] for i in ids])
for name, d in (("adapted", adapted), ("unadapted", unadapted)):
    s = np.array([np.mean(d[i]) for i in ids])
    print(name, f"seed ensemble of {len(sys.argv) - 1}: pooled AUROC {metrics.auroc(y, s):.3f}", [round(v, 3) for v in metrics.bootstrap_ci(metrics.auroc, y, s, n_boot=1000)])
