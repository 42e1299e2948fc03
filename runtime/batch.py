"""`pcg-runtime triage`: screen every patient of a folder (CirCor, PhysioNet 2016 or plain WAV files)
and write DESIGN.md contract 6, one row per patient, in the folder's patient order.

Every patient gets a row. A patient the quality gate fails is RETAKE with the reason and still
carries the model's probability on what there is; a patient with no usable recording is RETAKE
with an empty probability and the reason as "unreadable: ...". A recording is unusable when it
cannot be read, or when its sample rate is outside what the model's front-end supports (too low to
hold the analysed band, or a rate no recorder uses); the patient's other recordings are still
used. A hostile file (damaged, a rate out of range, too long for memory) ends its patient's row,
never the batch. Rows are written and flushed one by one, so an interrupted run keeps what it
finished.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path

from runtime.dsp import FrontEndConfig, compute_features
from runtime.formats import FormatError, load_dataset
from runtime.quality import assess
from runtime.records import Patient
from runtime.triage import decide, model_limits, model_summary, score_patient

COLUMNS = ("patient_id", "outcome_probability", "decision", "reason")
MURMUR_COLUMNS = ("murmur_present", "murmur_unknown", "murmur_absent")


@dataclass
class BatchSummary:
    patients: int = 0
    decisions: dict[str, int] = field(default_factory=dict)
    retake_reasons: dict[str, int] = field(default_factory=dict)
    unreadable: int = 0
    problems: list[str] = field(default_factory=list)  # what the folder reader reported
    seconds: float = 0.0


def longest_per_site(patient: Patient, config: FrontEndConfig) -> tuple[dict, list[str]]:
    """The repeat rule of the manifest: per site, the longest usable recording (ties: the first).
    Returns (site -> Audio, why each recording left out was)."""
    chosen: dict[str, tuple[int, object]] = {}
    errors = []
    for recording in patient.recordings:
        try:
            audio = recording.read()
        except (FormatError, OSError) as exc:
            errors.append(str(exc))
            continue
        try:
            config.check_input_rate(audio.rate_hz)
        except ValueError as exc:
            errors.append(f"{recording.path}: {exc}")
            continue
        if recording.site not in chosen or len(audio.samples) > chosen[recording.site][0]:
            chosen[recording.site] = (len(audio.samples), audio)
    return {site: audio for site, (_, audio) in chosen.items()}, errors


def triage_folder(model, root: Path, out: Path, *, format: str | None = None, operating_point: str | None = None,
                  progress=None) -> BatchSummary:
    """Screen every patient under `root` with `model` (runtime.inference.Model); write `out`."""
    started = time.perf_counter()
    dataset = load_dataset(root, format=format)
    config = FrontEndConfig.from_dict(model.manifest.frontend)
    murmur = "murmur" in model.manifest.class_names  # a murmur-task model, or an outcome model with a murmur head
    columns = COLUMNS + (MURMUR_COLUMNS if murmur else ())
    summary = BatchSummary(problems=list(dataset.problems))
    info = model_summary(model.manifest, model.provider, model.trust)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for patient in dataset.patients:
            row = {"patient_id": patient.patient_id}
            try:
                audio, read_errors = longest_per_site(patient, config)
                if not audio:
                    raise ValueError("; ".join(read_errors) or f"patient {patient.patient_id} has no recording")
                summary.problems.extend(read_errors)  # the patient is scored on the recordings that could be read
                features = {s: compute_features(a, config) for s, a in audio.items()}
                quality = {s: assess(a, s, config, features=features[s]) for s, a in audio.items()}
                usable = {s: f for s, f in features.items() if f.shape[1] > 0}
                if not usable:
                    raise ValueError("every recording is shorter than one spectrogram frame")
                score = score_patient(model, usable, patient.demographics, config)
                notes = model_limits(model.manifest, patient.demographics, list(usable), model.trust)
                result = decide(score, quality, model.manifest, operating_point, notes=notes, model_info=info)
                row.update(outcome_probability=f"{result.probability:.6f}", decision=result.decision,
                           reason=result.reason)
                if murmur and result.murmur:
                    for column, name in zip(MURMUR_COLUMNS, ("Present", "Unknown", "Absent")):
                        row[column] = f"{result.murmur[name]:.6f}"
                if result.decision == "RETAKE":
                    for q in quality.values():
                        for reason in q.reasons:
                            summary.retake_reasons[reason] = summary.retake_reasons.get(reason, 0) + 1
            except (FormatError, OSError, ValueError) as exc:
                summary.unreadable += 1
                row.update(outcome_probability="", decision="RETAKE", reason=f"unreadable: {exc}")
            except MemoryError:  # a recording far longer than any screening: the next patient may still fit
                summary.unreadable += 1
                files = ", ".join(str(r.path) for r in patient.recordings)
                row.update(outcome_probability="", decision="RETAKE",
                           reason=f"unreadable: {files}: too long to screen in this computer's memory; "
                                  "use recordings of a few minutes at most")
            writer.writerow(row)
            f.flush()
            summary.patients += 1
            summary.decisions[row["decision"]] = summary.decisions.get(row["decision"], 0) + 1
            if progress is not None:
                progress(summary.patients, len(dataset.patients))
    summary.seconds = time.perf_counter() - started
    return summary
