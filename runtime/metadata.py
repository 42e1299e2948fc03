"""Demographics -> model metadata vector (DESIGN.md contract 3), defined once for training and field.

Layout (METADATA_FEATURES, 15 float32 values):
    age group one-hot (Neonate, Infant, Child, Adolescent, Young adult), age missing,
    sex one-hot (Female, Male), sex missing,
    height z-score, height missing, weight z-score, weight missing,
    pregnant (0/1), pregnancy missing.
A missing value encodes as zeros in its slots with its missing indicator set to 1. Height and weight
are standardized with `MetadataStats` fitted on the training fold only, and the z-score is clipped
to +-5 so one odd record cannot dominate a layer.

Implausible values are a boundary problem: `check_demographics` lists them with a message (the
field program refuses the input), including a height or weight implausible for the age group;
`sanitize_demographics` turns the fields outside their absolute range into "unknown" (the trainer
does this for dataset records and reports every problem, the age-group ones included).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace

import numpy as np

from runtime.records import AGE_GROUPS, SEXES, Demographics

METADATA_FEATURES: tuple[str, ...] = (
    *(f"age_{g.lower().replace(' ', '_')}" for g in AGE_GROUPS),
    "age_missing",
    *(f"sex_{s.lower()}" for s in SEXES),
    "sex_missing",
    "height_z",
    "height_missing",
    "weight_z",
    "weight_missing",
    "pregnant",
    "pregnancy_missing",
)
METADATA_DIM = len(METADATA_FEATURES)

#: Inclusive plausible ranges; outside them a value is treated as an entry error.
HEIGHT_RANGE_CM = (30.0, 230.0)
WEIGHT_RANGE_KG = (0.5, 250.0)
#: Age groups in which a pregnancy is plausible.
PREGNANCY_AGE_GROUPS = ("Adolescent", "Young adult")
#: Inclusive plausible (height cm, weight kg) ranges within each age group: wide (beyond the growth
#: charts' extremes, and holding every CirCor record but two Child entry errors, 35 cm and 4.2 kg), so only entry errors fail.
AGE_GROUP_RANGES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "Neonate": ((30.0, 70.0), (0.5, 8.0)),          # birth to 27 days
    "Infant": ((35.0, 105.0), (1.0, 25.0)),         # 28 days to 1 year
    "Child": ((55.0, 185.0), (5.0, 130.0)),         # 1 to 11 years
    "Adolescent": ((100.0, 230.0), (15.0, 250.0)),  # 12 to 18 years
    "Young adult": ((120.0, 230.0), (25.0, 250.0)),  # 18 to 21 years
}
Z_CLIP = 5.0


@dataclass(frozen=True)
class MetadataStats:
    """Training-fold statistics for the numeric fields (serialized into the model manifest)."""

    height_mean: float = 0.0
    height_std: float = 1.0
    weight_mean: float = 0.0
    weight_std: float = 1.0

    @classmethod
    def fit(cls, demographics: Iterable[Demographics]) -> MetadataStats:
        """Mean and standard deviation of the known, plausible heights and weights."""
        clean = [sanitize_demographics(d)[0] for d in demographics]
        heights = [d.height_cm for d in clean if d.height_cm is not None]
        weights = [d.weight_kg for d in clean if d.weight_kg is not None]
        h_mean, h_std = _mean_std(heights)
        w_mean, w_std = _mean_std(weights)
        return cls(height_mean=h_mean, height_std=h_std, weight_mean=w_mean, weight_std=w_std)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> MetadataStats:
        expected = set(cls.__dataclass_fields__)
        if set(data) != expected:
            raise ValueError(f"metadata statistics need exactly the keys {sorted(expected)}, got {sorted(data)}")
        values = {k: float(v) for k, v in data.items()}
        if values["height_std"] <= 0 or values["weight_std"] <= 0:
            raise ValueError("metadata statistics: standard deviations must be positive")
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return 0.0, 1.0
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std())
    return float(arr.mean()), std if std > 1e-6 else 1.0


def check_demographics(demo: Demographics) -> list[str]:
    """Problems with one patient's demographics, each a sentence naming the field; [] when fine."""
    problems = []
    if demo.age_group is not None and demo.age_group not in AGE_GROUPS:
        problems.append(f"age group {demo.age_group!r} is not one of {', '.join(AGE_GROUPS)}")
    if demo.sex is not None and demo.sex not in SEXES:
        problems.append(f"sex {demo.sex!r} is not one of {', '.join(SEXES)}")
    for name, value, (low, high), unit in (
        ("height", demo.height_cm, HEIGHT_RANGE_CM, "cm"),
        ("weight", demo.weight_kg, WEIGHT_RANGE_KG, "kg"),
    ):
        if value is None:
            continue
        if not math.isfinite(value) or not low <= value <= high:
            problems.append(f"{name} {value} {unit} is outside the plausible range {low:g} to {high:g} {unit}")
        elif demo.age_group in AGE_GROUP_RANGES:
            group_low, group_high = AGE_GROUP_RANGES[demo.age_group][0 if name == "height" else 1]
            if not group_low <= value <= group_high:
                problems.append(f"{name} {value:g} {unit} is implausible for age group {demo.age_group} "
                                f"(expected {group_low:g} to {group_high:g} {unit}); check the age group and the {name}")
    if demo.pregnant:
        if demo.sex == "Male":
            problems.append("pregnancy recorded for a male patient")
        if demo.age_group is not None and demo.age_group not in PREGNANCY_AGE_GROUPS:
            problems.append(f"pregnancy recorded for age group {demo.age_group}")
    return problems


