"""The CirCor DigiScope layout (PhysioNet 2022 challenge, v1.0.3): reader and writer.

    training_data.csv                      one row per patient (optional when reading)
    training_data/<ID>.txt                 the patient file: recordings, then '#Key: value' lines
    training_data/<ID>_<SITE>[_n].wav      16-bit PCM mono; .hea (WFDB header); .tsv (segmentation)

Rules the reader follows:
- Patients come from the patient files, sorted numerically by ID. `root` may hold `training_data/`
  or be that folder itself (then only .txt files whose first line is a patient header count).
- The patient file is the authority. training_data.csv is cross-checked when present; where it
  disagrees, the .txt wins and Dataset.problems records the difference.
- A listed WAV that is missing or unreadable is left out with a problem recorded; a listed .hea or
  .tsv that is missing leaves its path None with a problem. A patient left with no recordings is
  left out too (with a problem): every loaded Patient has at least one recording.
- The .hea header is cross-checked against the WAV (rate, sample count, names) and the patient
  file's rate; disagreements are problems, an unparsable header is a FormatError.
- Malformed text (patient file, .hea, .tsv, csv) raises FormatError naming the file and line.
- Hidden-set patient files (no Murmur/Outcome lines, no .tsv) load with murmur and outcome None.

Rules the writer follows: `hidden=True` writes no Murmur or Outcome lines, none of the murmur
description lines (locations, most audible, systolic/diastolic timing, shape, grading, pitch,
quality: they give the label away), and no .tsv; training_data.csv keeps all its columns with
those cells written `nan`, so both kinds of dataset share one schema.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from runtime.formats.errors import FormatError
from runtime.formats.wav import WavHeader, read_wav_header, write_wav
from runtime.records import (
    AGE_GROUPS,
    MURMUR_CLASSES,
    OUTCOME_CLASSES,
    SEXES,
    Dataset,
    Demographics,
    Patient,
    Recording,
    RecordingData,
    Segment,
)
from runtime.sites import SITES

DATA_FOLDER = "training_data"
CSV_NAME = "training_data.csv"
#: Murmur description fields: labels, so a hidden set does not carry them.
MURMUR_DESCRIPTION_FIELDS: tuple[str, ...] = (
    "Murmur locations",
    "Most audible location",
    "Systolic murmur timing",
    "Systolic murmur shape",
    "Systolic murmur grading",
    "Systolic murmur pitch",
    "Systolic murmur quality",
    "Diastolic murmur timing",
    "Diastolic murmur shape",
    "Diastolic murmur grading",
    "Diastolic murmur pitch",
    "Diastolic murmur quality",
)
#: training_data.csv columns, in the order of the published file (with its "Recording locations:").
CSV_COLUMNS: tuple[str, ...] = (
    "Patient ID", "Recording locations:", "Age", "Sex", "Height", "Weight", "Pregnancy status", "Murmur",
    *MURMUR_DESCRIPTION_FIELDS, "Outcome", "Campaign", "Additional ID",
)
SEGMENT_STATES = {0: "unannotated", 1: "S1", 2: "systole", 3: "S2", 4: "diastole"}

_NAN = "nan"
_SITE_LIST = ", ".join(SITES[:-1]) + " or " + SITES[-1]
_PATIENT_HEADER = re.compile(r"^(\S+)[ \t]+(\d+)[ \t]+(\d+)\s*$")
_RECORDING_SUFFIX = re.compile(r"^(?P<site>[A-Za-z]+)(?:_(?P<repeat>[1-9][0-9]*))?$")
#: Patient-file fields that become Patient attributes; every other '#' field goes to annotations.
_KNOWN_FIELDS = ("Age", "Sex", "Height", "Weight", "Pregnancy status", "Campaign", "Murmur", "Outcome")


def load_circor(root: str | Path) -> Dataset:
    """Index a CirCor dataset folder (no audio is read; WAV and .hea headers are checked)."""
    root = Path(root)
    if not root.is_dir():
        raise FormatError(root, "no such folder", expected="a CirCor dataset folder holding training_data/")
    data_dir = root / DATA_FOLDER if (root / DATA_FOLDER).is_dir() else root
    names = set(os.listdir(data_dir))
    patient_files = [n for n in names if n.endswith(".txt")]
    if data_dir == root:
        patient_files = [n for n in patient_files if looks_like_patient_file(root / n)]
    if not patient_files:
        raise FormatError(data_dir, "no patient files", expected="<ID>.txt files with a '<ID> <n> <rate>' first line")
    patient_files.sort(key=lambda name: _id_sort_key(name[:-4]))

    prefix = "" if data_dir == root else f"{DATA_FOLDER}/"  # how problems name files: relative to root
    problems: list[str] = []
    patients: list[Patient] = []
    listed_sites: dict[str, tuple[Patient, list[str]]] = {}
    for name in patient_files:
        parsed = _parse_patient_file(data_dir / name)
        listed_sites[parsed.patient.patient_id] = (parsed.patient, [line.site for line in parsed.lines])
        _attach_recordings(parsed, data_dir, names, prefix, problems)
        if parsed.patient.recordings:
            patients.append(parsed.patient)
        else:
            problems.append(f"{prefix}{name}: no recordings left; patient left out")
    if (root / CSV_NAME).is_file():
        _cross_check_csv(root / CSV_NAME, listed_sites, prefix, problems)
    return Dataset(root=root, format="circor", patients=patients, problems=problems)


def write_circor(
    root: str | Path,
    patients: Iterable[tuple[Patient, Sequence[RecordingData]]],
    *,
    hidden: bool = False,
) -> None:
    """Write patients in the CirCor layout under `root` (training_data.csv and training_data/).

    Each patient's `recordings` field is ignored: the RecordingData sequence is what is written.
    Patients are written as they come (a generator is fine); the csv is written last.
    `hidden=True` writes an unlabelled set (see the module docstring). Raises ValueError for a
    patient the reader could not load back (no recordings, two at one site and repeat, mixed
    rates, an ID with spaces or slashes, values outside the known classes).
    """
    root = Path(root)
    data_dir = root / DATA_FOLDER
    data_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    written: set[str] = set()
    for patient, recordings in patients:
        _check_writable(patient, recordings, written)
        written.add(patient.patient_id)
        pid = patient.patient_id
        rate_hz = recordings[0].audio.rate_hz
        lines = [f"{pid} {len(recordings)} {rate_hz}"]
        for recording in recordings:
            stem = recording_stem(pid, recording.site, recording.repeat)
            write_wav(data_dir / f"{stem}.wav", recording.audio)
            (data_dir / f"{stem}.hea").write_text(
                f"{stem} 1 {rate_hz} {len(recording.audio.samples)}\n"
                f"{stem}.wav 16+44 1 16 0 0 0 0 {recording.site}\n"
            )
            files = [f"{stem}.hea", f"{stem}.wav"]
            if not hidden and recording.segments is not None:
                _write_segmentation(data_dir / f"{stem}.tsv", recording.segments)
                files.append(f"{stem}.tsv")
            lines.append(" ".join([recording.site, *files]))
        lines += [f"#{key}: {value}" for key, value in _patient_fields(patient, hidden)]
        (data_dir / f"{pid}.txt").write_text("\n".join(lines) + "\n")
        rows.append(_csv_row(patient, [r.site for r in recordings], hidden))
    with open(root / CSV_NAME, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)


def read_segmentation(path: str | Path) -> tuple[Segment, ...]:
    """Read a CirCor .tsv: one `start_s<TAB>end_s<TAB>state` line per segment, no header.

    Segments come back sorted by start time with exact duplicate lines dropped (the published
    data has files listing every segment twice). States are 0 unannotated, 1 S1, 2 systole,
    3 S2, 4 diastole.
    """
    segments = set()
    for number, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 3:
            raise FormatError(path, f"{len(fields)} fields in {line.strip()!r}", line=number,
                              expected="start seconds, end seconds and state separated by tabs")
        try:
            start_s, end_s, state_value = (float(v) for v in fields)
        except ValueError:
            raise FormatError(path, f"not a number in {line.strip()!r}", line=number,
                              expected="start seconds, end seconds and state as numbers") from None
        if not (math.isfinite(start_s) and math.isfinite(end_s)) or start_s < 0 or end_s < start_s:
            raise FormatError(path, f"segment from {fields[0]} s to {fields[1]} s", line=number,
                              expected="0 <= start <= end, finite")
        if state_value not in SEGMENT_STATES:
            raise FormatError(path, f"unknown state {fields[2]!r}", line=number,
                              expected="0 (unannotated), 1 (S1), 2 (systole), 3 (S2) or 4 (diastole)")
        segments.add(Segment(start_s, end_s, int(state_value)))
    return tuple(sorted(segments, key=lambda s: (s.start_s, s.end_s, s.state)))


def recording_stem(patient_id: str, site: str, repeat: int = 0) -> str:
    """File name without extension: `<ID>_<SITE>` for repeat 0, `<ID>_<SITE>_<n>` for repeat n."""
    return f"{patient_id}_{site}" + (f"_{repeat}" if repeat else "")


def looks_like_patient_file(path: Path) -> bool:
    """Whether the first line of `path` is a CirCor patient header `<ID> <n recordings> <rate>`."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            first = f.readline(200)
    except OSError:
        return False
    return _PATIENT_HEADER.match(first) is not None


