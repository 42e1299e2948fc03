"""Real inputs for calibration and parity: the run's own data, split so that evaluation never leaks.

Evaluation set: the test part of one fold (the first fold of the export, or the fold of a single
checkpoint): patients that fold's model never trained on. Calibration set: patients drawn from the
other folds' test parts, i.e. from that fold's training data, never the evaluation fold. For a whole
run's ensemble every patient was in some member's training data; the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.source import ExportSource
from runtime.metadata import encode_batch
from trainer.crops import evaluation_crops
from trainer.summary import FoldOutcome

MIN_CALIBRATION_PATIENTS = 100


@dataclass
class PatientInputs:
    ids: list[str]
    inputs: dict[str, np.ndarray]  # x [N, K, S, F, T], site_mask [N, S], metadata [N, M]
    labels: np.ndarray  # 1 refer (outcome Abnormal, murmur Present/Unknown), 0 not

    def batches(self, size: int):
        for start in range(0, len(self.ids), size):
            yield {k: v[start : start + size] for k, v in self.inputs.items()}


@dataclass
class RunData:
    """The run's labelled patients, read once per export (parity, calibration, reference outputs)."""

    folder: Path
    format: str
    by_id: dict  # patient id -> trainer Example


@dataclass
class RealData:
    evaluation: PatientInputs
    calibration: PatientInputs
    evaluation_fold: str
    dataset: str
    note: str
    run: RunData


def run_data(source: ExportSource, data_dir: Path | None, cache_dir: Path | None) -> RunData:
    """The run's data folder as it recorded it (or `data_dir`, the same patients elsewhere), loaded as
    the trainer loads it (features through its cache)."""
    from trainer.crossval import load_labelled

    settings = (source.run or {}).get("settings", {})
    data = Path(data_dir) if data_dir is not None else Path(settings["data"]) if "data" in settings else None
    if data is None:
        raise ValueError(f"{source.path}: the run records no data folder; pass --calibration DATA_DIR")
    examples, _, data_format = load_labelled(data, source.task, cache_dir, source.frontend)
    return RunData(data, data_format, {e.patient_id: e for e in examples})


def _inputs(source: ExportSource, examples: list) -> PatientInputs:
    n_freq = source.model_config["n_freq"]
    crops = [evaluation_crops(e.longest(), source.clip_frames, source.n_crops, n_freq) for e in examples]
    metadata = encode_batch([e.demographics for e in examples], source.metadata_stats)
    labels = np.array([e.outcome if source.task == "outcome" else int(e.murmur <= 1) for e in examples], dtype=np.int64)
    return PatientInputs([e.patient_id for e in examples],
                         {"x": np.stack([c[0] for c in crops]), "site_mask": np.stack([c[1] for c in crops]), "metadata": metadata},
                         labels)


def load_real_data(source: ExportSource, data_dir: Path | None, cache_dir: Path | None, n_calibration: int = 128,
                   max_evaluation: int | None = None, seed: int = 0,
                   min_calibration: int = MIN_CALIBRATION_PATIENTS) -> RealData:
    """Evaluation and calibration inputs from the run's data (or `data_dir`, the same patients elsewhere)."""
    run = run_data(source, data_dir, cache_dir)
    data, by_id = run.folder, run.by_id
    fold_dir = source.fold_dirs[0]
    test_ids = [i for i in FoldOutcome.load(fold_dir).test_ids if i in by_id]
    if not test_ids:
        raise ValueError(f"{fold_dir}: none of its test patients are in {data}; pass the data the run was trained on")
    rng = np.random.default_rng(seed)
    held_in = sorted(set(by_id) - set(test_ids))
    if len(held_in) < min_calibration:
        raise ValueError(f"{data}: only {len(held_in)} patients outside fold {fold_dir.name}'s test part; "
                         f"calibration needs at least {min_calibration}")
    calibration_ids = sorted(rng.choice(held_in, size=min(n_calibration, len(held_in)), replace=False).tolist())
    if max_evaluation is not None and len(test_ids) > max_evaluation:
        test_ids = sorted(rng.choice(test_ids, size=max_evaluation, replace=False).tolist())
    ensemble = len(source.fold_dirs) > 1
    note = (f"evaluation: the {len(test_ids)} test patients of {fold_dir.name}, held out from that fold's model"
            + ("; the other fold models of the ensemble trained on them, so absolute AUROC is optimistic and only "
               "the float-vs-int8 differences are the figures of interest" if ensemble else "")
            + f". Calibration: {len(calibration_ids)} patients from {fold_dir.name}'s training data.")
    return RealData(_inputs(source, [by_id[i] for i in test_ids]), _inputs(source, [by_id[i] for i in calibration_ids]),
                    fold_dir.name, str(data), note, run)
