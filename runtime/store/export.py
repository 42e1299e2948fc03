"""Exports of the field store: incremental record exports for sync, and the CirCor layout for retraining.

Record exports are safe to repeat. Each carries `max_seq`; the next export with
`after_seq=max_seq` holds exactly the records written since (new ones, and changed ones again,
with their new state: a receiver keeps the latest version of each record by `id`). Every table
keeps a stable column order (runtime.store.schema.TABLE_COLUMNS); tables come parents first.
The export reads one consistent snapshot, so a recording running beside it cannot split it.

Erasures travel as changed records, not as a separate list: `Store.erase_patient` writes every
row it touches with a new sequence number, so the next export holds the patient row (erased_at
set, consent_reuse 0), the demographics rows with every field empty, the recording rows with
erased_at set (their audio is gone), visits it closed, and the 'patient_erased' device event. A
receiver that keeps the latest version of each record by `id` therefore erases too: it drops
the demographics it held and deletes any copy of the audio of recordings marked erased_at.
Export version 2 added patients.consent_reuse, patients.erased_at and recordings.erased_at.

The CirCor export for retraining (`export_circor`) holds only patients who consented to reuse,
under pseudonymous ids; see there.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import itertools
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

from runtime.records import Patient, RecordingData
from runtime.store.db import PSEUDONYM_KEY, Store, iso_utc
from runtime.store.errors import StoreError
from runtime.store.schema import JSON_COLUMNS, SCHEMA_VERSION, TABLE_COLUMNS
from runtime.store.wavstream import fsync_dir

EXPORT_FORMATS = ("csv", "json")
EXPORT_VERSION = 2
PSEUDONYM_DIGITS = 15  # CirCor ids are integers; 15 digits stay exact even where read as a float64
INFO_FILE = "export_info.csv"
JSON_FILE = "records.json"


@dataclass(frozen=True)
class Export:
    """One export: file name -> text, and where the next export continues (`after_seq=max_seq`)."""

    format: str  # "csv" | "json"
    files: dict[str, str]  # csv: one <table>.csv per table and export_info.csv; json: records.json
    store_id: str
    after_seq: int | None
    since: str | None
    max_seq: int  # highest sequence number exported (after_seq, or 0, when nothing was new)
    counts: dict[str, int]  # records per table

    def write(self, directory: str | Path) -> list[Path]:
        """Write the files into `directory` (each atomically: temporary file, fsync, rename)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, text in self.files.items():
            path = directory / name
            temporary = directory / f".{name}.{secrets.token_hex(4)}.tmp"
            try:
                with open(temporary, "w", encoding="utf-8", newline="") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(temporary, path)
            finally:
                temporary.unlink(missing_ok=True)
            paths.append(path)
        fsync_dir(directory)
        return paths


