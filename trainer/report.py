"""Run report: metrics.json, report.md and PNG plots (ROC curves, cost against threshold,
calibration, confusion matrices). matplotlib (Agg) and numpy only; no torch."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from trainer import metrics
from trainer.summary import OPERATING_POINTS, FoldOutcome


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def roc_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) over every distinct threshold."""
    y = np.asarray(labels).astype(bool)
    thresholds = np.r_[np.inf, np.unique(scores)[::-1]]
    tpr = np.array([np.sum((scores >= t) & y) for t in thresholds]) / max(1, y.sum())
    fpr = np.array([np.sum((scores >= t) & ~y) for t in thresholds]) / max(1, (~y).sum())
    return fpr, tpr


def plot_roc(outcomes: list[FoldOutcome], path: Path, title: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    for o in outcomes:
        fpr, tpr = roc_points(o.test_labels, o.test_scores)
        ax.plot(fpr, tpr, lw=1, alpha=0.7, label=f"{o.name} AUROC {metrics.auroc(o.test_labels, o.test_scores):.3f}")
    y = np.concatenate([o.test_labels for o in outcomes])
    p = np.concatenate([o.test_scores for o in outcomes])
    fpr, tpr = roc_points(y, p)
    ax.plot(fpr, tpr, "k", lw=2, label=f"pooled AUROC {metrics.auroc(y, p):.3f}")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_cost(outcomes: list[FoldOutcome], path: Path, title: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    grid = np.linspace(0, 1, 201)
    for o in outcomes:
        costs = [metrics.outcome_cost(*metrics.binary_counts(o.test_labels, o.test_probabilities >= t)) for t in grid]
        line = ax.plot(grid, costs, lw=1, alpha=0.7, label=o.name)[0]
        ax.axvline(o.thresholds["cost_optimal"], color=line.get_color(), ls="--", lw=0.8)
    ax.set(xlabel="threshold on calibrated probability (dashed: chosen on validation)", ylabel="challenge cost per patient")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_calibration(outcomes: list[FoldOutcome], path: Path, title: str) -> None:
    plt = _plt()
    y = np.concatenate([o.test_labels for o in outcomes])
    p = np.concatenate([o.test_probabilities for o in outcomes])
    bins = metrics.calibration_bins(y, p)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.plot(bins["mean_probability"], bins["fraction_abnormal"], "o-", label=f"test folds pooled (ECE {bins['ece']:.3f})")
    ax.set(xlabel="predicted probability (Platt, fitted on validation)", ylabel="observed fraction abnormal", xlim=(0, 1), ylim=(0, 1))
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusions(matrices: dict[str, np.ndarray], class_names: dict[str, tuple[str, ...]], path: Path) -> None:
    """matrices: name -> [predicted][true] counts."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(matrices), figsize=(4 * len(matrices), 3.6), squeeze=False)
    for ax, (name, m) in zip(axes[0], matrices.items()):
        m = np.asarray(m)
        names = class_names[name]
        ax.imshow(m, cmap="Blues")
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, str(int(m[i, j])), ha="center", va="center")
        ax.set_xticks(range(len(names)), names, fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set(xlabel="true", ylabel="predicted", title=name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(value: float, digits: int = 3) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _ci(pair) -> str:
    return f"[{_fmt(pair[0])}, {_fmt(pair[1])}]"


ADAPTATION_REFERENCES = {"healthy": "its normal recordings", "unlabelled": "all its recordings"}


def markdown(title: str, summary: dict, settings: dict, data_report: dict) -> str:
    pooled, across = summary["pooled"], summary["mean_sd"]
    lines = [f"# {title}", "", "Cross-validated test-fold results (each patient scored by a model that never saw it; "
             "thresholds and calibration chosen on each fold's validation part).", ""]
    lines += ["## Summary", "", "| metric | mean ± sd over folds | pooled (95% bootstrap CI) |", "|---|---|---|"]
    lines.append(f"| AUROC | {_fmt(across['auroc']['mean'])} ± {_fmt(across['auroc']['sd'])} | {_fmt(pooled['auroc'])} {_ci(pooled['auroc_ci'])} |")
    lines.append(f"| AUPRC | {_fmt(across['auprc']['mean'])} ± {_fmt(across['auprc']['sd'])} | {_fmt(pooled['auprc'])} {_ci(pooled['auprc_ci'])} |")
    for point in OPERATING_POINTS:
        for key in ("cost", "macc", "sensitivity", "specificity", "f1"):
            ms = across[f"{point}.{key}"]
            value = pooled[point][key]
            ci = f" {_ci(pooled[point][key + '_ci'])}" if key + "_ci" in pooled[point] else ""
            digits = 1 if key == "cost" else 3
            lines.append(f"| {point} {key} | {_fmt(ms['mean'], digits)} ± {_fmt(ms['sd'], digits)} | {_fmt(value, digits)}{ci} |")
    if "murmur" in pooled:
        mm = pooled["murmur"]
        for key in ("weighted_accuracy", "uar", "auroc"):
            ms = across[f"murmur.{key}"]
            ci = f" {_ci(mm[key + '_ci'])}" if key + "_ci" in mm else ""
            lines.append(f"| murmur {key} | {_fmt(ms['mean'])} ± {_fmt(ms['sd'])} | {_fmt(mm[key])}{ci} |")
    lines += ["", "## Per fold", "", "| fold | n | AUROC (95% CI) | cost | MAcc | sens | spec | best epoch | s/epoch |", "|---|---|---|---|---|---|---|---|---|"]
    for name, f in summary["folds"].items():
        c = f["cost_optimal"]
        lines.append(f"| {name} | {f['n']} | {_fmt(f['auroc'])} {_ci(f['auroc_ci'])} | {_fmt(c['cost'], 1)} | {_fmt(c['macc'])} | "
                     f"{_fmt(c['sensitivity'])} | {_fmt(c['specificity'])} | {f['best_epoch']} | {_fmt(f['seconds_per_epoch'], 1)} |")
    if "by_group" in summary:
        lines += ["", "## Per database / campaign (pooled test predictions)", "", "| group | n | abnormal | AUROC (95% CI) | MAcc (95% CI) |", "|---|---|---|---|---|"]
        for g, r in summary["by_group"].items():
            lines.append(f"| {g} | {r['n']} | {r['n_abnormal']} | {_fmt(r['auroc'])} {_ci(r['auroc_ci'])} | {_fmt(r['macc'])} {_ci(r['macc_ci'])} |")
    if "unadapted" in summary:
        u = summary["unadapted"]
        lines += ["", "## Device adaptation (--adapt-bn)", "",
                  f"Every database was scored after re-estimating the batch-norm statistics on reference recordings of its own "
                  f"stethoscope (AdaBN, `--adapt-bn {settings.get('train', {}).get('adapt_bn', '?')}`: "
                  f"{ADAPTATION_REFERENCES.get(settings.get('train', {}).get('adapt_bn'), '?')}), calibration and thresholds included: "
                  "references from the training part, and a database held out of training cross-fitted in 5 parts of itself. "
                  "The figures above are adapted; the same models without it (with their own unadapted calibration):", "",
                  "| | pooled AUROC (95% CI) | " + " | ".join(u.get("by_group", {})) + " |",
                  "|---|---|" + "---|" * len(u.get("by_group", {}))]
        adapted_groups = [_fmt(summary["by_group"][g]["auroc"]) for g in u.get("by_group", {})] if "by_group" in summary else []
        lines.append(f"| adapted | {_fmt(pooled['auroc'])} {_ci(pooled['auroc_ci'])} | " + " | ".join(adapted_groups) + " |")
        lines.append(f"| unadapted | {_fmt(u['auroc'])} {_ci(u['auroc_ci'])} | " + " | ".join(_fmt(v) for v in u.get("by_group", {}).values()) + " |")
    lines += ["", "## Plots", "", "![ROC](roc.png) ![cost](cost.png) ![calibration](calibration.png) ![confusion](confusion.png)", ""]
    lines += ["## Data", "", "```", json.dumps({k: v for k, v in data_report.items() if k not in ("problems", "notes")}, indent=1), "```"]
    if data_report.get("notes"):
        lines += ["", "Quirks of the data, handled (none dropped):", ""] + [f"- {n}" for n in data_report["notes"]]
    if data_report.get("problems"):
        lines += ["", f"{len(data_report['problems'])} problem(s) found in the input (first 20):", ""]
        lines += [f"- {p}" for p in data_report["problems"][:20]]
    lines += ["", "## Settings", "", "```", json.dumps(settings, indent=1, default=str), "```", ""]
    return "\n".join(lines)


def write_report(out_dir: Path, title: str, outcomes: list[FoldOutcome], summary: dict, settings: dict, data_report: dict) -> None:
    """metrics.json, report.md, roc.png, cost.png, calibration.png, confusion.png in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps({"summary": summary, "settings": settings, "data": data_report}, indent=1, default=_json_default))
    plot_roc(outcomes, out_dir / "roc.png", title)
    plot_cost(outcomes, out_dir / "cost.png", title)
    plot_calibration(outcomes, out_dir / "calibration.png", title)
    pooled = summary["pooled"]
    c = pooled["cost_optimal"]
    confusions = {"outcome (cost-optimal point)": np.array([[c["tp"], c["fp"]], [c["fn"], c["tn"]]])}
    names = {"outcome (cost-optimal point)": ("refer", "clear")}
    if "murmur" in pooled:
        confusions["murmur"] = np.array(pooled["murmur"]["confusion"])
        names["murmur"] = ("Present", "Unknown", "Absent")
    plot_confusions(confusions, names, out_dir / "confusion.png")
    (out_dir / "report.md").write_text(markdown(title, summary, settings, data_report))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
