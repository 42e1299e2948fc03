"""pcg-ablation: the seed paper's three-way comparison on the SAME folds.

    pcg-ablation --data DIR [--task outcome] [--models primary,mlp,hyper] [--folds 5] --out runs/NAME

Each model is cross-validated into <out>/<model>/ (its own metrics.json, report.md, plots), then
<out>/ablation.md and ablation.json hold the table in the paper's form (challenge cost and AUROC,
mean ± sd over folds) and the paired per-fold differences against the first model: the folds,
the seeds and the feature crops drawn are identical, so a fold's difference is the model's doing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from runtime.dsp.config import FrontEndConfig
from trainer.crossval import build_parser as train_parser
from trainer.crossval import configs_from_args, load_and_fold, train_and_report
from trainer.examples import DataError


def paired_differences(summaries: dict[str, dict], baseline: str) -> dict:
    """Per fold, model minus baseline, for cost (cost-optimal point) and AUROC."""
    result = {}
    base = summaries[baseline]["folds"]
    for name, summary in summaries.items():
        if name == baseline:
            continue
        folds = summary["folds"]
        d_cost = [folds[f]["cost_optimal"]["cost"] - base[f]["cost_optimal"]["cost"] for f in base]
        d_auroc = [folds[f]["auroc"] - base[f]["auroc"] for f in base]
        result[name] = {
            "folds": list(base),
            "cost": d_cost, "auroc": d_auroc,
            "cost_mean": float(np.mean(d_cost)), "cost_sd": float(np.std(d_cost, ddof=1)) if len(d_cost) > 1 else 0.0,
            "auroc_mean": float(np.mean(d_auroc)), "auroc_sd": float(np.std(d_auroc, ddof=1)) if len(d_auroc) > 1 else 0.0,
            "folds_cost_lower": int(np.sum(np.array(d_cost) < 0)), "folds_auroc_higher": int(np.sum(np.array(d_auroc) > 0)),
        }
    return result


def ablation_markdown(summaries: dict[str, dict], differences: dict, baseline: str, title: str) -> str:
    lines = [f"# {title}", "", "Test folds of one cross-validation; each model trained on the same folds with the same seed.", "",
             "| model | cost (mean ± sd) | AUROC (mean ± sd) | pooled AUROC (95% CI) | pooled cost |", "|---|---|---|---|---|"]
    for name, s in summaries.items():
        cost, auroc, pooled = s["mean_sd"]["cost_optimal.cost"], s["mean_sd"]["auroc"], s["pooled"]
        lines.append(f"| {name} | {cost['mean']:.1f} ± {cost['sd']:.1f} | {auroc['mean']:.4f} ± {auroc['sd']:.4f} | "
                     f"{pooled['auroc']:.3f} [{pooled['auroc_ci'][0]:.3f}, {pooled['auroc_ci'][1]:.3f}] | {pooled['cost_optimal']['cost']:.1f} |")
    lines += ["", f"Paired per-fold differences against `{baseline}` (negative cost and positive AUROC are better):", "",
              "| model | Δcost mean ± sd | folds with lower cost | ΔAUROC mean ± sd | folds with higher AUROC | per-fold ΔAUROC |", "|---|---|---|---|---|---|"]
    for name, d in differences.items():
        n = len(d["folds"])
        lines.append(f"| {name} | {d['cost_mean']:+.1f} ± {d['cost_sd']:.1f} | {d['folds_cost_lower']}/{n} | {d['auroc_mean']:+.4f} ± {d['auroc_sd']:.4f} | "
                     f"{d['folds_auroc_higher']}/{n} | {', '.join(f'{v:+.3f}' for v in d['auroc'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pcg-ablation", parents=[train_parser()], add_help=False,
                                     description="Cross-validate several metadata paths on the same folds.")
    parser.add_argument("--models", default="primary,mlp,hyper", help="comma-separated; the first is the baseline")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    frontend = FrontEndConfig()
    started = time.perf_counter()
    try:
        configs_from_args(args, frontend)  # refuses malformed options before any data is read
        examples, data_report, data_format, folds = load_and_fold(args, frontend)
    except DataError as err:
        print(f"pcg-ablation: {err}", file=sys.stderr)
        return 2
    summaries = {}
    for name in models:
        args.model = name
        model_config, train_config = configs_from_args(args, frontend)
        print(f"pcg-ablation: {name} ({len(folds)} folds)", file=sys.stderr)
        try:
            summaries[name] = train_and_report(
                examples, folds, model_config, train_config, args.out / name, args.resume, data_report,
                {"data": str(args.data), "format": data_format, "folds": args.folds, "frontend": frontend.to_dict()},
                f"{args.task} / {name} / folds {args.folds} on {args.data.name}", time.perf_counter())
        except DataError as err:
            print(f"pcg-ablation: {err}", file=sys.stderr)
            return 2
    differences = paired_differences(summaries, models[0])
    title = f"Ablation: {args.task} on {args.data.name}, folds {args.folds}"
    (args.out / "ablation.md").write_text(ablation_markdown(summaries, differences, models[0], title))
    (args.out / "ablation.json").write_text(json.dumps({
        "models": {n: {"mean_sd": s["mean_sd"], "pooled_auroc": s["pooled"]["auroc"], "pooled_auroc_ci": s["pooled"]["auroc_ci"],
                       "pooled_cost": s["pooled"]["cost_optimal"]["cost"]} for n, s in summaries.items()},
        "paired_differences": differences, "seconds_total": time.perf_counter() - started}, indent=1))
    print((args.out / "ablation.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
