"""sweep.md: one row per configuration from the GPU sweep's fold outcomes."""
import json, sys
import numpy as np
from pathlib import Path
from trainer.summary import FoldOutcome
from trainer.metrics import auroc, bootstrap_ci, fit_platt

root = Path(sys.argv[1]); sweep = json.loads((root.parent / "sweep.json").read_text())
rows = ["| configuration | extra pcg-train arguments | pooled AUROC [95% CI] (prevalence Platt) | pooled AUROC [95% CI] (balanced Platt) | a | c | d | e | mean of a-e | best epochs (a,c,d,e) |",
        "|---|---|---|---|---|---|---|---|---|---|"]
for name, row in sweep.items():
    if "seed-ensemble" in name or "pooled_auroc" not in row:
        continue
    outs = [FoldOutcome.load(d) for d in sorted(p.parent for p in (root / name).glob("*/outcome.json"))]
    y = np.concatenate([o.test_labels for o in outs])
    bal = []
    for o in outs:
        a, b = o.platt
        pv = np.clip(o.validation_probabilities, 1e-12, 1 - 1e-12)
        zv = (np.log(pv) - np.log1p(-pv) - b) / a  # the validation logits back from the stored probabilities
        a2, b2 = fit_platt(zv, o.validation_labels, balanced=True)
        bal.append(a2 * o.test_logits + b2)
    z = np.concatenate(bal); ci = bootstrap_ci(auroc, y, z, n_boot=500)
    per = row["per_db"]
    rows.append(f"| {name} | `{' '.join(row['args']) or '(none)'}` | {row['pooled_auroc']:.3f} [{row['ci'][0]:.3f}, {row['ci'][1]:.3f}] | "
                f"{auroc(y, z):.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | " + " | ".join(f"{per[k]:.3f}" for k in sorted(per)) +
                f" | {np.mean(list(per.values())):.3f} | {','.join(map(str, row['best_epochs']))} |")
print("\n".join(rows))
