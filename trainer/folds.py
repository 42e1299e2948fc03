"""Cross-validation splits at patient level (a recording is a patient where no ids exist, as in
PhysioNet 2016), stratified by database/campaign AND class so every fold has the same mix.

`leave_one_group_out` holds out one database at a time: the honest check of how a model does on a
stethoscope it has never heard. Within each training part, `validation_split` sets aside a
stratified share for early stopping, calibration and operating points; the test fold is never
used for any choice.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from trainer.examples import DataError


@dataclass(frozen=True)
class Fold:
    name: str
    train: np.ndarray  # example indices
    validation: np.ndarray
    test: np.ndarray


def _strata(labels: np.ndarray, groups: np.ndarray) -> dict[tuple, list[int]]:
    strata: dict[tuple, list[int]] = defaultdict(list)
    for i, key in enumerate(zip(groups.tolist(), labels.tolist())):
        strata[key].append(i)
    return strata


def stratified_assignment(labels: np.ndarray, groups: np.ndarray, n_parts: int, rng: np.random.Generator) -> np.ndarray:
    """Part index (0..n_parts-1) for every example, dealt round-robin within each (group, label)
    stratum after shuffling; the deal continues across strata so parts stay equal in size."""
    part = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for key in sorted(_strata(labels, groups)):
        members = np.array(_strata(labels, groups)[key])
        rng.shuffle(members)
        part[members] = (np.arange(len(members)) + offset) % n_parts
        offset += len(members)
    return part


def validation_split(indices: np.ndarray, labels: np.ndarray, groups: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) from `indices`, stratified by group and label."""
    n_parts = max(2, int(round(1.0 / fraction)))
    part = stratified_assignment(labels[indices], groups[indices], n_parts, rng)
    return indices[part != 0], indices[part == 0]


def _check_classes(name: str, labels: np.ndarray, indices: np.ndarray, what: str) -> None:
    if len(np.unique(labels[indices])) < 2:
        raise DataError(
            f"fold {name}: its {what} part holds one class only ({len(indices)} patients); use fewer folds or more data"
        )


def k_fold(labels: np.ndarray, groups: np.ndarray, n_folds: int, seed: int, validation_fraction: float = 0.15) -> list[Fold]:
    """Stratified k-fold over examples; each fold also carries a validation part of its training data."""
    if n_folds < 2:
        raise ValueError(f"--folds must be at least 2, got {n_folds}")
    minority = int(np.min(np.bincount(labels)[np.bincount(labels) > 0]))
    if minority < n_folds:
        raise DataError(f"{n_folds} folds need at least {n_folds} patients of every class; the smallest class has {minority}")
    rng = np.random.default_rng(seed)
    part = stratified_assignment(labels, groups, n_folds, rng)
    folds = []
    for k in range(n_folds):
        train, validation = validation_split(np.flatnonzero(part != k), labels, groups, validation_fraction, rng)
        fold = Fold(f"fold{k + 1}", train, validation, np.flatnonzero(part == k))
        _check_classes(fold.name, labels, fold.train, "training")
        _check_classes(fold.name, labels, fold.validation, "validation")
        folds.append(fold)
    return folds


def leave_one_group_out(labels: np.ndarray, groups: np.ndarray, seed: int, validation_fraction: float = 0.15) -> list[Fold]:
    """One fold per group (database): train and validate on the others, test on it."""
    names = sorted(set(groups.tolist()))
    if len(names) < 2:
        raise DataError(f"leave-one-database-out needs at least two databases/campaigns; found {names or 'none'}")
    rng = np.random.default_rng(seed)
    folds = []
    for name in names:
        rest = np.flatnonzero(groups != name)
        train, validation = validation_split(rest, labels, groups, validation_fraction, rng)
        fold = Fold(f"{name}", train, validation, np.flatnonzero(groups == name))
        _check_classes(fold.name, labels, fold.train, "training")
        folds.append(fold)
    return folds
