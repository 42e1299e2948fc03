"""pcg-eval: score a results file (DESIGN.md contract 6) against a labelled folder. No torch.

    pcg-eval RESULTS.csv DATA_DIR [--json OUT.json] [--retake refer|exclude]

RESULTS.csv columns: patient_id, outcome_probability, decision (REFER, NO_REFER, RETAKE), reason,
and optionally murmur_present, murmur_unknown, murmur_absent. DATA_DIR is a CirCor or PhysioNet
2016 folder (runtime.formats detects which). Decisions give the challenge cost, sensitivity,
specificity and MAcc; probabilities give AUROC/AUPRC; murmur columns give the murmur weighted
accuracy and UAR. RETAKE (no usable recording) counts as a referral by default, since that patient
is not cleared; `--retake exclude` leaves those patients out instead. Either way they are counted.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import numpy as np

from runtime.records import MURMUR_CLASSES
from trainer import metrics

DECISIONS = ("REFER", "NO_REFER", "RETAKE")
REQUIRED_COLUMNS = ("patient_id", "outcome_probability", "decision", "reason")
MURMUR_COLUMNS = ("murmur_present", "murmur_unknown", "murmur_absent")


class ResultsError(ValueError):
    """The results file or the labels cannot be scored; the message says where and why."""


def read_results(path: Path) -> list[dict]:
    """Rows of a results CSV, validated: probability in [0, 1] (empty allowed for RETAKE)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise ResultsError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(REQUIRED_COLUMNS)}")
            has_murmur = all(c in columns for c in MURMUR_COLUMNS)
            rows, seen = [], set()
            for line, row in enumerate(reader, start=2):
                pid = (row["patient_id"] or "").strip()
                if not pid:
                    raise ResultsError(f"{path}:{line}: empty patient_id")
                if pid in seen:
                    raise ResultsError(f"{path}:{line}: patient {pid} appears twice")
                seen.add(pid)
                decision = (row["decision"] or "").strip()
                if decision not in DECISIONS:
                    raise ResultsError(f"{path}:{line}: decision {decision!r} is not one of {', '.join(DECISIONS)}")
                probability = _number(row["outcome_probability"], path, line, "outcome_probability", allow_empty=decision == "RETAKE")
                entry = {"patient_id": pid, "probability": probability, "decision": decision}
                if has_murmur and decision != "RETAKE":
                    entry["murmur"] = [_number(row[c], path, line, c) for c in MURMUR_COLUMNS]
                rows.append(entry)
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such results file") from None
    except UnicodeDecodeError:
        raise ResultsError(f"{path}: not a UTF-8 text CSV") from None
    if not rows:
        raise ResultsError(f"{path}: no result rows")
    return rows