@dataclass(frozen=True)
class WfdbHeader:
    """The parts of a single-signal WFDB .hea header the reader checks."""

    record: str
    rate_hz: float
    frames: int
    signal_file: str
    description: str | None  # CirCor writes the site here


def read_wfdb_header(path: str | Path) -> WfdbHeader:
    """Parse a single-signal WFDB header: `<record> 1 <rate> <samples>` then `<file> <format> ...`."""
    lines = [(n, line.split()) for n, line in enumerate(_read_lines(path), start=1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise FormatError(path, "no record line", expected="'<record> 1 <rate> <samples>'")
    number, fields = lines[0]
    try:
        if len(fields) < 4:
            raise ValueError
        record, signals = fields[0], int(fields[1])
        rate_hz = float(re.split(r"[/(]", fields[2])[0])
        frames = int(fields[3])
    except ValueError:
        raise FormatError(path, f"record line {' '.join(fields)!r}", line=number,
                          expected="'<record> <signals> <rate> <samples>'") from None
    if signals != 1:
        raise FormatError(path, f"{signals} signals", line=number, expected="1 (one PCG signal)")
    if len(lines) < 2 or len(lines[1][1]) < 2:
        raise FormatError(path, "no signal line", line=number + 1, expected="'<file.wav> 16+44 ...'")
    signal = lines[1][1]
    return WfdbHeader(record, rate_hz, frames, signal[0], signal[8] if len(signal) > 8 else None)


@dataclass
class _RecordingLine:
    number: int
    site: str
    repeat: int
    header: str
    wav: str
    segmentation: str | None


@dataclass
class _PatientFile:
    path: Path
    rate_hz: int
    lines: list[_RecordingLine]
    patient: Patient


def _parse_patient_file(path: Path) -> _PatientFile:
    numbered = [(n, line.strip()) for n, line in enumerate(_read_lines(path), start=1) if line.strip()]
    if not numbered:
        raise FormatError(path, "empty patient file", expected="'<ID> <number of recordings> <sampling frequency>'")
    number, first = numbered[0]
    header = _PATIENT_HEADER.match(first)
    if header is None:
        raise FormatError(path, f"header {first!r}", line=number,
                          expected="'<ID> <number of recordings> <sampling frequency>'")
    pid, count, rate_hz = header.group(1), int(header.group(2)), int(header.group(3))
    if pid != path.stem:
        raise FormatError(path, f"header names patient {pid!r}", line=number, expected=f"the file name's ID {path.stem!r}")
    if rate_hz == 0:
        raise FormatError(path, "sampling frequency 0", line=number, expected="a positive rate in Hz")
    body = numbered[1:]
    found = next((i for i, (_, line) in enumerate(body[:count]) if line.startswith("#")), len(body[:count]))
    if found < count:
        raise FormatError(path, f"header declares {count} recordings but {found} recording lines follow",
                          line=number, expected="one 'SITE file.hea file.wav [file.tsv]' line per recording")
    recording_lines = [_parse_recording_line(path, pid, n, line) for n, line in body[:count]]
    seen: dict[tuple[str, int], int] = {}
    for line in recording_lines:
        key = (line.site, line.repeat)
        if key in seen:
            raise FormatError(path, f"{line.wav} listed twice (first on line {seen[key]})", line=line.number,
                              expected="one line per recording")
        seen[key] = line.number

    fields: dict[str, tuple[str | None, int]] = {}
    for n, line in body[count:]:
        key, colon, value = line[1:].partition(":")
        key = key.strip()
        if not line.startswith("#") or not colon or not key:
            raise FormatError(path, f"unexpected line {line!r}", line=n, expected="'#Key: value'")
        if key in fields:
            raise FormatError(path, f"second {key!r} field (first on line {fields[key][1]})", line=n,
                              expected="each field once")
        value = value.strip()
        fields[key] = (None if value.lower() in (_NAN, "") else value, n)

    def choice(key: str, options: tuple[str, ...]) -> str | None:
        value, n = fields.get(key, (None, 0))
        if value is None:
            return None
        for option in options:
            if value.casefold() == option.casefold():
                return option
        raise FormatError(path, f"unknown {key} {value!r}", line=n, expected=", ".join(options) + " or nan")

    def number_field(key: str) -> float | None:
        value, n = fields.get(key, (None, 0))
        if value is None:
            return None
        try:
            result = float(value)
        except ValueError:
            result = math.nan
        if not math.isfinite(result):
            raise FormatError(path, f"{key} {value!r} is not a number", line=n, expected="a number or nan")
        return result

    pregnant = choice("Pregnancy status", ("True", "False"))
    patient = Patient(
        patient_id=pid,
        recordings=[],
        demographics=Demographics(
            age_group=choice("Age", AGE_GROUPS),
            sex=choice("Sex", SEXES),
            height_cm=number_field("Height"),
            weight_kg=number_field("Weight"),
            pregnant=None if pregnant is None else pregnant == "True",
        ),
        murmur=choice("Murmur", MURMUR_CLASSES),
        outcome=choice("Outcome", OUTCOME_CLASSES),
        group=fields.get("Campaign", (None, 0))[0] or "",
        annotations={key: value for key, (value, _) in fields.items() if key not in _KNOWN_FIELDS},
    )
    return _PatientFile(path, rate_hz, recording_lines, patient)


def _parse_recording_line(path: Path, pid: str, number: int, line: str) -> _RecordingLine:
    expected_form = "'SITE <ID>_<SITE>.hea <ID>_<SITE>.wav [<ID>_<SITE>.tsv]'"
    fields = line.split()
    if len(fields) not in (3, 4):
        raise FormatError(path, f"{len(fields)} fields in {line!r}", line=number, expected=expected_form)
    site = fields[0]
    if site not in SITES:
        raise FormatError(path, f"unknown site {site!r}", line=number, expected=_SITE_LIST)
    for name, extension in zip(fields[1:], (".hea", ".wav", ".tsv")):
        if not name.endswith(extension) or "/" in name or "\\" in name:
            raise FormatError(path, f"file {name!r} where a {extension} file name belongs", line=number,
                              expected=expected_form)
    stem = fields[2][: -len(".wav")]
    suffix = _RECORDING_SUFFIX.match(stem[len(pid) + 1:]) if stem.startswith(f"{pid}_") else None
    if suffix is None or suffix.group("site") != site:
        raise FormatError(path, f"recording file {fields[2]!r} does not match site {site}", line=number,
                          expected=f"{pid}_{site}.wav or {pid}_{site}_<n>.wav")
    for name in fields[1:]:
        if name.rsplit(".", 1)[0] != stem:
            raise FormatError(path, f"{name!r} does not match the recording {fields[2]!r}", line=number,
                              expected=f"{stem}.hea, {stem}.wav and {stem}.tsv")
    repeat = int(suffix.group("repeat") or 0)
    return _RecordingLine(number, site, repeat, fields[1], fields[2], fields[3] if len(fields) == 4 else None)


def _attach_recordings(parsed: _PatientFile, data_dir: Path, names: set[str], prefix: str,
                       problems: list[str]) -> None:
    listing = f"{prefix}{parsed.path.name}"
    for line in parsed.lines:
        wav_path = data_dir / line.wav
        wav_name = f"{prefix}{line.wav}"
        if line.wav not in names:
            problems.append(f"{wav_name}: listed in {listing} line {line.number} but missing; recording left out")
            continue
        try:
            wav = read_wav_header(wav_path)
        except (FormatError, OSError) as error:
            problems.append(f"{wav_name}: unreadable ({error}); recording left out")
            continue
        if wav.rate_hz != parsed.rate_hz:
            problems.append(f"{wav_name}: {wav.rate_hz} Hz but {listing} declares {parsed.rate_hz} Hz")
        header_path = _present(data_dir, line.header, names, listing, line.number, prefix, problems)
        if header_path is not None:
            _cross_check_header(header_path, wav, line, prefix, problems)
        segmentation_path = None
        if line.segmentation is not None:
            segmentation_path = _present(data_dir, line.segmentation, names, listing, line.number, prefix, problems)
        parsed.patient.recordings.append(
            Recording(line.site, wav_path, line.repeat, header_path, segmentation_path)
        )


def _present(data_dir: Path, name: str, names: set[str], listing: str, number: int, prefix: str,
             problems: list[str]) -> Path | None:
    if name in names:
        return data_dir / name
    problems.append(f"{prefix}{name}: listed in {listing} line {number} but missing")
    return None


def _cross_check_header(path: Path, wav: WavHeader, line: _RecordingLine, prefix: str, problems: list[str]) -> None:
    header = read_wfdb_header(path)
    name = f"{prefix}{path.name}"
    stem = line.wav[: -len(".wav")]
    if header.rate_hz != wav.rate_hz:
        problems.append(f"{name}: declares {header.rate_hz:g} Hz but {line.wav} is {wav.rate_hz} Hz")
    if header.frames != wav.frames:
        problems.append(f"{name}: declares {header.frames} samples but {line.wav} has {wav.frames}")
    if header.record != stem or header.signal_file != line.wav:
        problems.append(f"{name}: names record {header.record!r} and file {header.signal_file!r}, "
                        f"expected {stem!r} and {line.wav!r}")
    if header.description is not None and header.description != line.site:
        problems.append(f"{name}: describes the signal as {header.description!r} but it is listed at {line.site}")


def _cross_check_csv(path: Path, patients: dict[str, tuple[Patient, list[str]]], prefix: str,
                     problems: list[str]) -> None:
    """Compare training_data.csv with the patient files; the patient files win."""
    name = path.name
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            problems.append(f"{name}: empty file; not cross-checked")
            return
        columns = {_column_key(column): index for index, column in enumerate(header)}
        if _column_key("Patient ID") not in columns:
            raise FormatError(path, f"no 'Patient ID' column in header {','.join(header)!r}", line=1,
                              expected=",".join(CSV_COLUMNS))
        known = [(column, columns[_column_key(column)]) for column in CSV_COLUMNS[1:] if _column_key(column) in columns]
        seen: dict[str, int] = {}
        for row in reader:
            number = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise FormatError(path, f"{len(row)} cells", line=number, expected=f"{len(header)}, one per column")
            pid = row[columns[_column_key("Patient ID")]].strip()
            if pid in seen:
                raise FormatError(path, f"patient {pid} listed twice (first on line {seen[pid]})", line=number,
                                  expected="one row per patient")
            seen[pid] = number
            if pid not in patients:
                problems.append(f"{name} line {number}: patient {pid} has no patient file {pid}.txt; left out")
                continue
            patient, sites = patients[pid]
            expected_row = dict(zip(CSV_COLUMNS, _csv_row(patient, sites, hidden=False)))
            listing = f"{prefix}{pid}.txt"
            for column, index in known:
                if _cell_key(column, row[index]) != _cell_key(column, expected_row[column]):
                    problems.append(f"{name} line {number}: patient {pid} {column.rstrip(':')} is {row[index]!r} "
                                    f"but {listing} says {expected_row[column]!r}; using {listing}")
    for pid in patients:
        if pid not in seen:
            problems.append(f"{prefix}{pid}.txt: patient {pid} is not in {name}")


def _column_key(column: str) -> str:
    return column.strip().rstrip(":").strip().casefold()


def _cell_key(column: str, text: str) -> object:
    text = text.strip()
    if column == "Recording locations:":
        return sorted(text.split("+"))
    if text.lower() in (_NAN, ""):
        return None
    try:
        return float(text)
    except ValueError:
        return text.casefold()


def _patient_fields(patient: Patient, hidden: bool) -> list[tuple[str, str]]:
    d = patient.demographics
    annotations = patient.annotations
    fields = [
        ("Age", _text(d.age_group)),
        ("Sex", _text(d.sex)),
        ("Height", _text(d.height_cm)),
        ("Weight", _text(d.weight_kg)),
        ("Pregnancy status", _text(d.pregnant)),
    ]
    if not hidden:
        fields.append(("Murmur", _text(patient.murmur)))
        fields += [(key, _text(annotations.get(key))) for key in MURMUR_DESCRIPTION_FIELDS]
    fields += [("Campaign", _text(patient.group or None)), ("Additional ID", _text(annotations.get("Additional ID")))]
    fields += [(key, _text(value)) for key, value in annotations.items()
               if key not in MURMUR_DESCRIPTION_FIELDS and key != "Additional ID"]
    if not hidden:
        fields.append(("Outcome", _text(patient.outcome)))
    return fields


def _csv_row(patient: Patient, sites: list[str], hidden: bool) -> list[str]:
    fields = dict(_patient_fields(patient, hidden))
    return [patient.patient_id, "+".join(sites)] + [fields.get(column, _NAN) for column in CSV_COLUMNS[2:]]


def _text(value: str | float | bool | None) -> str:
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return _NAN
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (float, int)):
        return repr(float(value))
    return str(value)


def _check_writable(patient: Patient, recordings: Sequence[RecordingData], written: set[str]) -> None:
    pid = patient.patient_id
    problem = None
    if not pid or any(c.isspace() or c in "/\\" for c in pid):
        problem = "ID must be non-empty, without spaces or slashes"
    elif pid in written:
        problem = "written twice"
    elif not recordings:
        problem = "no recordings"
    elif len({r.audio.rate_hz for r in recordings}) > 1:
        problem = f"recordings at several rates {sorted({r.audio.rate_hz for r in recordings})}; one patient file declares one"
    elif len({(r.site, r.repeat) for r in recordings}) < len(recordings):
        problem = "two recordings with the same site and repeat"
    elif any(r.site not in SITES or r.repeat < 0 for r in recordings):
        problem = f"site outside {_SITE_LIST} or a negative repeat"
    else:
        d = patient.demographics
        for value, options in ((d.age_group, AGE_GROUPS), (d.sex, SEXES), (patient.murmur, MURMUR_CLASSES),
                               (patient.outcome, OUTCOME_CLASSES)):
            if value is not None and value not in options:
                problem = f"{value!r} is not one of {', '.join(options)}"
        for key, value in patient.annotations.items():
            if (not key or key in _KNOWN_FIELDS or ":" in key or "\n" in key
                    or (value is not None and "\n" in value)):
                problem = f"annotation {key!r}: {value!r} cannot be written as one '#Key: value' line"
    if problem:
        raise ValueError(f"write_circor: patient {pid!r}: {problem}")


def _write_segmentation(path: Path, segments: Sequence[Segment]) -> None:
    path.write_text("".join(f"{float(s.start_s)!r}\t{float(s.end_s)!r}\t{int(s.state)}\n" for s in segments))


def _read_lines(path: str | Path) -> list[str]:
    """Lines of a text file, any of LF, CRLF or CR line ends, a UTF-8 byte-order mark ignored."""
    try:
        return Path(path).read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as error:
        raise FormatError(path, f"not UTF-8 text (byte {error.start})", expected="a text file") from None


def _id_sort_key(patient_id: str) -> tuple:
    return (0, int(patient_id), "") if patient_id.isdigit() else (1, 0, patient_id)
