"""The selection protocol's arithmetic: configurations over seeds, paired against a baseline.

    python -m trainer.compare --out trainer/results/NAME \
        primary='runs/c20-p0-primary-s*' hyper='runs/c20-p0-hyper-s*' ...

Every argument NAME=GLOB names one configuration and its runs (one per seed, all on the same saved
partition). The first configuration is the baseline. For each configuration: the mean over seeds
of each seed's pooled out-of-fold figures (AUROC, challenge cost, sensitivity and specificity at
the cost-optimal point, murmur weighted accuracy where there is one), and the seed ensemble (each
patient's calibrated scores averaged over the seeds' models that never saw it). Against the
baseline: the paired difference per seed (same seed, same partition) and per fold, and whether it
clears the promotion bar (mean paired gain >= +0.02 AUROC or <= -300 cost, issue 20's protocol).
Writes compare.json and compare.md into --out.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import numpy as np

from trainer import metrics
from trainer.summary import FoldOutcome

PROMOTE_AUROC, PROMOTE_COST = 0.02, -300.0


def run_figures(run: Path) -> dict:
    body = json.loads((run / "metrics.json").read_text())
    pooled, folds = body["summary"]["pooled"], body["summary"]["folds"]
    point = pooled["cost_optimal"]
    figures = {"run": str(run), "seed": int(body["settings"]["train"]["seed"]), "auroc": pooled["auroc"], "cost": point["cost"],
               "sensitivity": point["sensitivity"], "specificity": point["specificity"],
               "referral_rate": None, "seconds": body["settings"].get("seconds_total"),
               "folds": {name: {"auroc": f["auroc"], "cost": f["cost_optimal"]["cost"]} for name, f in folds.items()},
               "best_epochs": [f["best_epoch"] for f in folds.values()]}
    if "murmur" in pooled:
        figures["murmur_weighted_accuracy"] = pooled["murmur"]["weighted_accuracy"]
        figures["murmur_uar"] = pooled["murmur"]["uar"]
    outcomes = fold_outcomes(run)
    referred = np.concatenate([o.test_probabilities >= o.thresholds["cost_optimal"] for o in outcomes])
    figures["referral_rate"] = float(referred.mean())
    return figures


def fold_outcomes(run: Path) -> list[FoldOutcome]:
    return [FoldOutcome.load(p.parent) for p in sorted(run.glob("*/outcome.json"))]


def seed_ensemble(runs: list[Path]) -> dict:
    """Each patient's calibrated score (and probability, and threshold) averaged over the seeds."""
    per_patient: dict[str, dict] = {}
    for run in runs:
        for o in fold_outcomes(run):
            for i, pid in enumerate(o.test_ids):
                entry = per_patient.setdefault(pid, {"y": int(o.test_labels[i]), "score": [], "p": [], "t": [], "murmur": [], "m": None})
                entry["score"].append(o.test_scores[i])
                entry["p"].append(o.test_probabilities[i])
                entry["t"].append(o.thresholds["cost_optimal"])
                if o.test_murmur is not None:
                    entry["murmur"].append(o.test_murmur[i])
                    entry["m"] = int(o.test_murmur_labels[i])
    ids = sorted(per_patient)
    y = np.array([per_patient[i]["y"] for i in ids])
    score = np.array([np.mean(per_patient[i]["score"]) for i in ids])
    referred = np.array([np.mean(per_patient[i]["p"]) >= np.mean(per_patient[i]["t"]) for i in ids])
    counts = metrics.binary_counts(y, referred)
    result = {"n_models_per_patient": len(runs), "auroc": metrics.auroc(y, score), "cost": metrics.outcome_cost(*counts),
              "auroc_ci": metrics.bootstrap_ci(metrics.auroc, y, score, n_boot=1000)}
    if all(per_patient[i]["murmur"] for i in ids):
        m = np.array([np.mean(per_patient[i]["murmur"], axis=0) for i in ids])
        t = np.array([per_patient[i]["m"] for i in ids])
        result["murmur_weighted_accuracy"] = metrics.murmur_metrics(t, m)["weighted_accuracy"]
    return result


KEYS = ("auroc", "cost", "sensitivity", "specificity", "referral_rate", "murmur_weighted_accuracy", "murmur_uar")


