"""Labelled patients -> training examples: features computed once per recording with runtime.dsp,
cached on disk, and every problem with the input reported instead of crashing later inside torch.

Handling of bad input (each is reported in the run's data report):
- no patients, or no patient labelled for the task: DataError with what was found;
- a recording that cannot be read, or shorter than MIN_FRAMES pooled frames (~1 s): left out;
- a patient with no usable recording: left out;
- implausible or non-finite demographics: that field becomes "unknown" (runtime.metadata);
- only one class present: DataError (nothing to learn); a murmur class with no example: a warning.

Cache: one .npz per recording under <cache>/<front-end config hash[:16]>/, named by a hash of the
recording's resolved path, size and modification time, so a changed file or config recomputes.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime.dsp.config import FrontEndConfig
from runtime.dsp.frontend import compute_features
from runtime.metadata import sanitize_demographics
from runtime.records import MURMUR_CLASSES, Dataset, Demographics, Patient, Recording
from runtime.sites import SITES, site_index

MIN_FRAMES = 32  # ~1 s of pooled frames; anything shorter carries no heart cycle


class DataError(ValueError):
    """The data cannot be trained or evaluated on; the message says why and what to do."""


@dataclass
class Example:
    """One patient ready for training: features per site slot (repeats kept), labels as indices."""

    patient_id: str
    group: str
    outcome: int  # 1 Abnormal, 0 Normal, -1 unlabelled
    murmur: int  # index in MURMUR_CLASSES, -1 unlabelled
    demographics: Demographics
    site_features: list[list[np.ndarray]]  # len(SITES) lists of float32 [F, T]

    @property
    def site_mask(self) -> np.ndarray:
        return np.array([1.0 if recs else 0.0 for recs in self.site_features], dtype=np.float32)

    def longest(self) -> list[np.ndarray | None]:
        """Per site, the longest recording (the inference rule for repeats), or None."""
        return [max(recs, key=lambda f: f.shape[1]) if recs else None for recs in self.site_features]

    def label(self, task: str) -> int:
        """The label that stratifies, balances and calibrates: the outcome for "outcome" and "both"."""
        return self.murmur if task == "murmur" else self.outcome


@dataclass
class DataReport:
    """What loading found: counts and every problem, for the run report."""

    n_patients: int = 0
    n_recordings: int = 0
    n_used: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # quirks of the data that were handled, each with how
    population: dict = field(default_factory=dict)  # who the patients used are: counts by age group, sex, pregnancy

    def to_dict(self) -> dict:
        return {
            "patients_found": self.n_patients,
            "recordings_found": self.n_recordings,
            "patients_used": self.n_used,
            "population": self.population,
            "problems": self.problems,
            "warnings": self.warnings,
            "notes": self.notes,
        }


class FeatureCache:
    """Features of recordings on disk, keyed by front-end config and file identity."""

    def __init__(self, root: Path | None, config: FrontEndConfig):
        self.config = config
        self.folder = None if root is None else Path(root) / config.config_hash()[:16]
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)

    def _key(self, path: Path) -> str:
        stat = path.stat()
        identity = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        return hashlib.sha256(identity.encode()).hexdigest()[:24]

    def features(self, recording: Recording) -> np.ndarray:
        """float32 [n_freq, T]; reads and computes only on a cache miss."""
        if self.folder is None:
            return compute_features(recording.read(), self.config)
        cached = self.folder / f"{self._key(recording.path)}.npz"
        if cached.is_file():
            try:
                with np.load(cached) as data:
                    return data["features"]
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                pass  # a damaged entry (e.g. a disk that filled): computed again and replaced below
        values = compute_features(recording.read(), self.config)
        # a temporary name of this process's own, so runs filling one cache at once never mix bytes
        tmp = cached.with_name(f".{cached.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp.npz")
        try:
            np.savez(tmp, features=values)
            tmp.replace(cached)
        finally:
            tmp.unlink(missing_ok=True)
        return values


def _label_indices(patient: Patient) -> tuple[int, int]:
    outcome = {"Abnormal": 1, "Normal": 0}.get(patient.outcome or "", -1)
    murmur = MURMUR_CLASSES.index(patient.murmur) if patient.murmur in MURMUR_CLASSES else -1
    return outcome, murmur


def load_examples(dataset: Dataset, cache: FeatureCache, task: str) -> tuple[list[Example], DataReport]:
    """Labelled, usable patients of `dataset` for `task` ("outcome" or "murmur")."""
    report = DataReport(n_patients=len(dataset.patients), problems=list(dataset.problems))
    if not dataset.patients:
        raise DataError(f"no patients found in {dataset.root} (read as {dataset.format}); point --data at a CirCor or PhysioNet 2016 folder")
    examples = []
    n_unlabelled = 0
    for patient in dataset.patients:
        outcome, murmur = _label_indices(patient)
        if {"outcome": outcome, "murmur": murmur, "both": min(outcome, murmur)}[task] < 0:
            n_unlabelled += 1
            continue
        site_features: list[list[np.ndarray]] = [[] for _ in SITES]
        for recording in patient.recordings:
            report.n_recordings += 1
            try:
                values = cache.features(recording)
            except (OSError, ValueError) as err:
                report.problems.append(f"{recording.path}: unreadable, left out ({err})")
                continue
            if values.shape[1] < MIN_FRAMES or not np.all(np.isfinite(values)):
                report.problems.append(f"{recording.path}: shorter than {MIN_FRAMES} frames or not finite, left out")
                continue
            site_features[site_index(recording.site)].append(values)
        if not any(site_features):
            report.problems.append(f"patient {patient.patient_id}: no usable recording, left out")
            continue
        demographics, demo_problems = sanitize_demographics(patient.demographics)
        report.problems.extend(f"patient {patient.patient_id}: {p}; treated as unknown" for p in demo_problems)
        examples.append(Example(patient.patient_id, patient.group, outcome, murmur, demographics, site_features))
    if n_unlabelled:
        report.warnings.append(f"{n_unlabelled} patient(s) without a {task} label were left out")
    if not examples:
        raise DataError(
            f"no usable labelled patient for the {task} task in {dataset.root}: {len(dataset.patients)} patient(s) found, "
            f"{n_unlabelled} without a {task} label; training needs labelled data (CirCor training_data with "
            f"#{task.capitalize()} lines, or PhysioNet 2016 REFERENCE.csv)"
        )
    labels = np.array([e.label(task) for e in examples])
    n_classes = len(MURMUR_CLASSES) if task == "murmur" else 2
    counts = np.bincount(labels, minlength=n_classes)
    names = MURMUR_CLASSES if task == "murmur" else ("Normal", "Abnormal")
    if np.count_nonzero(counts) < 2:
        only = names[int(np.argmax(counts))]
        raise DataError(f"every usable patient is {only}: a {task} model needs examples of at least two classes")
    for name, count in zip(names, counts):
        if count == 0:
            report.warnings.append(f"no {name} example: the model cannot learn that class, and its metrics are undefined")
    report.n_used = len(examples)
    report.notes = data_notes(examples, cache.config.clip_frames)
    report.population = population(examples)
    return examples, report


def population(examples: list[Example]) -> dict:
    """Counts of the patients used by age group, sex and pregnancy ("not given" for unknown): the
    manifest carries them, and the runtime warns about a patient from a group the model barely saw."""
    def counts(values) -> dict[str, int]:
        found: dict[str, int] = {}
        for value in values:
            found[value] = found.get(value, 0) + 1
        return dict(sorted(found.items()))

    demographics = [e.demographics for e in examples]
    return {
        "patients": len(examples),
        "age_group": counts(d.age_group or "not given" for d in demographics),
        "sex": counts(d.sex or "not given" for d in demographics),
        "pregnant": sum(1 for d in demographics if d.pregnant),
    }


def data_notes(examples: list[Example], clip_frames: int) -> list[str]:
    """The dataset's quirks that training handles rather than drops (CirCor has each of them), each
    a sentence with the count, the handling and the first patient ids."""
    def note(ids: list[str], what: str, handling: str) -> list[str]:
        if not ids:
            return []
        shown = ", ".join(ids[:10]) + (", ..." if len(ids) > 10 else "")
        return [f"{len(ids)} patient(s) {what}: {handling} ({shown})"]

    d = [e.demographics for e in examples]
    repeats = [e.patient_id for e in examples if any(len(recs) > 1 for recs in e.site_features)]
    phc = [e.patient_id for e in examples if e.site_features[site_index("Phc")]]
    short = [e.patient_id for e in examples if any(f.shape[1] < clip_frames for recs in e.site_features for f in recs)]
    return (
        note([e.patient_id for e, x in zip(examples, d) if x.height_cm is None], "without a height (nan)", "encoded as unknown (height_missing = 1)")
        + note([e.patient_id for e, x in zip(examples, d) if x.weight_kg is None], "without a weight (nan)", "encoded as unknown (weight_missing = 1)")
        + note([e.patient_id for e, x in zip(examples, d) if x.age_group is None], "without an age group",
               "encoded as unknown (age_missing = 1)")
        + note([e.patient_id for e, x in zip(examples, d) if x.pregnant and x.age_group is None], "pregnant without an age group",
               "pregnancy kept, age encoded as unknown")
        + note(repeats, "with several recordings at one site (a site listed twice)",
               "training draws one of them at random for every crop; evaluation and the runtime use the longest")
        + note(phc, "with a recording at another location (Phc)", "used as a fifth site slot")
        + note(short, f"with a recording shorter than one crop ({clip_frames} frames)", "tiled to the crop length (trainer/crops.py), never zero-padded")
    )
