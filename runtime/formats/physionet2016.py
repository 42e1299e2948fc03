"""PhysioNet/CinC Challenge 2016 layout: `training-X/REFERENCE.csv` beside `training-X/<record>.wav`.

REFERENCE.csv rows are `<record>,<label>` with 1 = abnormal and -1 = normal (CRLF or LF line ends).
`root` is either one database folder (holding REFERENCE.csv) or a folder of databases. Each
recording becomes a Patient with one Recording at site "Phc" (the site is not recorded), group =
the database folder name, demographics unknown, murmur None. A record listed without its WAV, or a
WAV not listed, is left out and reported in Dataset.problems; a malformed row is a FormatError.
No audio is read while indexing.
"""

from __future__ import annotations

import os
from pathlib import Path

from runtime.formats.errors import FormatError
from runtime.records import Dataset, Patient, Recording
from runtime.sites import OTHER_SITE

REFERENCE = "REFERENCE.csv"
_OUTCOMES = {"1": "Abnormal", "-1": "Normal"}


def load_physionet2016(root: str | Path) -> Dataset:
    """Index one PhysioNet 2016 database folder, or every database folder directly under `root`."""
    root = Path(root)
    if not root.is_dir():
        raise FormatError(root, "no such folder", expected="a PhysioNet 2016 database folder or a folder of them")
    if (root / REFERENCE).is_file():
        databases = [root]
    else:
        databases = sorted(d for d in root.iterdir() if d.is_dir() and (d / REFERENCE).is_file())
    if not databases:
        raise FormatError(root, f"no {REFERENCE} in the folder or its subfolders",
                          expected=f"training-a/{REFERENCE} (rows like 'a0001,1') beside the WAV files")
    problems: list[str] = []
    patients: list[Patient] = []
    seen: dict[str, str] = {}
    for folder in databases:
        for patient in _load_database(folder, root, problems):
            if patient.patient_id in seen:
                problems.append(f"{_relative(patient.recordings[0].path, root)}: record {patient.patient_id} "
                                f"already in {seen[patient.patient_id]}; left out")
                continue
            seen[patient.patient_id] = patient.group
            patients.append(patient)
    return Dataset(root=root, format="physionet2016", patients=patients, problems=problems)


def read_reference(path: str | Path) -> list[tuple[str, str]]:
    """(record, outcome) pairs of a REFERENCE.csv, in file order; outcome "Abnormal" or "Normal"."""
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as error:
        raise FormatError(path, f"not UTF-8 text (byte {error.start})", expected="rows like 'a0001,1'") from None
    rows: list[tuple[str, str]] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 2 or not fields[0] or any(c.isspace() or c in "/\\" for c in fields[0]):
            raise FormatError(path, f"row {line.strip()!r}", line=number,
                              expected="'<record>,<label>' such as 'a0001,1'")
        record, label = fields
        if label not in _OUTCOMES:
            raise FormatError(path, f"label {label!r} for {record}", line=number, expected="1 (abnormal) or -1 (normal)")
        if record in first_line:
            raise FormatError(path, f"record {record} listed twice (first on line {first_line[record]})",
                              line=number, expected="one row per record")
        first_line[record] = number
        rows.append((record, _OUTCOMES[label]))
    return rows


def _load_database(folder: Path, root: Path, problems: list[str]) -> list[Patient]:
    names = set(os.listdir(folder))
    wavs = {name[:-4]: name for name in names if name.lower().endswith(".wav") and not name.startswith(".")}
    reference = _relative(folder / REFERENCE, root)
    rows = read_reference(folder / REFERENCE)
    patients = []
    for record, outcome in rows:
        if record not in wavs:
            problems.append(f"{_relative(folder / (record + '.wav'), root)}: listed in {reference} but missing; "
                            "left out")
            continue
        header = folder / f"{record}.hea" if f"{record}.hea" in names else None
        recording = Recording(site=OTHER_SITE, path=folder / wavs[record], header_path=header)
        patients.append(Patient(patient_id=record, recordings=[recording], outcome=outcome, group=folder.name))
    for record in sorted(set(wavs) - {record for record, _ in rows}):
        problems.append(f"{_relative(folder / wavs[record], root)}: not in {reference}, so unlabelled; left out")
    return patients


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