def compare(configs: dict[str, list[Path]]) -> dict:
    names = list(configs)
    baseline = names[0]
    result: dict = {"baseline": baseline, "configurations": {}}
    figures = {name: {f["seed"]: f for f in map(run_figures, runs)} for name, runs in configs.items()}
    for name, runs in configs.items():
        per_seed = figures[name]
        summary = {"seeds": sorted(per_seed), "runs": [str(r) for r in runs], "per_seed": per_seed}
        for key in KEYS:
            values = [f[key] for f in per_seed.values() if f.get(key) is not None]
            if values:
                summary[key] = {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}
        summary["seed_ensemble"] = seed_ensemble(runs) if len(runs) > 1 else None
        if name != baseline:
            shared = sorted(set(per_seed) & set(figures[baseline]))
            base = figures[baseline]
            d_auroc = [per_seed[s]["auroc"] - base[s]["auroc"] for s in shared]
            d_cost = [per_seed[s]["cost"] - base[s]["cost"] for s in shared]
            fold_auroc = [per_seed[s]["folds"][f]["auroc"] - base[s]["folds"][f]["auroc"] for s in shared for f in base[s]["folds"]]
            fold_cost = [per_seed[s]["folds"][f]["cost"] - base[s]["folds"][f]["cost"] for s in shared for f in base[s]["folds"]]
            summary["paired"] = {
                "seeds": shared, "auroc": d_auroc, "cost": d_cost,
                "auroc_mean": float(np.mean(d_auroc)) if shared else None, "cost_mean": float(np.mean(d_cost)) if shared else None,
                "folds_auroc_higher": f"{sum(v > 0 for v in fold_auroc)}/{len(fold_auroc)}",
                "folds_cost_lower": f"{sum(v < 0 for v in fold_cost)}/{len(fold_cost)}",
                "clears_bar": bool(shared) and bool(np.mean(d_auroc) >= PROMOTE_AUROC or np.mean(d_cost) <= PROMOTE_COST),
            }
        result["configurations"][name] = summary
    return result


def compare_markdown(result: dict, title: str) -> str:
    configs = result["configurations"]
    has_murmur = any("murmur_weighted_accuracy" in c for c in configs.values())
    lines = [f"# {title}", "",
             "Mean ± sd over seeds of each seed's pooled out-of-fold figure; decisions at each fold's cost-optimal "
             "threshold (chosen on its validation part). Seed ensemble: each patient's calibrated scores averaged over "
             "the seeds' models, none of which saw the patient.", "",
             "| configuration | seeds | AUROC | cost | sensitivity | specificity | referred |" + (" murmur wacc |" if has_murmur else "")
             + " seed ensemble AUROC / cost |",
             "|---|---|---|---|---|---|---|" + ("---|" if has_murmur else "") + "---|"]

    def ms(c, key, fmt):
        return "" if key not in c else f"{c[key]['mean']:{fmt}} ± {c[key]['sd']:{fmt}}"

    for name, c in configs.items():
        ens = c["seed_ensemble"]
        row = (f"| {name} | {','.join(map(str, c['seeds']))} | {ms(c, 'auroc', '.3f')} | {ms(c, 'cost', '.0f')} | "
               f"{ms(c, 'sensitivity', '.3f')} | {ms(c, 'specificity', '.3f')} | {ms(c, 'referral_rate', '.2f')} |")
        if has_murmur:
            row += f" {ms(c, 'murmur_weighted_accuracy', '.3f')} |"
        row += f" {ens['auroc']:.3f} / {ens['cost']:.0f} |" if ens else " |"
        lines.append(row)
    lines += ["", f"Paired against `{result['baseline']}` (same seed, same partition; the bar: mean gain >= +{PROMOTE_AUROC} AUROC "
              f"or <= {PROMOTE_COST:.0f} cost):", "",
              "| configuration | ΔAUROC per seed | mean | Δcost per seed | mean | folds with higher AUROC | folds with lower cost | clears the bar |",
              "|---|---|---|---|---|---|---|---|"]
    for name, c in configs.items():
        p = c.get("paired")
        if not p or not p["seeds"]:
            continue
        lines.append(f"| {name} | {', '.join(f'{v:+.3f}' for v in p['auroc'])} | {p['auroc_mean']:+.3f} | "
                     f"{', '.join(f'{v:+.0f}' for v in p['cost'])} | {p['cost_mean']:+.0f} | {p['folds_auroc_higher']} | "
                     f"{p['folds_cost_lower']} | {'yes' if p['clears_bar'] else 'no'} |")
    lines += ["", "Runs:", ""] + [f"- {name}: " + ", ".join(f"`{r}`" for r in c["runs"]) for name, c in configs.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("configs", nargs="+", metavar="NAME=GLOB", help="a configuration and its run folders (one per seed); the first is the baseline")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--title", default="Configurations compared over seeds")
    args = p.parse_args(argv)
    configs: dict[str, list[Path]] = {}
    for item in args.configs:
        name, sep, pattern = item.partition("=")
        runs = [Path(r) for r in sorted(glob.glob(pattern)) if (Path(r) / "metrics.json").is_file()]
        if not sep or not runs:
            print(f"compare: {item!r}: expected NAME=GLOB matching finished runs (with metrics.json)", file=sys.stderr)
            return 2
        configs[name] = runs
    result = compare(configs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compare.json").write_text(json.dumps(result, indent=1))
    text = compare_markdown(result, args.title)
    (args.out / "compare.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