def _number(text: str | None, path: Path, line: int, column: str, allow_empty: bool = False) -> float:
    text = (text or "").strip()
    if not text and allow_empty:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise ResultsError(f"{path}:{line}: {column} {text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise ResultsError(f"{path}:{line}: {column} {value} is outside [0, 1]")
    return value


def read_labels(data_dir: Path) -> tuple[dict[str, tuple[int, int]], str]:
    """patient_id -> (outcome 1/0/-1, murmur index/-1) from a labelled folder; (labels, format)."""
    from runtime.formats import FormatError, load_dataset

    try:
        dataset = load_dataset(data_dir)
    except (FormatError, FileNotFoundError) as err:
        raise ResultsError(f"{data_dir}: {err}") from None
    labels = {}
    for p in dataset.patients:
        outcome = {"Abnormal": 1, "Normal": 0}.get(p.outcome or "", -1)
        murmur = MURMUR_CLASSES.index(p.murmur) if p.murmur in MURMUR_CLASSES else -1
        labels[p.patient_id] = (outcome, murmur)
    if not any(o >= 0 or m >= 0 for o, m in labels.values()):
        raise ResultsError(f"{data_dir}: no patient has an outcome or murmur label ({len(labels)} unlabelled patients); pcg-eval needs labelled data")
    return labels, dataset.format


def score(rows: list[dict], labels: dict[str, tuple[int, int]], retake: str = "refer", n_boot: int = 1000) -> dict:
    unknown = [r["patient_id"] for r in rows if r["patient_id"] not in labels]
    if unknown:
        raise ResultsError(f"{len(unknown)} result row(s) name patients not in the data, e.g. {', '.join(unknown[:5])}")
    scored_ids = {r["patient_id"] for r in rows}
    report: dict = {"rows": len(rows), "not_in_results": sum(1 for pid in labels if pid not in scored_ids and labels[pid][0] >= 0),
                    "retake": sum(1 for r in rows if r["decision"] == "RETAKE"), "retake_handling": retake}
    outcome_rows = [r for r in rows if labels[r["patient_id"]][0] >= 0 and not (retake == "exclude" and r["decision"] == "RETAKE")]
    if outcome_rows:
        y = np.array([labels[r["patient_id"]][0] for r in outcome_rows])
        referred = np.array([r["decision"] != "NO_REFER" for r in outcome_rows], dtype=np.float64)
        decided = metrics.threshold_metrics(y, referred, 0.5)
        del decided["threshold"]
        decided["cost_ci"] = metrics.bootstrap_ci(lambda a, b: metrics.threshold_metrics(a, b, 0.5)["cost"], y, referred, n_boot=n_boot)
        decided["macc_ci"] = metrics.bootstrap_ci(lambda a, b: metrics.threshold_metrics(a, b, 0.5)["macc"], y, referred, n_boot=n_boot)
        with_probability = [i for i, r in enumerate(outcome_rows) if not math.isnan(r["probability"])]
        p = np.array([outcome_rows[i]["probability"] for i in with_probability])
        yp = y[with_probability]
        report["outcome"] = {
            "n": len(outcome_rows), "n_abnormal": int(y.sum()), "decisions": decided,
            "auroc": metrics.auroc(yp, p), "auroc_ci": metrics.bootstrap_ci(metrics.auroc, yp, p, n_boot=n_boot),
            "auprc": metrics.auprc(yp, p), "auprc_ci": metrics.bootstrap_ci(metrics.auprc, yp, p, n_boot=n_boot),
        }
    murmur_rows = [r for r in rows if "murmur" in r and labels[r["patient_id"]][1] >= 0]
    if murmur_rows:
        t = np.array([labels[r["patient_id"]][1] for r in murmur_rows])
        probs = np.array([r["murmur"] for r in murmur_rows])
        report["murmur"] = metrics.murmur_metrics(t, probs)
        report["murmur"]["n"] = len(murmur_rows)
    if "outcome" not in report and "murmur" not in report:
        raise ResultsError("no result row has a matching label to score against")
    return report


def format_report(report: dict) -> str:
    lines = [f"rows {report['rows']}, RETAKE {report['retake']} (counted as {report['retake_handling']}), "
             f"labelled patients without a result {report['not_in_results']}"]
    if "outcome" in report:
        o, d = report["outcome"], report["outcome"]["decisions"]
        lines.append(f"outcome: n {o['n']} ({o['n_abnormal']} abnormal)  AUROC {o['auroc']:.3f} [{o['auroc_ci'][0]:.3f}, {o['auroc_ci'][1]:.3f}]  "
                     f"AUPRC {o['auprc']:.3f}")
        lines.append(f"  decisions: cost {d['cost']:.1f} [{d['cost_ci'][0]:.1f}, {d['cost_ci'][1]:.1f}]  sensitivity {d['sensitivity']:.3f}  "
                     f"specificity {d['specificity']:.3f}  MAcc {d['macc']:.3f}  F1 {d['f1']:.3f}  (TP {d['tp']} FP {d['fp']} FN {d['fn']} TN {d['tn']})")
    if "murmur" in report:
        m = report["murmur"]
        lines.append(f"murmur: n {m['n']}  weighted accuracy {m['weighted_accuracy']:.3f}  UAR {m['uar']:.3f}  macro AUROC {m['auroc']:.3f}  "
                     f"confusion[predicted][true] {m['confusion']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pcg-eval", description="Score a pcg-screen results CSV against a labelled CirCor or PhysioNet 2016 folder.")
    parser.add_argument("results", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--json", type=Path, help="also write the scores as JSON here")
    parser.add_argument("--retake", choices=("refer", "exclude"), default="refer")
    args = parser.parse_args(argv)
    try:
        report = score(read_results(args.results), read_labels(args.data)[0], args.retake)
    except ResultsError as err:
        print(f"pcg-eval: {err}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
