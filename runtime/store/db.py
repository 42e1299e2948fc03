"""The field store: one SQLite database (WAL, synchronous=FULL) and one WAV file per recording.

    store = Store.open("/var/lib/pcg")               # takes the store's write lock
    for interrupted in store.resume():               # at startup: repair what a crash left
        ...
    patient = store.new_patient(Demographics(age_group="Child", sex="Female"), consent=True)
    session = store.start_session(patient)
    with store.start_recording(session, "AV", rate_hz=4000) as writer:
        writer.append(int16_chunk)                   # as chunks arrive from the stethoscope
        writer.note_gap(first_index, count)          # samples the serial link lost
    store.save_result(session, decision="NO_REFER", probability=0.12, reason="...", model=model)
    store.close_session(session)

Every write is one transaction that also takes the next number from the global sequence counter,
so sequence numbers order all records, across tables and restarts, whatever the wall clock says.
Paths in the database are relative to the store root, so a store can be copied or mounted elsewhere.

Privacy: the store is the service user's alone. Its folders are 0700 and its files (database,
-wal, -shm, lock, WAVs) 0600, set explicitly whatever the umask, and an older store opened for
writing is tightened to that. A patient whose guardian withdraws consent is erased with
`erase_patient` (audio and details gone, the record skeleton and an audit event kept). The
consent to reuse recordings for retraining is separate from the consent to screen and store
(`new_patient(..., consent_reuse=True)`), and defaults to not given.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import secrets
import shutil
import sqlite3
import stat
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from runtime.manifest import ModelManifest
from runtime.metadata import check_demographics
from runtime.records import MURMUR_CLASSES, Audio, Demographics
from runtime.sites import SITES, site_index
from runtime.store.codes import new_patient_code, normalize_patient_code
from runtime.store.errors import DiskFullError, InvalidDemographicsError, LowDiskSpaceError, StoreBusyError, StoreError
from runtime.store.schema import DECISIONS, SCHEMA_VERSION, connect, migrate
from runtime.store.wavstream import (
    PRIVATE_DIR_MODE,
    PRIVATE_FILE_MODE,
    WavStreamWriter,
    fsync_dir,
    make_dirs_durable,
    repair_wav,
)

DB_NAME = "store.sqlite"
DB_COMPANIONS = ("-wal", "-shm", "-journal")  # files SQLite keeps beside the database
LOCK_NAME = "store.lock"
AUDIO_DIR = "audio"
PSEUDONYM_KEY = "pseudonym_key"  # store_info key of the secret behind the retraining export's ids; never exported
ERASE_REASON = "consent withdrawn"
ERASED_DEMOGRAPHICS = {"age_group": None, "sex": None, "height_cm": None, "weight_kg": None, "pregnant": None}
DEFAULT_MIN_FREE_BYTES = 200_000_000  # refuse a new patient or recording below this
DEFAULT_RECORDING_RESERVE_BYTES = 16_000_000  # stop a recording below this, leaving room for the database
_EVENT_KIND = re.compile(r"[a-z][a-z0-9_]{0,39}")
_CODE_ATTEMPTS = 20
_SQLITE_FULL = 13


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso_utc(moment: datetime) -> str:
    """The one text form of wall-clock times in the store ('2026-03-01T09:30:00.000+00:00'), so
    they compare as strings. A naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class PatientRecord:
    id: str
    seq: int
    created_at: str
    code: str  # what the health worker writes on the card; the store never holds a name
    consent_at: str
    demographics: Demographics  # all unknown once the patient is erased
    consent_reuse: bool = False  # the separate consent to reuse the recordings for retraining
    erased_at: str | None = None  # when the patient was erased (consent withdrawn); None while not


@dataclass(frozen=True)
class SessionRecord:
    """One visit of one patient: its recordings and results belong to it."""

    id: str
    seq: int
    created_at: str
    patient_id: str
    status: str  # "open" | "closed"


@dataclass(frozen=True)
class RecordingRecord:
    id: str
    seq: int
    created_at: str
    session_id: str
    site: str
    repeat: int  # 0 for the first recording at a site in a session, then 1, 2, ...
    rate_hz: int
    wav_path: str  # relative to the store root
    # The link's index (the device's stream sample_index) of the recording's first sample.
    first_sample_index: int
    samples_written: int  # samples in the WAV as of the last sync
    # Samples the serial link lost, as (first missing index, count) in the link's numbering
    # (firmware_bridge.protocol.Gap); the WAV holds only the received samples, in order.
    gaps: tuple[tuple[int, int], ...]
    status: str  # "recording" | "complete" | "interrupted"
    stop_reason: str | None  # why an interrupted recording stopped: "crash", "disk_full", ...

    @property
    def duration_s(self) -> float:
        return self.samples_written / self.rate_hz


@dataclass(frozen=True)
class ModelRecord:
    id: str
    seq: int
    created_at: str
    graph_sha256: str
    model_name: str


@dataclass(frozen=True)
class ResultRecord:
    id: str
    seq: int
    created_at: str
    session_id: str
    decision: str  # "REFER" | "NO_REFER" | "RETAKE"
    probability: float | None
    operating_point: str | None
    threshold: float | None
    reason: str
    site_contributions: dict[str, float]
    model_id: str | None
    murmur: dict[str, float] | None = None  # the murmur head's class probabilities; None without one