def sanitize_demographics(demo: Demographics) -> tuple[Demographics, list[str]]:
    """Replace each implausible field by None (unknown); return the cleaned record and the problems."""
    problems = check_demographics(demo)
    if not problems:
        return demo, []
    cleaned = demo
    if demo.age_group is not None and demo.age_group not in AGE_GROUPS:
        cleaned = replace(cleaned, age_group=None)
    if demo.sex is not None and demo.sex not in SEXES:
        cleaned = replace(cleaned, sex=None)
    if demo.height_cm is not None and not _in_range(demo.height_cm, HEIGHT_RANGE_CM):
        cleaned = replace(cleaned, height_cm=None)
    if demo.weight_kg is not None and not _in_range(demo.weight_kg, WEIGHT_RANGE_KG):
        cleaned = replace(cleaned, weight_kg=None)
    if demo.pregnant and (
        demo.sex == "Male" or (demo.age_group is not None and demo.age_group not in PREGNANCY_AGE_GROUPS)
    ):
        cleaned = replace(cleaned, pregnant=None)
    return cleaned, problems


def _in_range(value: float, bounds: tuple[float, float]) -> bool:
    return math.isfinite(value) and bounds[0] <= value <= bounds[1]


def encode_metadata(demo: Demographics, stats: MetadataStats) -> np.ndarray:
    """float32 [METADATA_DIM] vector for one patient; implausible fields encode as missing."""
    demo, _ = sanitize_demographics(demo)
    v = np.zeros(METADATA_DIM, dtype=np.float32)
    i = 0
    if demo.age_group is None:
        v[i + len(AGE_GROUPS)] = 1.0
    else:
        v[i + AGE_GROUPS.index(demo.age_group)] = 1.0
    i += len(AGE_GROUPS) + 1
    if demo.sex is None:
        v[i + len(SEXES)] = 1.0
    else:
        v[i + SEXES.index(demo.sex)] = 1.0
    i += len(SEXES) + 1
    for value, mean, std in (
        (demo.height_cm, stats.height_mean, stats.height_std),
        (demo.weight_kg, stats.weight_mean, stats.weight_std),
    ):
        if value is None:
            v[i + 1] = 1.0
        else:
            v[i] = float(np.clip((value - mean) / std, -Z_CLIP, Z_CLIP))
        i += 2
    if demo.pregnant is None:
        v[i + 1] = 1.0
    else:
        v[i] = 1.0 if demo.pregnant else 0.0
    return v


def encode_batch(demographics: Iterable[Demographics], stats: MetadataStats) -> np.ndarray:
    """float32 [N, METADATA_DIM]."""
    rows = [encode_metadata(d, stats) for d in demographics]
    return np.stack(rows) if rows else np.zeros((0, METADATA_DIM), dtype=np.float32)
