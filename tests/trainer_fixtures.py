"""Tiny synthetic heart-sound datasets for trainer tests (import the fixtures into a test module).

`make_dataset(folder, n_patients, ...)` writes WAVs with runtime.formats.write_wav and returns a
runtime.records.Dataset of Patients: S1/S2 thumps every ~0.8 s, and for abnormal patients a loud
systolic murmur (band noise 150-300 Hz) that even a tiny model learns in a few epochs. Murmur labels
follow the outcome (Present for abnormal; Absent or, for every fifth normal patient, Unknown).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.formats import write_wav
from runtime.records import Audio, Dataset, Demographics, Patient, Recording

RATE_HZ = 2000


def heart_sound(seconds: float, abnormal: bool, rng: np.random.Generator) -> np.ndarray:
    """int16 PCM at RATE_HZ."""
    n = int(seconds * RATE_HZ)
    t = np.arange(n) / RATE_HZ
    signal = 0.01 * rng.standard_normal(n)
    period = rng.uniform(0.7, 0.9)
    for beat in np.arange(rng.uniform(0, period), seconds - 0.5, period):
        for onset, freq in ((beat, 60.0), (beat + 0.3, 90.0)):
            window = (t >= onset) & (t < onset + 0.08)
            signal[window] += np.sin(2 * np.pi * freq * (t[window] - onset)) * np.exp(-(t[window] - onset) / 0.02)
        if abnormal:
            systole = (t >= beat + 0.09) & (t < beat + 0.28)
            noise = rng.standard_normal(int(systole.sum()))
            carrier = np.sin(2 * np.pi * rng.uniform(150, 300) * t[systole])
            signal[systole] += 0.5 * noise * carrier
    return (np.clip(signal / 2.0, -1, 1) * 32000).astype(np.int16)


def make_dataset(folder: Path, n_patients: int = 24, seed: int = 0, sites: tuple[str, ...] = ("AV", "MV"),
                 seconds: tuple[float, float] = (6.0, 10.0), groups: tuple[str, ...] = ("CC2014", "CC2015")) -> Dataset:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    patients = []
    for i in range(n_patients):
        abnormal = i % 2 == 1
        recordings = []
        for site in sites:
            path = folder / f"{1000 + i}_{site}.wav"
            write_wav(path, Audio(heart_sound(rng.uniform(*seconds), abnormal, rng), RATE_HZ))
            recordings.append(Recording(site=site, path=path))
        murmur = "Present" if abnormal else ("Unknown" if i % 10 == 0 else "Absent")
        demographics = Demographics(age_group="Child", sex=("Female", "Male")[i % 2], height_cm=float(rng.uniform(90, 150)),
                                    weight_kg=float(rng.uniform(12, 40)), pregnant=False)
        patients.append(Patient(str(1000 + i), recordings, demographics, murmur=murmur,
                                outcome="Abnormal" if abnormal else "Normal", group=groups[i % len(groups)]))
    return Dataset(root=folder, format="circor", patients=patients)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Dataset:
    """24 patients, two sites each, half abnormal, two campaigns."""
    return make_dataset(tmp_path_factory.mktemp("tiny-pcg"))


@pytest.fixture(scope="session")
def tiny_examples(tiny_dataset, tmp_path_factory):
    """tiny_dataset as outcome examples (features cached in a session folder)."""
    from runtime.dsp.config import FrontEndConfig
    from trainer.examples import FeatureCache, load_examples

    examples, _ = load_examples(tiny_dataset, FeatureCache(tmp_path_factory.mktemp("cache"), FrontEndConfig()), "outcome")
    return examples


def fast_train_config(task: str = "outcome", epochs: int = 6, **overrides):
    """A TrainConfig that trains a tiny model in seconds (import torch first)."""
    from trainer.train import TrainConfig

    values = dict(task=task, epochs=epochs, batch_size=16, patience=epochs, eval_crops=2, clip_frames=125,
                  learning_rate=3e-3, progress=False, seed=0)
    values.update(overrides)
    return TrainConfig(**values)


def tiny_model_config(task: str = "outcome", path: str = "primary"):
    from trainer.model import ModelConfig

    return ModelConfig(task=task, metadata_path=path, channels=(4, 8, 8), d_model=16, metadata_hidden=8, dropout=0.1)


def write_circor_folder(root: Path, n_patients: int = 24, seed: int = 0, sites: tuple[str, ...] = ("AV", "MV"), hidden: bool = False) -> Path:
    """The same synthetic patients written in the CirCor layout with runtime.formats.write_circor."""
    from runtime.formats import write_circor
    from runtime.records import RecordingData

    scratch = make_dataset(root / "_scratch", n_patients, seed, sites)
    written = []
    for patient in scratch.patients:
        recordings = [RecordingData(site=r.site, audio=r.read()) for r in patient.recordings]
        written.append((patient, recordings))
    write_circor(root, written, hidden=hidden)
    for path in (root / "_scratch").iterdir():
        path.unlink()
    (root / "_scratch").rmdir()
    return root


def write_physionet_folder(root: Path, databases: dict[str, int], seed: int = 0) -> Path:
    """PhysioNet 2016 layout: root/<database>/REFERENCE.csv and WAVs, half abnormal per database."""
    rng = np.random.default_rng(seed)
    for db, n in databases.items():
        folder = root / db
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(n):
            record = f"{db[-1]}{i:04d}"
            abnormal = i % 2 == 1
            write_wav(folder / f"{record}.wav", Audio(heart_sound(rng.uniform(6, 9), abnormal, rng), RATE_HZ))
            rows.append(f"{record},{1 if abnormal else -1}")
        (folder / "REFERENCE.csv").write_text("\n".join(rows) + "\n")
    return root
