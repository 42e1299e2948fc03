"""Saved fold partitions: one patient-level split, written once and reused by every comparison.

    python -m trainer.partition --data ../shared/data/circor --seed 0 --out trainer/partitions/circor-p0.json
    pcg-train ... --folds-file trainer/partitions/circor-p0.json

A partition fixes each fold's test patients AND the validation part of its training patients, so
two runs on the same partition differ only in what their --seed draws (initialisation, batch
order, augmentation): a per-fold difference between two models is then the models' doing.
Patients are stratified by (campaign, outcome, murmur), the cells CirCor's figures depend on.

Protocol (issue 20): screen ideas on partition 0 with seeds 0-2; report the final choice on
partitions that chose nothing (1, 2, 3).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from trainer.examples import DataError, Example
from trainer.folds import Fold, _check_classes, stratified_assignment

SCHEMA = "pcg-screen/fold-partition/1"


def stratum_codes(keys: list[tuple]) -> np.ndarray:
    """A small integer per distinct key (keys sorted, so the code does not depend on patient order)."""
    index = {k: i for i, k in enumerate(sorted(set(keys), key=repr))}
    return np.array([index[k] for k in keys], dtype=np.int64)


def make_partition(patient_ids: list[str], keys: list[tuple], n_folds: int, seed: int, validation_fraction: float = 0.15) -> list[dict]:
    """Folds as {"name", "test": [ids], "validation": [ids]}: test parts stratified by `keys`
    (one tuple per patient), each fold's validation part a stratified share of its training part."""
    if n_folds < 2:
        raise DataError(f"a partition needs at least 2 folds, got {n_folds}")
    if len(set(patient_ids)) != len(patient_ids):
        raise DataError("patient ids repeat: a partition is by patient")
    codes = stratum_codes(keys)
    no_groups = np.zeros(len(codes), dtype=np.int64)
    rng = np.random.default_rng(seed)
    part = stratified_assignment(codes, no_groups, n_folds, rng)
    n_validation_parts = max(2, int(round(1.0 / validation_fraction)))
    ids = np.array(patient_ids)
    folds = []
    for k in range(n_folds):
        rest = np.flatnonzero(part != k)
        inner = stratified_assignment(codes[rest], no_groups[rest], n_validation_parts, rng)
        folds.append({"name": f"fold{k + 1}", "test": sorted(ids[part == k].tolist()),
                      "validation": sorted(ids[rest[inner == 0]].tolist())})
    return folds


def write_partition(path: Path, folds: list[dict], data: Path, seed: int, stratified_by: list[str]) -> None:
    body = {
        "schema": SCHEMA, "data": str(data), "seed": seed, "n_folds": len(folds), "stratified_by": stratified_by,
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "n_patients": sum(len(f["test"]) for f in folds), "folds": folds,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, indent=1) + "\n")


def read_partition(path: Path) -> dict:
    """The partition file's content; DataError when it is not one."""
    try:
        body = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"--folds-file {path}: cannot read a partition ({err})") from None
    if not isinstance(body, dict) or body.get("schema") != SCHEMA or not isinstance(body.get("folds"), list):
        raise DataError(f"--folds-file {path}: not a fold partition (expected schema {SCHEMA})")
    seen: set[str] = set()
    for fold in body["folds"]:
        test, validation = set(map(str, fold.get("test", []))), set(map(str, fold.get("validation", [])))
        if test & seen:
            raise DataError(f"--folds-file {path}: {fold.get('name')} repeats test patients of an earlier fold")
        if test & validation:
            raise DataError(f"--folds-file {path}: {fold.get('name')} has patients in both its test and validation parts")
        seen |= test
    return body


def folds_from_partition(examples: list[Example], task: str, path: Path) -> tuple[list[Fold], list[str]]:
    """The partition's folds as indices into `examples`; (folds, notes). A patient of the data
    missing from the partition is an error (the split would not be the saved one); a partition
    patient missing from the data (left out for a bad recording, or unlabelled for this task) is
    noted and skipped."""
    body = read_partition(path)
    index = {e.patient_id: i for i, e in enumerate(examples)}
    in_file = {str(p) for f in body["folds"] for p in f["test"]}
    unplaced = sorted(set(index) - in_file)
    if unplaced:
        raise DataError(f"--folds-file {path}: {len(unplaced)} patient(s) of the data are in no test fold "
                        f"(e.g. {', '.join(unplaced[:5])}); make a partition of these data with python -m trainer.partition")
    absent = sorted(in_file - set(index))
    notes = [f"{len(absent)} patient(s) of the partition are not in the usable data and were skipped: {', '.join(absent)}"] if absent else []
    labels = np.array([e.label(task) for e in examples])
    folds = []
    for fold in body["folds"]:
        test = np.array(sorted(index[str(p)] for p in fold["test"] if str(p) in index), dtype=np.int64)
        validation = np.array(sorted(index[str(p)] for p in fold["validation"] if str(p) in index), dtype=np.int64)
        train = np.setdiff1d(np.arange(len(examples)), np.concatenate([test, validation]))
        result = Fold(str(fold["name"]), train, validation, test)
        _check_classes(result.name, labels, result.train, "training")
        _check_classes(result.name, labels, result.validation, "validation")
        folds.append(result)
    return folds, notes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.partition", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="a CirCor (or PhysioNet 2016) folder")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, required=True, help="the partition's number (0 screens ideas; 1, 2, 3 report)")
    p.add_argument("--validation-fraction", type=float, default=0.15)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    from runtime.formats import FormatError, load_dataset

    try:
        dataset = load_dataset(args.data)
        patients = [pt for pt in dataset.patients if pt.outcome or pt.murmur]
        keys = [(pt.group or "", pt.outcome or "", pt.murmur or "") for pt in patients]
        folds = make_partition([pt.patient_id for pt in patients], keys, args.folds, args.seed, args.validation_fraction)
    except (DataError, FormatError, OSError) as err:
        print(f"partition: {err}", file=sys.stderr)
        return 2
    write_partition(args.out, folds, args.data, args.seed, ["campaign", "outcome", "murmur"])
    print(f"partition: {len(patients)} patients in {len(folds)} folds -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
