"""pcg-export --adapt-bn DIR: fit an exported model to one stethoscope from a reference group recorded with it.

    adapt_source(source, folder) -> the record that goes into the manifest

A team taking the screening to a stethoscope the model never heard records a reference group with
it (people without known heart disease measured best; the box's own store, exported with
`pcg-runtime export --format circor`, will do) and exports the model again with `--adapt-bn` on
that folder. Every fold model's batch-norm statistics are re-estimated on those recordings
(trainer.adapt, AdaBN); no weight changes, the calibration and operating points stay the run's
(fitted for adapted scores when the run was trained with pcg-train --adapt-bn). The folder is read
with runtime.formats (CirCor, PhysioNet 2016 or plain WAV files); per patient and site the longest
readable recording is used, as at inference; labels, if any, are never read.

What it buys is measured by `pcg-train --folds lodo --adapt-bn` (trainer/STATUS.md): on the shared
PhysioNet 2016 data the ranking inside each held-out database barely moves, but scores from
different stethoscopes line up, which is what a pooled or fixed threshold needs.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from export.source import ExportSource, SourceError
from runtime.dsp import compute_features
from runtime.formats import FormatError, load_dataset
from trainer.adapt import MIN_RECORDINGS, AdaptationError, adapt_batchnorm


def adaptation_recordings(folder: Path, source: ExportSource) -> tuple[list[np.ndarray], dict]:
    """Features of the longest readable recording per patient and site under `folder`, and a report
    (patients, recordings used, unreadable ones, a digest of what was used)."""
    try:
        dataset = load_dataset(folder)
    except FormatError as err:
        raise SourceError(f"--adapt-bn {folder}: {err}") from None
    frontend = source.frontend
    features, unreadable, digest = [], [], hashlib.sha256()
    for patient in dataset.patients:
        longest: dict[str, np.ndarray] = {}
        for recording in patient.recordings:
            try:
                values = compute_features(recording.read(), frontend)
            except (FormatError, OSError, ValueError) as err:
                unreadable.append(f"{patient.patient_id}: {err}")
                continue
            if values.shape[1] and (recording.site not in longest or values.shape[1] > longest[recording.site].shape[1]):
                longest[recording.site] = values
        for site in sorted(longest):
            features.append(longest[site])
            digest.update(f"{patient.patient_id}/{site}:".encode() + longest[site].tobytes())
    report = {"folder": str(folder), "format": dataset.format, "patients": len(dataset.patients), "recordings_used": len(features),
              "unreadable": unreadable[:20], "unreadable_count": len(unreadable), "features_sha256": digest.hexdigest()}
    return features, report


def adapt_source(source: ExportSource, folder: Path) -> dict:
    """Replace every fold model of source.graph by its AdaBN copy for the recordings under `folder`;
    returns the manifest record. SourceError when the folder or the model cannot be adapted."""
    recordings, report = adaptation_recordings(folder, source)
    if len(recordings) < MIN_RECORDINGS:
        raise SourceError(f"--adapt-bn {folder}: {len(recordings)} readable recording(s); adaptation needs at least {MIN_RECORDINGS} "
                          "from the new stethoscope (a few dozen patients is better)")
    try:
        for i, model in enumerate(source.graph.models):
            source.graph.models[i] = adapt_batchnorm(model, recordings, source.clip_frames, source.n_crops)
    except AdaptationError as err:
        raise SourceError(f"--adapt-bn: {err}") from None
    return {
        "method": "AdaBN: every fold model's batch-norm statistics re-estimated on recordings of the target stethoscope "
                  "(trainer/adapt.py); weights, calibration and operating points unchanged",
        "crops_per_recording": source.n_crops,
        "calibrated_for": {"healthy": "adaptation to a healthy reference (pcg-train --adapt-bn healthy): adapt on recordings of people "
                                      "without heart disease",
                           "unlabelled": "adaptation to an unselected population (pcg-train --adapt-bn unlabelled)"}.get(
            source.train_config.get("adapt_bn", "none"),
            "unadapted models: the run's calibration and thresholds were fitted without adaptation, so they may sit off the adapted scores"),
        "adapted_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **report,
    }