@dataclass(frozen=True)
class EventRecord:
    id: str
    seq: int
    created_at: str
    kind: str
    detail: dict
    session_id: str | None


@dataclass(frozen=True)
class Erasure:
    """What `Store.erase_patient` did (or, for a patient erased before, what it finished)."""

    code: str
    erased_at: str  # wall-clock time of the erase, as stored in patients.erased_at, recordings.erased_at and the event
    reason: str
    sessions: int  # the patient's visits: kept, closed, without personal data
    sessions_closed: int  # visits that were still open and were closed by the erase
    recordings: int  # recording rows kept (marked erased_at) whose audio is gone
    files_removed: int  # audio files this call removed (a re-run removes what an interrupted erase left)
    already_erased: bool


@dataclass(frozen=True)
class InterruptedSession:
    """A session still open when the store was reopened: what `resume` lists for the operator."""

    session: SessionRecord
    patient: PatientRecord
    recordings: tuple[RecordingRecord, ...]  # all of the session's recordings, in sequence order

    @property
    def interrupted(self) -> tuple[RecordingRecord, ...]:
        return tuple(r for r in self.recordings if r.status == "interrupted")


class Store:
    """A field store rooted at a directory. Open with `Store.open`; one writing process at a time."""

    def __init__(
        self,
        root: Path,
        conn: sqlite3.Connection,
        lock_fd: int | None,
        *,
        min_free_bytes: int,
        recording_reserve_bytes: int,
        sync_every_s: float,
        free_bytes: Callable[[], int] | None,
        wall_clock: Callable[[], datetime],
    ):
        self.root = root
        self._conn = conn
        self._lock = threading.RLock()  # one connection, shared by the threads of the field program
        self._lock_fd = lock_fd
        self.min_free_bytes = min_free_bytes
        self.recording_reserve_bytes = recording_reserve_bytes
        self.sync_every_s = sync_every_s
        self._free_bytes_hook = free_bytes
        self._wall_clock = wall_clock
        self._writers: dict[str, RecordingWriter] = {}
        info = dict(conn.execute("SELECT key, value FROM store_info").fetchall())
        self.store_id: str = info["store_id"]

    @classmethod
    def open(
        cls,
        root: str | Path,
        *,
        min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
        recording_reserve_bytes: int = DEFAULT_RECORDING_RESERVE_BYTES,
        sync_every_s: float = 1.0,
        free_bytes: Callable[[], int] | None = None,
        wall_clock: Callable[[], datetime] = _utc_now,
        read_only: bool = False,
    ) -> Store:
        """Open (creating if needed) the store at `root`.

        min_free_bytes: a new patient or recording is refused below this much free space.
        recording_reserve_bytes: a running recording stops cleanly below this much free space.
        sync_every_s: audio is made durable at least this often (seconds of audio or wall time).
        free_bytes: returns the free bytes of the store's disk (default: os.statvfs of `root`).
        wall_clock: returns the current time; stored with every record, never used for ordering.
        read_only: for exports beside a running recorder: no lock, no writes, no migration.
        """
        root = Path(root)
        if sync_every_s <= 0:
            raise ValueError(f"sync_every_s must be positive, got {sync_every_s}")
        options = dict(
            min_free_bytes=min_free_bytes,
            recording_reserve_bytes=recording_reserve_bytes,
            sync_every_s=sync_every_s,
            free_bytes=free_bytes,
            wall_clock=wall_clock,
        )
        db_path = root / DB_NAME
        if read_only:
            if not db_path.is_file():
                raise StoreError(f"no store at {root} (no {DB_NAME}); check the path")
            conn = connect(db_path, read_only=True)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                conn.close()
                raise StoreError(f"{db_path} has schema version {version}, this program reads {SCHEMA_VERSION}; "
                                 "open it once for writing with this release to migrate it")
            return cls(root, conn, None, **options)
        try:
            make_dirs_durable(root)
            os.chmod(root, PRIVATE_DIR_MODE)  # an existing folder too: the store is the service user's alone
            lock_fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
            os.fchmod(lock_fd, PRIVATE_FILE_MODE)
        except OSError as exc:
            raise StoreError(f"cannot create or open the store at {root}: {exc.strerror or exc}; check the path and "
                             "its permissions") from exc
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise StoreBusyError(f"another process is writing to the store at {root}; close it first") from None
        conn = None
        try:
            _make_private(root)
            created = not db_path.exists()
            if created:  # made here, 0600, so SQLite gives its -wal and -shm the same mode
                os.close(_create_private(db_path))
            conn = connect(db_path)
            _make_private(root, audio=False)  # the -wal and -shm SQLite has just opened
            migrate(conn, db_path)
            conn.execute("INSERT OR IGNORE INTO store_info VALUES ('store_id', ?)", (str(uuid.uuid4()),))
            conn.execute("INSERT OR IGNORE INTO store_info VALUES (?, ?)", (PSEUDONYM_KEY, secrets.token_hex(32)))
            if created:
                fsync_dir(root)
        except BaseException as exc:
            if conn is not None:
                conn.close()
            os.close(lock_fd)
            if isinstance(exc, (sqlite3.OperationalError, sqlite3.DatabaseError, OSError)):
                raise StoreError(_open_failure(root, exc)) from exc
            raise
        return cls(root, conn, lock_fd, **options)

    def close(self) -> None:
        """Stop any recording still open (marked interrupted, reason 'store_closed') and release the store."""
        for writer in list(self._writers.values()):
            try:
                writer.abort("store_closed")
            except DiskFullError:
                pass  # the WAV is valid; `resume` records its final state once there is space
        with self._lock:
            self._conn.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def read_only(self) -> bool:
        return self._lock_fd is None

    # --- disk space --------------------------------------------------------------------------

    def free_bytes(self) -> int:
        """Free bytes on the store's disk available to this process."""
        if self._free_bytes_hook is not None:
            return self._free_bytes_hook()
        stats = os.statvfs(self.root)
        return stats.f_bavail * stats.f_frsize

    def _require_free_space(self, action: str) -> None:
        free = self.free_bytes()
        if free < self.min_free_bytes:
            raise LowDiskSpaceError(
                f"cannot {action}: only {free / 1e6:.0f} MB free on the store's disk ({self.root}), "
                f"{self.min_free_bytes / 1e6:.0f} MB needed. Export the records (pcg-runtime export), copy "
                "them off the box, then remove old recordings."
            )

    # --- transactions and the sequence counter -----------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        if self.read_only:
            raise StoreError(f"the store at {self.root} was opened read-only")
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:  # SQLite has already rolled back after some errors (disk full)
                    self._conn.execute("ROLLBACK")
                raise

    def _stamp(self, conn: sqlite3.Connection) -> tuple[int, str]:
        """Next sequence number (inside the caller's transaction) and the wall-clock time."""
        seq = conn.execute("UPDATE sequence_counter SET last_seq = last_seq + 1 RETURNING last_seq").fetchone()[0]
        return seq, iso_utc(self._wall_clock())

    def _insert(self, conn: sqlite3.Connection, table: str, values: dict) -> dict:
        seq, now = self._stamp(conn)
        row = {"id": str(uuid.uuid4()), "seq": seq, "created_at": now, "changed_seq": seq, "changed_at": now, **values}
        columns = ", ".join(row)
        conn.execute(f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
        return row

    def _update(self, conn: sqlite3.Connection, table: str, record_id: str, values: dict) -> None:
        seq, now = self._stamp(conn)
        assignments = ", ".join(f"{k} = ?" for k in values)
        conn.execute(
            f"UPDATE {table} SET {assignments}, changed_seq = ?, changed_at = ? WHERE id = ?",
            (*values.values(), seq, now, record_id),
        )

    def last_seq(self) -> int:
        """The highest sequence number given out so far."""
        return self._one("SELECT last_seq FROM sequence_counter")[0]

    # --- patients and sessions ---------------------------------------------------------------

    def new_patient(self, demographics: Demographics, *, consent: bool, consent_reuse: bool = False) -> PatientRecord:
        """Store a new patient under a fresh code, with consent time and demographics, in one transaction.

        `consent` (to screen and store) is required; `consent_reuse`, the separate consent to reuse
        the recordings for retraining (the CirCor export), is optional and not given by default.
        Raises InvalidDemographicsError (listing every problem) or StoreError without consent;
        nothing is stored then.
        """
        if consent is not True:
            raise StoreError("the patient's (or guardian's) consent is required before anything is stored; "
                             "nothing was stored")
        if not isinstance(consent_reuse, bool):
            raise TypeError(f"consent_reuse must be True or False, got {consent_reuse!r}")
        if not isinstance(demographics, Demographics):
            raise TypeError(f"demographics must be a runtime.records.Demographics, got {type(demographics).__name__}")
        problems = check_demographics(demographics)
        if problems:
            raise InvalidDemographicsError(problems)
        self._require_free_space("register a new patient")
        for _ in range(_CODE_ATTEMPTS):
            code = new_patient_code()
            try:
                with self._transaction() as conn:
                    row = self._insert(conn, "patients", {"code": code, "consent_at": iso_utc(self._wall_clock()),
                                                          "consent_reuse": int(consent_reuse)})
                    self._insert(conn, "demographics", {"patient_id": row["id"], **_demographics_row(demographics)})
            except sqlite3.IntegrityError:
                if self._one("SELECT 1 FROM patients WHERE code = ?", (code,)):
                    continue  # the random code is taken; draw another
                raise
            return self.patient(row["id"])
        raise StoreError(f"could not draw an unused patient code in {_CODE_ATTEMPTS} attempts")

    def patient(self, patient_id: str) -> PatientRecord:
        row = self._one("SELECT * FROM patients WHERE id = ?", (patient_id,))
        if row is None:
            raise LookupError(f"no patient with id {patient_id} in the store at {self.root}")
        demo = self._one(
            "SELECT * FROM demographics WHERE patient_id = ? ORDER BY seq DESC LIMIT 1", (patient_id,)
        )
        return PatientRecord(
            id=row["id"], seq=row["seq"], created_at=row["created_at"], code=row["code"],
            consent_at=row["consent_at"], demographics=_demographics_from_row(demo),
            consent_reuse=bool(row["consent_reuse"]), erased_at=row["erased_at"],
        )

    def find_patient(self, code: str) -> PatientRecord:
        """The patient with this card code (typing slips in case, spaces and dashes forgiven)."""
        code = normalize_patient_code(code)
        row = self._one("SELECT id FROM patients WHERE code = ?", (code,))
        if row is None:
            raise LookupError(f"no patient with code {code} in this store")
        return self.patient(row["id"])

    def start_session(self, patient: PatientRecord) -> SessionRecord:
        """Open a new visit for `patient`; refused for an erased patient."""
        erased = self._one("SELECT erased_at FROM patients WHERE id = ?", (patient.id,))
        if erased is not None and erased[0] is not None:
            raise StoreError(f"patient {patient.code} was erased (consent withdrawn); register the child as a new "
                             "patient to screen again")
        with self._transaction() as conn:
            row = self._insert(conn, "sessions", {"patient_id": patient.id, "status": "open"})
        return self.session(row["id"])

    def session(self, session_id: str) -> SessionRecord:
        row = self._one("SELECT * FROM sessions WHERE id = ?", (session_id,))
        if row is None:
            raise LookupError(f"no session with id {session_id} in the store at {self.root}")
        return SessionRecord(row["id"], row["seq"], row["created_at"], row["patient_id"], row["status"])

    def close_session(self, session: SessionRecord) -> SessionRecord:
        """Mark the visit finished. Refused while one of its recordings is still being written."""
        busy = [w.record.site for w in self._writers.values() if w.record.session_id == session.id]
        if busy:
            raise StoreError(f"session {session.seq} still has recordings open at {', '.join(busy)}; close them first")
        with self._transaction() as conn:
            self._update(conn, "sessions", session.id, {"status": "closed"})
        return self.session(session.id)

    # --- erasure (consent withdrawn) ---------------------------------------------------------

    def erase_patient(self, code: str, reason: str = ERASE_REASON) -> Erasure:
        """Erase the patient with this card code: the audio of all their recordings and their
        demographics go; the non-personal skeleton stays, so sequence numbers and exports stay
        consistent; an audit event records the erase.

        In one transaction: every demographics row of the patient gets all five fields NULL; the
        patient row gets erased_at and consent_reuse = 0 (the code and consent time stay: the
        code is what a central copy erases by); each recording row gets erased_at (the row and
        its path stay, the file goes); visits still open are closed, so nothing offers to
        continue them; results stay (the screening decision, which holds no personal detail
        beyond the code); a device event 'patient_erased' is logged with the code, the time, the
        reason and the counts (visits, visits closed, recordings, audio files found). Every changed row takes a new sequence number, so the next incremental
        export carries the erase (runtime.store.export). Then the write-ahead log is checkpointed
        and truncated, so with secure_delete the old values are gone from the database files too
        (unless a reader holds an older snapshot: then at the next checkpoint).

        Crash safety: the database change is committed before any file is removed. A process
        killed in between leaves the patient erased in the database (and in any export) with
        their audio still on disk; calling `erase_patient` again, or `resume` at the next
        start, removes it. Erasing an erased patient only finishes that (already_erased).

        Refused (StoreError, nothing changed) for an unknown code and while one of the patient's
        recordings is being written by this store; another process recording holds the
        store's lock, so it cannot be open for writing here at the same time. ValueError for a
        mistyped code or an empty reason.
        """
        if self.read_only:
            raise StoreError(f"the store at {self.root} was opened read-only; open it for writing to erase a patient "
                             "(nothing was erased)")
        code = normalize_patient_code(code)
        if not isinstance(reason, str) or not 0 < len(reason.strip()) <= 200:
            raise ValueError(f"the erase reason must be a short text (1 to 200 characters), e.g. {ERASE_REASON!r}; "
                             f"got {reason!r} (nothing was erased)")
        reason = reason.strip()
        with self._lock:
            row = self._one("SELECT id, erased_at FROM patients WHERE code = ?", (code,))
            if row is None:
                raise StoreError(f"no patient with code {code} in the store at {self.root}; check the card and type "
                                 "it again (nothing was erased)")
            sessions = self.query("SELECT id, status FROM sessions WHERE patient_id = ? ORDER BY seq", (row["id"],))
            recordings = self.query("SELECT r.id, r.status FROM recordings r JOIN sessions s ON s.id = r.session_id "
                                    "WHERE s.patient_id = ? ORDER BY r.seq", (row["id"],))
            if row["erased_at"] is not None:
                return Erasure(code, row["erased_at"], self._erase_reason(code), len(sessions), 0, len(recordings),
                               self._remove_patient_audio(code), already_erased=True)
            session_ids = {s["id"] for s in sessions}
            busy = sorted(w.record.site for w in self._writers.values() if w.record.session_id in session_ids)
            if busy:
                raise StoreError(f"patient {code}'s recording at {', '.join(busy)} is being written right now; stop it "
                                 "or let it finish, then erase again (nothing was erased)")
            open_sessions = [s["id"] for s in sessions if s["status"] == "open"]
            erased_at = iso_utc(self._wall_clock())
            detail = {"patient": code, "erased_at": erased_at, "reason": reason, "sessions": len(sessions),
                      "sessions_closed": len(open_sessions), "recordings": len(recordings),
                      "audio_files": _count_files(self._patient_audio_dir(code))}
            with self._transaction() as conn:
                for demographics_id in [d for (d,) in conn.execute("SELECT id FROM demographics WHERE patient_id = ?",
                                                                   (row["id"],)).fetchall()]:
                    self._update(conn, "demographics", demographics_id, ERASED_DEMOGRAPHICS)
                for session_id in open_sessions:
                    self._update(conn, "sessions", session_id, {"status": "closed"})
                for recording in recordings:
                    # a 'recording' row no writer here holds was left by a crash: it stops here
                    stopped = {"status": "interrupted", "stop_reason": "erased"} if recording["status"] == "recording" else {}
                    self._update(conn, "recordings", recording["id"], {"erased_at": erased_at, **stopped})
                self._update(conn, "patients", row["id"], {"erased_at": erased_at, "consent_reuse": 0})
                self._insert(conn, "device_events", {"session_id": None, "kind": "patient_erased",
                                                     "detail": json.dumps(detail, sort_keys=True)})
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return Erasure(code, erased_at, reason, len(sessions), len(open_sessions), len(recordings),
                       self._remove_patient_audio(code), already_erased=False)

    def _erase_reason(self, code: str) -> str:
        row = self._one("SELECT detail FROM device_events WHERE kind = 'patient_erased' "
                        "AND json_extract(detail, '$.patient') = ? ORDER BY seq DESC LIMIT 1", (code,))
        return json.loads(row[0])["reason"] if row is not None else ERASE_REASON

    def _patient_audio_dir(self, code: str) -> Path:
        """Where every WAV of the patient lives (start_recording's paths), crash leftovers included."""
        return self.root / AUDIO_DIR / code

    def _remove_patient_audio(self, code: str) -> int:
        """Remove an erased patient's audio folder (durably); returns the number of files removed."""
        folder = self._patient_audio_dir(code)
        if not os.path.lexists(folder):
            return 0
        count = _count_files(folder)
        try:
            shutil.rmtree(folder)
            fsync_dir(folder.parent)
        except OSError as exc:
            raise StoreError(f"patient {code} is erased in the database, but removing their audio in {folder} failed "
                             f"({exc.strerror or exc}); fix the disk and run the erase again to finish it") from exc
        return count

    # --- recordings --------------------------------------------------------------------------

    def start_recording(
        self, session: SessionRecord, site: str, rate_hz: int, *, first_sample_index: int = 0
    ) -> RecordingWriter:
        """A writer for a new recording at `site`; a site already recorded in this session gets the
        next repeat number. `first_sample_index` is the link's index of the first sample to come,
        so that gaps noted in the link's numbering can be placed. Refused when free space is under
        `min_free_bytes`."""
        site_index(site)
        if isinstance(rate_hz, bool) or not isinstance(rate_hz, (int, np.integer)) or not 0 < rate_hz < 2**31:
            raise ValueError(f"rate_hz must be a positive integer (samples per second), got {rate_hz!r}")
        if first_sample_index < 0:
            raise ValueError(f"first_sample_index must be >= 0, got {first_sample_index}")
        current = self.session(session.id)
        if current.status != "open":
            raise StoreError(f"session {current.seq} is closed; start a new session to record again")
        self._require_free_space(f"start a recording at {site}")
        code = self.patient(current.patient_id).code
        wav = None
        try:
            with self._transaction() as conn:
                repeat = conn.execute(
                    "SELECT COALESCE(MAX(repeat) + 1, 0) FROM recordings WHERE session_id = ? AND site = ?",
                    (session.id, site),
                ).fetchone()[0]
                relative = f"{AUDIO_DIR}/{code}/s{current.seq:06d}/{site}_{repeat}.wav"
                row = self._insert(conn, "recordings", {
                    "session_id": session.id, "site": site, "repeat": repeat, "rate_hz": int(rate_hz),
                    "wav_path": relative, "first_sample_index": int(first_sample_index), "samples_written": 0,
                    "gaps": "[]", "status": "recording",
                    "stop_reason": None,
                })
                path = self.root / relative
                # A file without a committed row is left by a crash between creating it and committing.
                path.unlink(missing_ok=True)
                wav = WavStreamWriter.create(path, int(rate_hz), **self._wav_options())
        except BaseException:
            if wav is not None:
                wav.close()
                path.unlink(missing_ok=True)
            raise
        return self._register_writer(self.recording(row["id"]), wav)

    def continue_recording(self, recording: RecordingRecord) -> RecordingWriter:
        """Append to an interrupted recording (after `resume`), e.g. when the crash cut it short.

        The samples lost in the crash are not known here; note them with `note_gap` if the link says.
        """
        current = self.recording(recording.id)
        if current.status != "interrupted":
            raise StoreError(f"recording {current.site} repeat {current.repeat} is {current.status}; "
                             "only an interrupted recording can be continued")
        if self.session(current.session_id).status != "open":
            raise StoreError("the recording's session is closed; start a new session to record again")
        self._require_free_space(f"continue the recording at {current.site}")
        path = self.root / current.wav_path
        if not path.is_file():
            raise StoreError(f"{path} is missing; start a new recording at {current.site} instead")
        wav = WavStreamWriter.append_to(path, current.rate_hz, **self._wav_options())
        with self._transaction() as conn:
            self._update(conn, "recordings", current.id,
                         {"status": "recording", "stop_reason": None, "samples_written": wav.samples_written})
        return self._register_writer(self.recording(current.id), wav)

    def _wav_options(self) -> dict:
        return dict(sync_every_s=self.sync_every_s, free_bytes=self.free_bytes,
                    reserve_bytes=self.recording_reserve_bytes)

    def _register_writer(self, record: RecordingRecord, wav: WavStreamWriter) -> RecordingWriter:
        writer = RecordingWriter(self, record, wav)
        self._writers[record.id] = writer
        return writer

    def recording(self, recording_id: str) -> RecordingRecord:
        row = self._one("SELECT * FROM recordings WHERE id = ?", (recording_id,))
        if row is None:
            raise LookupError(f"no recording with id {recording_id} in the store at {self.root}")
        return _recording_from_row(row)

    def recordings(self, session: SessionRecord) -> list[RecordingRecord]:
        rows = self.query("SELECT * FROM recordings WHERE session_id = ? ORDER BY seq", (session.id,))
        return [_recording_from_row(r) for r in rows]

    def wav_path(self, recording: RecordingRecord) -> Path:
        return self.root / recording.wav_path

    def read_audio(self, recording: RecordingRecord) -> Audio:
        """The samples of a recording as stored (up to its last sync while it is being written)."""
        from runtime.formats.wav import read_wav

        return read_wav(self.wav_path(recording))

    def resume(self) -> list[InterruptedSession]:
        """Repair what a crash left and list the sessions still open, for the operator to continue.

        Each recording left in status 'recording' by a process that died gets its WAV repaired
        (header sized to the whole samples on disk) and is marked interrupted (reason 'crash') with
        its true sample count. The audio of a patient whose erase was cut short (after its commit,
        before its files went) is removed. Call at startup, before recording.
        """
        if not self.read_only:
            for (code,) in self.query("SELECT code FROM patients WHERE erased_at IS NOT NULL"):
                self._remove_patient_audio(code)
        rows = self.query("SELECT * FROM recordings WHERE status = 'recording' ORDER BY seq")
        for row in rows:
            if row["id"] in self._writers:
                continue
            try:
                n_samples, reason = repair_wav(self.root / row["wav_path"], row["rate_hz"]), "crash"
            except FileNotFoundError:
                n_samples, reason = 0, "wav_missing"
            with self._transaction() as conn:
                self._update(conn, "recordings", row["id"],
                             {"status": "interrupted", "stop_reason": reason, "samples_written": n_samples})
        sessions = self.query("SELECT id FROM sessions WHERE status = 'open' ORDER BY seq")
        out = []
        for (session_id,) in sessions:
            session = self.session(session_id)
            out.append(InterruptedSession(session, self.patient(session.patient_id), tuple(self.recordings(session))))
        return out

    # --- models, results, device events ------------------------------------------------------

    def register_model(self, manifest: ModelManifest) -> ModelRecord:
        """Record a model's provenance (graph hash and full manifest); the same manifest twice is one record."""
        manifest_json = manifest.to_json()
        with self._transaction() as conn:
            row = conn.execute("SELECT id FROM models WHERE graph_sha256 = ? AND manifest = ?",
                               (manifest.graph_sha256, manifest_json)).fetchone()
            model_id = row["id"] if row else self._insert(conn, "models", {
                "graph_sha256": manifest.graph_sha256, "model_name": manifest.model_name, "manifest": manifest_json,
            })["id"]
        row = self._one("SELECT * FROM models WHERE id = ?", (model_id,))
        return ModelRecord(row["id"], row["seq"], row["created_at"], row["graph_sha256"], row["model_name"])

    def save_result(
        self,
        session: SessionRecord,
        *,
        decision: str,
        probability: float | None,
        reason: str,
        site_contributions: Mapping[str, float] | None = None,
        model: ModelRecord | None = None,
        operating_point: str | None = None,
        threshold: float | None = None,
        murmur: Mapping[str, float] | None = None,
    ) -> ResultRecord:
        """Store a triage result for a session. `probability` may be None only for RETAKE; `murmur`
        maps each of Present, Unknown, Absent to its probability (a model with a murmur head)."""
        if decision not in DECISIONS:
            raise ValueError(f"decision {decision!r} is not one of {', '.join(DECISIONS)}")
        if probability is None:
            if decision != "RETAKE":
                raise ValueError(f"a {decision} result needs the outcome probability")
        elif not (math.isfinite(probability) and 0.0 <= probability <= 1.0):
            raise ValueError(f"probability {probability} is outside [0, 1]")
        contributions = {str(k): float(v) for k, v in (site_contributions or {}).items()}
        unknown = sorted(set(contributions) - set(SITES))
        if unknown:
            raise ValueError(f"site contributions for unknown sites {unknown}; expected sites among {', '.join(SITES)}")
        murmur_probabilities = None
        if murmur is not None:
            murmur_probabilities = {str(k): float(v) for k, v in murmur.items()}
            if set(murmur_probabilities) != set(MURMUR_CLASSES) or not all(
                    math.isfinite(v) and 0.0 <= v <= 1.0 for v in murmur_probabilities.values()):
                raise ValueError(f"murmur probabilities must give each of {', '.join(MURMUR_CLASSES)} a value in [0, 1]; "
                                 f"got {murmur_probabilities}")
        with self._transaction() as conn:
            row = self._insert(conn, "results", {
                "session_id": session.id, "model_id": model.id if model else None, "decision": decision,
                "probability": probability, "operating_point": operating_point, "threshold": threshold,
                "reason": reason, "site_contributions": json.dumps(contributions, sort_keys=True),
                "murmur": json.dumps(murmur_probabilities, sort_keys=True) if murmur_probabilities else None,
            })
        return ResultRecord(
            id=row["id"], seq=row["seq"], created_at=row["created_at"], session_id=session.id, decision=decision,
            probability=probability, operating_point=operating_point, threshold=threshold, reason=reason,
            site_contributions=contributions, model_id=row["model_id"], murmur=murmur_probabilities,
        )

    def log_event(self, kind: str, detail: Mapping | None = None, *, session: SessionRecord | None = None) -> EventRecord:
        """Record a device event: kind like 'connect', 'disconnect', 'battery', 'crc_errors'; detail a JSON object."""
        if not isinstance(kind, str) or not _EVENT_KIND.fullmatch(kind):
            raise ValueError(f"event kind {kind!r} must be a short lower-case word (letters, digits, underscores)")
        detail = dict(detail or {})
        try:
            detail_json = json.dumps(detail, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"event detail must be JSON-serializable: {exc}") from None
        try:
            with self._transaction() as conn:
                row = self._insert(conn, "device_events",
                                   {"session_id": session.id if session else None, "kind": kind, "detail": detail_json})
        except sqlite3.OperationalError as exc:
            if not _is_disk_full(exc):
                raise
            raise DiskFullError(f"the disk is full: the {kind} event could not be logged", samples_kept=0) from None
        return EventRecord(row["id"], row["seq"], row["created_at"], kind, detail, row["session_id"])

    # --- used by RecordingWriter and the exporters -------------------------------------------

    def _write_recording(self, recording_id: str, values: dict) -> RecordingRecord:
        with self._transaction() as conn:
            self._update(conn, "recordings", recording_id, values)
        return self.recording(recording_id)

    def _writer_closed(self, recording_id: str) -> None:
        self._writers.pop(recording_id, None)

    def query(self, sql: str, parameters: tuple = ()) -> list[sqlite3.Row]:
        """Rows of a read-only query (for the exporters)."""
        with self._lock:
            return self._conn.execute(sql, parameters).fetchall()

    def _one(self, sql: str, parameters: tuple = ()) -> sqlite3.Row | None:
        with self._lock:
            return self._conn.execute(sql, parameters).fetchone()

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A read transaction: queries inside see one consistent state of the database."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield
            finally:
                self._conn.execute("COMMIT")


class RecordingWriter:
    """Writes one recording: samples to its WAV as they arrive, progress and gaps to the database.

    Use as a context manager: a normal exit completes the recording, an exception marks it
    interrupted. DiskFullError from `append` means it already stopped cleanly (status interrupted,
    reason 'disk_full', WAV valid).
    """

    def __init__(self, store: Store, record: RecordingRecord, wav: WavStreamWriter):
        self._store = store
        self.record = record  # as of the last database write
        self._wav = wav
        self._gaps = list(record.gaps)

    @property
    def samples_written(self) -> int:
        """Samples handed to the file so far (the database holds the count as of the last sync)."""
        return self._wav.samples_written

    @property
    def closed(self) -> bool:
        return self._wav.closed

    def append(self, samples: np.ndarray) -> None:
        """Append a chunk of int16 samples (1-D numpy array)."""
        if self._wav.closed:
            raise StoreError(f"recording {self.record.site} repeat {self.record.repeat} is {self.record.status}; "
                             "start or continue a recording to write more")
        if not isinstance(samples, np.ndarray) or samples.dtype != np.int16 or samples.ndim != 1:
            found = f"{samples.dtype} array of shape {samples.shape}" if isinstance(samples, np.ndarray) else type(samples).__name__
            raise TypeError(f"append expects a 1-D int16 numpy array of samples, got {found}")
        try:
            if self._wav.write(samples):
                self._save({"samples_written": self._wav.samples_synced})
        except DiskFullError as exc:
            self._finish("interrupted", "disk_full", exc.samples_kept)
            raise

    def note_gap(self, first_index: int, count: int) -> None:
        """Record that the link lost `count` samples from its sample index `first_index` on
        (firmware_bridge.protocol.Gap's first_missing and count).

        Gaps must come in order, not overlap, and not start before the recording's first sample.
        Stored at once (a gap is rare and worth keeping).
        """
        if self._wav.closed:
            raise StoreError("the recording is closed; gaps are noted while it is being written")
        first_index, count = int(first_index), int(count)
        earliest = self._gaps[-1][0] + self._gaps[-1][1] if self._gaps else self.record.first_sample_index
        if count <= 0 or first_index < earliest:
            raise ValueError(f"gap ({first_index}, {count}) must have a positive count and start at or after "
                             f"sample {earliest} (the end of the previous gap, or the recording's first sample)")
        self._gaps.append((first_index, count))
        try:
            self._save({"gaps": json.dumps(self._gaps)})
        except DiskFullError as exc:
            self._finish("interrupted", "disk_full", exc.samples_kept)
            raise

    def close(self) -> RecordingRecord:
        """Finish the recording (status complete); returns its final record. No-op if already stopped."""
        if not self._wav.closed:
            self._finish("complete", None, self._wav.close())
        return self.record

    def abort(self, reason: str) -> RecordingRecord:
        """Stop the recording, keeping what was written, as interrupted with `reason` (e.g. 'operator_cancel')."""
        if not self._wav.closed:
            self._finish("interrupted", reason, self._wav.close())
        return self.record

    def _save(self, values: dict) -> None:
        """Write progress to the database; a full disk there stops the WAV cleanly too (DiskFullError)."""
        try:
            self.record = self._store._write_recording(self.record.id, values)
        except sqlite3.OperationalError as exc:
            if not _is_disk_full(exc):
                raise
            self._wav.stop_for_disk("the database could not grow")

    def _finish(self, status: str, reason: str | None, n_samples: int) -> None:
        self._store._writer_closed(self.record.id)
        try:
            self.record = self._store._write_recording(
                self.record.id, {"status": status, "stop_reason": reason, "samples_written": n_samples}
            )
        except sqlite3.OperationalError as exc:
            if not _is_disk_full(exc):
                raise
            # The database cannot grow; the WAV is valid and `resume` records it once there is space.

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif not self._wav.closed:
            self.abort(f"error: {exc_type.__name__}")


def _create_private(path: Path) -> int:
    """Create a new file 0600 (exactly, whatever the umask) and return its descriptor."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    os.fchmod(fd, PRIVATE_FILE_MODE)
    return fd


def _make_private(root: Path, *, audio: bool = True) -> None:
    """Tighten the store's own files to 0600 and folders to 0700 (an older release left 0644 and
    0755): the database and its companions, the lock and (with `audio`) the whole audio tree.
    Only what the store owns is touched, whatever else the folder holds; symbolic links are left
    alone. A walk of the audio tree costs one lstat per file, once per open for writing."""
    paths = [root / LOCK_NAME, root / DB_NAME, *(root / f"{DB_NAME}{suffix}" for suffix in DB_COMPANIONS)]
    audio_root = root / AUDIO_DIR
    if audio and audio_root.is_dir() and not audio_root.is_symlink():
        paths.append(audio_root)
        for folder, dirs, files in os.walk(audio_root):
            paths += [Path(folder) / name for name in dirs + files]
    for path in paths:
        try:
            status = os.lstat(path)
            if stat.S_ISLNK(status.st_mode):
                continue
            wanted = PRIVATE_DIR_MODE if stat.S_ISDIR(status.st_mode) else PRIVATE_FILE_MODE
            if stat.S_IMODE(status.st_mode) != wanted:
                os.chmod(path, wanted)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StoreError(f"cannot make {path} private to this user ({exc.strerror or exc}); give the store folder "
                             f"{root} to the user that runs pcg-runtime (chown -R) and start again") from exc


def _count_files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def _open_failure(root: Path, exc: BaseException) -> str:
    """What to tell the operator when the store cannot be opened for writing."""
    try:
        free = shutil.disk_usage(root).free
    except OSError:
        free = None
    if free is not None and free < 1_000_000:
        return (f"cannot open the store at {root}: its disk is full ({free // 1024} KiB free); free some space "
                "(export and move old recordings) and start again; nothing was lost")
    return f"cannot open the store at {root}: {exc}; check the disk and its permissions"


def _is_disk_full(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == _SQLITE_FULL or "disk is full" in str(exc)


def _demographics_row(demo: Demographics) -> dict:
    return {
        "age_group": demo.age_group, "sex": demo.sex, "height_cm": demo.height_cm, "weight_kg": demo.weight_kg,
        "pregnant": None if demo.pregnant is None else int(bool(demo.pregnant)),
    }


def _demographics_from_row(row: sqlite3.Row) -> Demographics:
    return Demographics(
        age_group=row["age_group"], sex=row["sex"], height_cm=row["height_cm"], weight_kg=row["weight_kg"],
        pregnant=None if row["pregnant"] is None else bool(row["pregnant"]),
    )


def _recording_from_row(row: sqlite3.Row) -> RecordingRecord:
    return RecordingRecord(
        id=row["id"], seq=row["seq"], created_at=row["created_at"], session_id=row["session_id"], site=row["site"],
        repeat=row["repeat"], rate_hz=row["rate_hz"], wav_path=row["wav_path"],
        first_sample_index=row["first_sample_index"],
        samples_written=row["samples_written"], gaps=tuple(tuple(g) for g in json.loads(row["gaps"])),
        status=row["status"], stop_reason=row["stop_reason"],
    )
