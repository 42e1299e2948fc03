"""One patient/recording data model for every format (CirCor 2022, PhysioNet 2016, plain WAV).

Readers in runtime.formats produce these; the front-end, the trainer and the field store consume
them. Audio is read lazily (`Recording.read()`), so loading a dataset index is cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

AGE_GROUPS: tuple[str, ...] = ("Neonate", "Infant", "Child", "Adolescent", "Young adult")
SEXES: tuple[str, ...] = ("Female", "Male")
MURMUR_CLASSES: tuple[str, ...] = ("Present", "Unknown", "Absent")
OUTCOME_CLASSES: tuple[str, ...] = ("Abnormal", "Normal")


@dataclass(frozen=True)
class Audio:
    """Mono PCM audio: int16 samples at `rate_hz`."""

    samples: np.ndarray  # int16, shape [n]
    rate_hz: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.rate_hz

    def as_float(self) -> np.ndarray:
        """Samples scaled to [-1, 1) as float64."""
        return self.samples.astype(np.float64) / 32768.0


@dataclass(frozen=True)
class Segment:
    """One interval of a heart-cycle segmentation (CirCor .tsv)."""

    start_s: float
    end_s: float
    state: int  # 0 unannotated, 1 S1, 2 systole, 3 S2, 4 diastole


@dataclass(frozen=True)
class Recording:
    """One recording at one auscultation site. `repeat` is 0 for `<ID>_<SITE>.wav`, n for `_n`."""

    site: str  # one of runtime.sites.SITES
    path: Path  # the WAV file
    repeat: int = 0
    header_path: Path | None = None
    segmentation_path: Path | None = None

    def read(self) -> Audio:
        from runtime.formats.wav import read_wav

        return read_wav(self.path)


@dataclass(frozen=True)
class Demographics:
    """Contract 3 inputs before encoding. None means unknown (CirCor writes `nan`)."""

    age_group: str | None = None  # one of AGE_GROUPS
    sex: str | None = None  # one of SEXES
    height_cm: float | None = None
    weight_kg: float | None = None
    pregnant: bool | None = None


@dataclass
class Patient:
    """A patient (CirCor) or a single recording treated as a patient (PhysioNet 2016, plain WAV)."""

    patient_id: str
    recordings: list[Recording]
    demographics: Demographics = field(default_factory=Demographics)
    murmur: str | None = None  # one of MURMUR_CLASSES; None when unlabelled (hidden set)
    outcome: str | None = None  # one of OUTCOME_CLASSES; None when unlabelled
    group: str = ""  # database (PhysioNet 2016 "training-a") or campaign (CirCor "CC2015")
    # Further CirCor annotations (murmur locations, timing, shape, grading, pitch, quality,
    # additional id), keyed by the patient-file field name, values as written (None for `nan`).
    annotations: dict[str, str | None] = field(default_factory=dict)

    @property
    def sites(self) -> list[str]:
        return sorted({r.site for r in self.recordings})


@dataclass
class Dataset:
    """A loaded folder: its format, its patients, and problems found that did not stop loading."""

    root: Path
    format: str  # "circor" | "physionet2016" | "wav"
    patients: list[Patient]
    problems: list[str] = field(default_factory=list)  # e.g. "training_data/85_AV.wav: listed but missing"

    def __len__(self) -> int:
        return len(self.patients)


@dataclass(frozen=True)
class RecordingData:
    """A recording held in memory, to be written by a format writer (runtime.formats.circor)."""

    site: str  # one of runtime.sites.SITES
    audio: Audio
    repeat: int = 0  # 0 writes <ID>_<SITE>.wav, n writes <ID>_<SITE>_n.wav
    segments: tuple[Segment, ...] | None = None  # written as .tsv (labelled data only)
