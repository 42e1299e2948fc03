"""The store's SQLite schema, its version, the migrations, and how every connection is configured.

Every record table starts with the same five columns:
    id           UUID (text), the record's identity across boxes and exports
    seq          global sequence number when the record was created (one counter for all tables,
                 incremented in the record's own transaction, so it orders records even on a box
                 whose clock is wrong: field boxes often have no real-time clock)
    created_at   wall-clock time (UTC ISO 8601) when created; stored, never trusted for ordering
    changed_seq  sequence number of the last write to the record (= seq for records never changed)
    changed_at   wall-clock time of that write
Exports select on changed_seq, so a record that changes after an export is exported again.

Migrations: MIGRATIONS[i] takes a database from version i to i + 1 (PRAGMA user_version). A new
schema version appends one SQL script; `migrate` applies the missing ones in one transaction.
    v1  the first release
    v3  results.murmur: the murmur head's probabilities (JSON {"Present", "Unknown", "Absent"}),
        NULL for a model without one
    v2  patients.consent_reuse (the separate consent to reuse the recordings for retraining; an
        older store's patients get 0, not given), patients.erased_at and recordings.erased_at (when
        the patient was erased after consent was withdrawn: Store.erase_patient)

Write connections run with secure_delete on, so the values an update or delete removes (an erased
patient's demographics) are overwritten with zeros in the database file instead of lingering in
free space.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from runtime.sites import SITES
from runtime.store.errors import StoreError

COMMON_COLUMNS = ("id", "seq", "created_at", "changed_seq", "changed_at")

#: Export order (parents before children) and the stable column order of each table.
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "patients": (*COMMON_COLUMNS, "code", "consent_at", "consent_reuse", "erased_at"),
    "demographics": (*COMMON_COLUMNS, "patient_id", "age_group", "sex", "height_cm", "weight_kg", "pregnant"),
    "sessions": (*COMMON_COLUMNS, "patient_id", "status"),
    "models": (*COMMON_COLUMNS, "graph_sha256", "model_name", "manifest"),
    "recordings": (
        *COMMON_COLUMNS, "session_id", "site", "repeat", "rate_hz", "wav_path", "first_sample_index",
        "samples_written", "gaps", "status", "stop_reason", "erased_at",
    ),
    "results": (
        *COMMON_COLUMNS, "session_id", "model_id", "decision", "probability", "operating_point", "threshold",
        "reason", "site_contributions", "murmur",
    ),
    "device_events": (*COMMON_COLUMNS, "session_id", "kind", "detail"),
}
#: Columns holding JSON text.
JSON_COLUMNS = {"gaps", "manifest", "site_contributions", "detail"}

DECISIONS = ("REFER", "NO_REFER", "RETAKE")
RECORDING_STATUSES = ("recording", "complete", "interrupted")
SESSION_STATUSES = ("open", "closed")

_COMMON_SQL = """
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    changed_seq INTEGER NOT NULL UNIQUE,
    changed_at TEXT NOT NULL"""


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


_V1 = f"""
CREATE TABLE store_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE sequence_counter (only_row INTEGER PRIMARY KEY CHECK (only_row = 1), last_seq INTEGER NOT NULL);
INSERT INTO sequence_counter VALUES (1, 0);
CREATE TABLE patients ({_COMMON_SQL},
    code TEXT NOT NULL UNIQUE,
    consent_at TEXT NOT NULL
);
CREATE TABLE demographics ({_COMMON_SQL},
    patient_id TEXT NOT NULL REFERENCES patients(id),
    age_group TEXT, sex TEXT, height_cm REAL, weight_kg REAL,
    pregnant INTEGER CHECK (pregnant IN (0, 1))
);
CREATE TABLE sessions ({_COMMON_SQL},
    patient_id TEXT NOT NULL REFERENCES patients(id),
    status TEXT NOT NULL CHECK (status IN {_in(SESSION_STATUSES)})
);
CREATE TABLE models ({_COMMON_SQL},
    graph_sha256 TEXT NOT NULL,
    model_name TEXT NOT NULL,
    manifest TEXT NOT NULL,
    UNIQUE (graph_sha256, manifest)
);
CREATE TABLE recordings ({_COMMON_SQL},
    session_id TEXT NOT NULL REFERENCES sessions(id),
    site TEXT NOT NULL CHECK (site IN {_in(SITES)}),
    repeat INTEGER NOT NULL CHECK (repeat >= 0),
    rate_hz INTEGER NOT NULL CHECK (rate_hz > 0),
    wav_path TEXT NOT NULL UNIQUE,
    first_sample_index INTEGER NOT NULL CHECK (first_sample_index >= 0),
    samples_written INTEGER NOT NULL CHECK (samples_written >= 0),
    gaps TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN {_in(RECORDING_STATUSES)}),
    stop_reason TEXT,
    UNIQUE (session_id, site, repeat)
);
CREATE TABLE results ({_COMMON_SQL},
    session_id TEXT NOT NULL REFERENCES sessions(id),
    model_id TEXT REFERENCES models(id),
    decision TEXT NOT NULL CHECK (decision IN {_in(DECISIONS)}),
    probability REAL CHECK (probability BETWEEN 0 AND 1),
    operating_point TEXT,
    threshold REAL,
    reason TEXT NOT NULL,
    site_contributions TEXT NOT NULL
);
CREATE TABLE device_events ({_COMMON_SQL},
    session_id TEXT REFERENCES sessions(id),
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX recordings_by_session ON recordings(session_id);
CREATE INDEX recordings_by_status ON recordings(status);
CREATE INDEX sessions_by_status ON sessions(status);
"""

_V2 = """
ALTER TABLE patients ADD COLUMN consent_reuse INTEGER NOT NULL DEFAULT 0 CHECK (consent_reuse IN (0, 1));
ALTER TABLE patients ADD COLUMN erased_at TEXT;
ALTER TABLE recordings ADD COLUMN erased_at TEXT;
"""

_V3 = """
ALTER TABLE results ADD COLUMN murmur TEXT;
"""

MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3)
SCHEMA_VERSION = len(MIGRATIONS)


def connect(db_path: Path, *, read_only: bool = False, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) with WAL, synchronous=FULL,
    foreign keys, a busy timeout and (for writing) secure_delete. Usable from any thread; the Store
    serializes access."""
    if read_only:
        conn = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None,
                               check_same_thread=False)
    else:
        conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    if not read_only:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StoreError(f"{db_path}: SQLite refused WAL mode (got {mode!r}); the store needs a local disk")
        conn.execute("PRAGMA secure_delete = ON")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def migrate(conn: sqlite3.Connection, db_path: Path, migrations: tuple[str, ...] = MIGRATIONS) -> int:
    """Bring the database to version len(migrations), all steps in one transaction; returns the
    version it had before. A database newer than this program is refused."""
    target = len(migrations)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > target:
        raise StoreError(
            f"{db_path} has schema version {version}, newer than this program's {target}; "
            "install the pcg-screen release that wrote it (never downgrade a field box)"
        )
    if version == target:
        return version
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have migrated while this one waited for the write lock.
        current = conn.execute("PRAGMA user_version").fetchone()[0]
        for script in migrations[current:]:
            for statement in _statements(script):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {target}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return version


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (executescript would commit the open transaction)."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement in a migration: {pending.strip()[:60]!r}")
    return statements
