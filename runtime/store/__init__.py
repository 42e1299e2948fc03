"""Field storage: patients (by code, never by name), visits, recordings, results, device events, models.

One SQLite database (WAL, synchronous=FULL) and one WAV file per recording, written as the audio
arrives and made durable every second, so a crash or power cut loses at most the last second.
Files are private to the service user (0600, folders 0700); a patient is erased on request
(Store.erase_patient); reuse for retraining needs its own consent and gets pseudonymous ids.
`db` holds the Store and the recording writer, `wavstream` the crash-safe WAV, `schema` the tables
and migrations, `codes` the patient codes, `export` the sync and retraining exports.
"""

from runtime.store.codes import new_patient_code, normalize_patient_code
from runtime.store.db import (
    Erasure,
    EventRecord,
    InterruptedSession,
    ModelRecord,
    PatientRecord,
    RecordingRecord,
    RecordingWriter,
    ResultRecord,
    SessionRecord,
    Store,
)
from runtime.store.errors import (
    DiskFullError,
    InvalidDemographicsError,
    LowDiskSpaceError,
    StoreBusyError,
    StoreError,
)
from runtime.store.export import Export, export_circor, export_records

__all__ = [
    "DiskFullError",
    "Erasure",
    "EventRecord",
    "Export",
    "InterruptedSession",
    "InvalidDemographicsError",
    "LowDiskSpaceError",
    "ModelRecord",
    "PatientRecord",
    "RecordingRecord",
    "RecordingWriter",
    "ResultRecord",
    "SessionRecord",
    "Store",
    "StoreBusyError",
    "StoreError",
    "export_circor",
    "export_records",
    "new_patient_code",
    "normalize_patient_code",
]