def export_records(
    store: Store,
    format: str = "csv",
    after_seq: int | None = None,
    since: datetime | date | str | None = None,
) -> Export:
    """Records written after sequence number `after_seq` and/or at or after wall-clock time `since`.

    `since` is a datetime (naive means UTC), a date (midnight UTC) or an ISO 8601 string such as
    '2026-03-01' or '2026-03-01T08:00:00+02:00'. Prefer `after_seq`: field boxes often have no
    real-time clock, so wall-clock times can be wrong; sequence numbers never are. Records that
    `since` leaves out are not picked up by a later export continuing from this one's max_seq.
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(f"export format {format!r} is not one of {', '.join(EXPORT_FORMATS)}")
    if after_seq is not None and (isinstance(after_seq, bool) or not isinstance(after_seq, int) or after_seq < 0):
        raise ValueError(f"after_seq must be a non-negative integer (the max_seq of an earlier export), got {after_seq!r}")
    since_text = _since_text(since)
    tables = dict(_select(store, after_seq, since_text))
    exported = [row["changed_seq"] for rows in tables.values() for row in rows]
    max_seq = max(exported) if exported else (after_seq or 0)
    info = {
        "export_version": EXPORT_VERSION, "schema_version": SCHEMA_VERSION, "store_id": store.store_id,
        "after_seq": after_seq, "since": since_text, "max_seq": max_seq,
    }
    if format == "json":
        document = {**info, "tables": {name: [_decoded(row) for row in rows] for name, rows in tables.items()}}
        files = {JSON_FILE: json.dumps(document, indent=1, allow_nan=False) + "\n"}
    else:
        files = {f"{name}.csv": _csv_text(TABLE_COLUMNS[name], rows) for name, rows in tables.items()}
        files[INFO_FILE] = _csv_text(("key", "value"), [{"key": k, "value": v} for k, v in info.items()])
    return Export(format=format, files=files, store_id=store.store_id, after_seq=after_seq, since=since_text,
                  max_seq=max_seq, counts={name: len(rows) for name, rows in tables.items()})


def _since_text(since: datetime | date | str | None) -> str | None:
    if since is None:
        return None
    if isinstance(since, str):
        try:
            since = datetime.fromisoformat(since)
        except ValueError:
            raise ValueError(f"since {since!r} is not an ISO 8601 date or time, e.g. 2026-03-01 or "
                             "2026-03-01T08:00:00+02:00") from None
    if not isinstance(since, datetime):
        since = datetime(since.year, since.month, since.day, tzinfo=timezone.utc)
    return iso_utc(since)


def _select(store: Store, after_seq: int | None, since: str | None) -> Iterator[tuple[str, list[dict]]]:
    conditions, parameters = [], []
    if after_seq is not None:
        conditions.append("changed_seq > ?")
        parameters.append(after_seq)
    if since is not None:
        conditions.append("changed_at >= ?")
        parameters.append(since)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    with store.snapshot():
        for table, columns in TABLE_COLUMNS.items():
            rows = store.query(f"SELECT {', '.join(columns)} FROM {table} {where} ORDER BY changed_seq", tuple(parameters))
            yield table, [dict(row) for row in rows]


def _decoded(row: dict) -> dict:
    return {k: json.loads(v) if k in JSON_COLUMNS and v is not None else v for k, v in row.items()}


def _csv_text(columns: tuple[str, ...], rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row[c] is None else row[c] for c in columns])
    return out.getvalue()


def export_circor(store: Store, root: str | Path) -> int:
    """Write the recordings of every patient who consented to reuse in the CirCor layout under
    `root`, for retraining. Returns the number of patients written.

    Only patients with consent_reuse (given at registration, apart from the consent to screen)
    and not erased are written. One CirCor patient per store patient, so that folds split by
    patient keep a child's visits together: every complete recording of every visit, in
    sequence order, a site recorded more than once (a retake, a revisit) getting repeats 0, 1,
    ...; recordings at another rate than the patient's first are left out (a patient file
    declares one rate). The ID is a pseudonym (`circor_pseudonyms`), never the card's code, and
    patients are written in the order of their IDs, not of registration, so that order cannot
    link them to the record export either; campaign = the store id. No labels exist in the field, so the set is written as hidden (no
    Murmur/Outcome lines). Patients without a complete recording are skipped.
    """
    from runtime.formats.circor import write_circor

    pseudonyms = circor_pseudonyms(store)
    written = 0

    def patients() -> Iterator[tuple[Patient, list[RecordingData]]]:
        nonlocal written
        consented = store.query("SELECT id FROM patients WHERE consent_reuse = 1 AND erased_at IS NULL")
        for patient_id in sorted((pid for (pid,) in consented), key=pseudonyms.__getitem__):
            rows = store.query(
                "SELECT r.id FROM recordings r JOIN sessions s ON s.id = r.session_id WHERE s.patient_id = ? AND "
                "r.status = 'complete' AND r.samples_written > 0 AND r.erased_at IS NULL ORDER BY r.seq", (patient_id,))
            recordings = [store.recording(recording_id) for (recording_id,) in rows]
            if not recordings:
                continue
            repeats: dict[str, int] = {}
            data = []
            for recording in recordings:
                if recording.rate_hz != recordings[0].rate_hz:
                    continue
                repeat = repeats[recording.site] = repeats.get(recording.site, -1) + 1
                data.append(RecordingData(site=recording.site, audio=store.read_audio(recording), repeat=repeat))
            written += 1
            yield (
                Patient(patient_id=pseudonyms[patient_id], recordings=[],
                        demographics=store.patient(patient_id).demographics, group=store.store_id),
                data,
            )

    write_circor(root, patients(), hidden=True)
    return written


def circor_pseudonyms(store: Store) -> dict[str, str]:
    """patient id -> the patient's CirCor ID: a 15-digit number taken from HMAC-SHA256 of the
    patient's UUID under the store's secret key (store_info, never exported).

    Without the key nobody can tell which code or record an ID belongs to; with it, the same
    store always gives the same IDs (repeatable exports, a patient's later visits under the
    same ID). IDs are drawn for every patient in sequence order, consenting or not, so an
    improbable collision is resolved the same way every time: the later patient hashes again
    with a counter.
    """
    row = store.query("SELECT value FROM store_info WHERE key = ?", (PSEUDONYM_KEY,))
    if not row:
        raise StoreError(f"the store at {store.root} has no pseudonym key yet; open it once for writing with this "
                         "release (start pcg-runtime), then export again")
    key = bytes.fromhex(row[0][0])
    span = 9 * 10 ** (PSEUDONYM_DIGITS - 1)
    taken: set[str] = set()
    pseudonyms = {}
    for (patient_id,) in store.query("SELECT id FROM patients ORDER BY seq"):
        for attempt in itertools.count():
            message = patient_id if attempt == 0 else f"{patient_id}#{attempt}"
            digest = hmac.new(key, message.encode(), hashlib.sha256).digest()
            pseudonym = str(10 ** (PSEUDONYM_DIGITS - 1) + int.from_bytes(digest[:16], "big") % span)
            if pseudonym not in taken:
                break
        taken.add(pseudonym)
        pseudonyms[patient_id] = pseudonym
    return pseudonyms
