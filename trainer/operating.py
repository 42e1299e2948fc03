"""What a screening programme gets from a run: its operating points at realistic prevalence, and
its results by group of children, from the run's out-of-fold predictions.

    python -m trainer.operating runs/c20-p0-hyper-s0 --data ../shared/data/circor --out trainer/results/c20-p0-hyper-s0

writes operating.md and operating.json:

- Each operating point (cost_optimal, high_sensitivity), as each fold chose it on its validation
  part: pooled out-of-fold sensitivity and specificity with bootstrap 95% intervals, and what they
  mean for a programme at this data's prevalence and at 10 % and 5 % abnormal: children referred
  per 100 screened (sens*p + (1-spec)*(1-p)), abnormal children missed per 100, and the share of
  referrals that are abnormal (PPV). Sensitivity and specificity do not depend on prevalence;
  referrals and PPV do, and a community programme sees far fewer abnormal children than a
  hospital campaign (CirCor: about half).
- By group: age group, sex, pregnancy, sites present and campaign: n, abnormal, AUROC and the
  cost-optimal sensitivity and specificity, each with a bootstrap 95% interval over patients. A
  group too small to measure (fewer than 5 abnormal or 5 normal children) is reported with its
  counts and a sentence saying so, not with a figure that means nothing.

Reads the fold folders pcg-train wrote (outcome.npz/json) and the data folder for the children's
details; trains nothing. Numpy only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from trainer import metrics
from trainer.summary import OPERATING_POINTS, FoldOutcome

PREVALENCES = (0.10, 0.05)
MIN_PER_CLASS = 5  # below this many abnormal or normal children a group's AUROC, sensitivity or specificity means nothing


def load_outcomes(run: Path) -> list[FoldOutcome]:
    folds = sorted(p for p in run.iterdir() if p.is_dir() and (p / "outcome.json").is_file())
    if not folds:
        raise ValueError(f"{run}: no fold results (fold*/outcome.json); is it a pcg-train --out folder?")
    return [FoldOutcome.load(p) for p in folds]


def programme_view(sensitivity: float, specificity: float, prevalence: float) -> dict:
    """Per 100 children screened at `prevalence`: referred, abnormal missed, and the PPV."""
    referred = sensitivity * prevalence + (1 - specificity) * (1 - prevalence)
    return {
        "prevalence": prevalence,
        "referred_per_100": 100 * referred,
        "abnormal_missed_per_100": 100 * (1 - sensitivity) * prevalence,
        "ppv": sensitivity * prevalence / referred if referred > 0 else float("nan"),
    }


def _sens(y, flags):
    return metrics.threshold_metrics(y, flags, 0.5)["sensitivity"]


def _spec(y, flags):
    return metrics.threshold_metrics(y, flags, 0.5)["specificity"]


def operating_points(outcomes: list[FoldOutcome], n_boot: int = 1000) -> dict:
    y = np.concatenate([o.test_labels for o in outcomes])
    data_prevalence = float(y.mean())
    result = {"n": int(len(y)), "n_abnormal": int(y.sum()), "data_prevalence": data_prevalence, "points": {}}
    for point in OPERATING_POINTS:
        flags = np.concatenate([o.test_probabilities >= o.thresholds[point] for o in outcomes]).astype(np.float64)
        m = metrics.threshold_metrics(y, flags, 0.5)
        result["points"][point] = {
            "fold_thresholds": [float(o.thresholds[point]) for o in outcomes],
            "sensitivity": m["sensitivity"], "sensitivity_ci": metrics.bootstrap_ci(_sens, y, flags, n_boot=n_boot),
            "specificity": m["specificity"], "specificity_ci": metrics.bootstrap_ci(_spec, y, flags, n_boot=n_boot),
            "referral_rate_here": float(flags.mean()),
            "cost": m["cost"],
            "at_prevalence": [programme_view(m["sensitivity"], m["specificity"], p) for p in (data_prevalence, *PREVALENCES)],
        }
    return result


def _sites_present(patient) -> str:
    sites = sorted({r.site for r in patient.recordings})
    return f"{len(sites)} site{'s' if len(sites) != 1 else ''}" + (" incl. Phc" if "Phc" in sites else "")


GROUPINGS = {
    "age group": lambda p: p.demographics.age_group or "not given",
    "sex": lambda p: p.demographics.sex or "not given",
    "pregnancy": lambda p: {True: "pregnant", False: "not pregnant"}.get(p.demographics.pregnant, "not given"),
    "sites present": _sites_present,
    "campaign": lambda p: p.group or "not given",
}


def by_groups(outcomes: list[FoldOutcome], patients: dict, n_boot: int = 1000) -> dict:
    ids = [i for o in outcomes for i in o.test_ids]
    missing = [i for i in ids if i not in patients]
    if missing:
        raise ValueError(f"{len(missing)} tested patients are not in the data folder (e.g. {missing[0]}): wrong --data?")
    y = np.concatenate([o.test_labels for o in outcomes])
    scores = np.concatenate([o.test_scores for o in outcomes])
    flags = np.concatenate([o.test_probabilities >= o.thresholds["cost_optimal"] for o in outcomes]).astype(np.float64)
    result = {}
    for grouping, group_of in GROUPINGS.items():
        groups = np.array([group_of(patients[i]) for i in ids])
        rows_by = {}
        for g in sorted(set(groups.tolist())):
            rows = groups == g
            n_abnormal, n = int(y[rows].sum()), int(rows.sum())
            row = {"n": n, "n_abnormal": n_abnormal, "referred": int(flags[rows].sum())}
            if min(n_abnormal, n - n_abnormal) < MIN_PER_CLASS:
                row["note"] = (f"too few to measure: {n} {'child' if n == 1 else 'children'}, {n_abnormal} abnormal; any AUROC, sensitivity or "
                               f"specificity here would be noise (a bootstrap interval spans most of 0 to 1)")
            else:
                yr, fr, sr = y[rows], flags[rows], scores[rows]
                row.update(
                    auroc=metrics.auroc(yr, sr), auroc_ci=metrics.bootstrap_ci(metrics.auroc, yr, sr, n_boot=n_boot),
                    sensitivity=_sens(yr, fr), sensitivity_ci=metrics.bootstrap_ci(_sens, yr, fr, n_boot=n_boot),
                    specificity=_spec(yr, fr), specificity_ci=metrics.bootstrap_ci(_spec, yr, fr, n_boot=n_boot),
                )
            rows_by[g] = row
        result[grouping] = rows_by
    return result


def _f(value, digits=2) -> str:
    return "—" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _ci(pair) -> str:
    return f"[{_f(pair[0])}, {_f(pair[1])}]"


def markdown(run: Path, result: dict) -> str:
    ops = result["operating_points"]
    lines = [f"# Operating points and groups: {run.name}", "",
             f"Out-of-fold predictions of {ops['n']} children ({ops['n_abnormal']} abnormal, prevalence "
             f"{100 * ops['data_prevalence']:.0f} %); each fold's thresholds chosen on its own validation part. "
             "Made by `python -m trainer.operating`.", "",
             "## Operating points", "",
             "| operating point | sensitivity (95% CI) | specificity (95% CI) | referred here | cost |"
             + "".join(f" per 100 at {100 * p:.0f} %: referred / missed / PPV |" for p in (ops["data_prevalence"], *PREVALENCES)),
             "|---|---|---|---|---|" + "---|" * (1 + len(PREVALENCES))]
    for name, point in ops["points"].items():
        views = "".join(f" {v['referred_per_100']:.0f} / {v['abnormal_missed_per_100']:.1f} / {_f(v['ppv'])} |"
                        for v in point["at_prevalence"])
        lines.append(f"| {name} | {_f(point['sensitivity'])} {_ci(point['sensitivity_ci'])} | {_f(point['specificity'])} "
                     f"{_ci(point['specificity_ci'])} | {100 * point['referral_rate_here']:.0f} % | {point['cost']:.0f} |{views}")
    lines += ["", "Per 100 children screened: how many are referred, how many abnormal children are missed, and "
              "the share of referrals that are abnormal, if sensitivity and specificity hold at that prevalence.", ""]
    lines += ["## By group (cost-optimal point)", "", "| grouping | group | n | abnormal | referred | AUROC (95% CI) | "
              "sensitivity (95% CI) | specificity (95% CI) |", "|---|---|---|---|---|---|---|---|"]
    for grouping, rows in result["by_group"].items():
        for g, row in rows.items():
            if "note" in row:
                lines.append(f"| {grouping} | {g} | {row['n']} | {row['n_abnormal']} | {row['referred']} | {row['note']} | | |")
            else:
                lines.append(f"| {grouping} | {g} | {row['n']} | {row['n_abnormal']} | {row['referred']} | "
                             f"{_f(row['auroc'])} {_ci(row['auroc_ci'])} | {_f(row['sensitivity'])} {_ci(row['sensitivity_ci'])} | "
                             f"{_f(row['specificity'])} {_ci(row['specificity_ci'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.operating", description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a pcg-train --out folder")
    p.add_argument("--data", type=Path, required=True, help="the labelled folder it was trained on (children's details)")
    p.add_argument("--out", type=Path, default=None, help="folder for operating.md/json (default: the run folder)")
    p.add_argument("--bootstrap", type=int, default=1000)
    args = p.parse_args(argv)
    from runtime.formats import FormatError, load_dataset

    try:
        outcomes = load_outcomes(args.run)
        patients = {patient.patient_id: patient for patient in load_dataset(args.data).patients}
        result = {"run": str(args.run), "data": str(args.data),
                  "operating_points": operating_points(outcomes, args.bootstrap),
                  "by_group": by_groups(outcomes, patients, args.bootstrap)}
    except (ValueError, FormatError, OSError) as err:
        print(f"trainer.operating: {err}", file=sys.stderr)
        return 2
    out = args.out or args.run
    out.mkdir(parents=True, exist_ok=True)
    (out / "operating.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    (out / "operating.md").write_text(markdown(args.run, result))
    print(f"trainer.operating: {out / 'operating.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
