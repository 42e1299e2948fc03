"""The field store's database: settings, sequence numbers, ids, validation at the boundary, disk space."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.manifest import ModelManifest, OperatingPoint
from runtime.metadata import check_demographics
from runtime.records import Demographics
from runtime.store import (
    DiskFullError,
    InvalidDemographicsError,
    LowDiskSpaceError,
    SessionRecord,
    Store,
    StoreBusyError,
    StoreError,
    normalize_patient_code,
)
from runtime.store.codes import ALPHABET, new_patient_code
from runtime.store.schema import MIGRATIONS, migrate

REPO_ROOT = Path(__file__).resolve().parents[1]
CHILD = Demographics(age_group="Child", sex="Female", height_cm=118.0, weight_kg=21.5)


def open_store(root: Path, **options) -> Store:
    options.setdefault("min_free_bytes", 0)
    return Store.open(root, **options)


def manifest(name: str = "tiny") -> ModelManifest:
    return ModelManifest(
        model_name=name, task="outcome", architecture="primary", frontend={}, frontend_hash="f" * 64,
        inputs={}, outputs={}, class_names={"outcome": ["Abnormal", "Normal"]},
        operating_points={"cost_optimal": OperatingPoint(0.4)}, default_operating_point="cost_optimal",
        inference={}, training_data={}, metrics={}, created_utc="2026-01-01T00:00:00Z", code_version="test",
        graph_sha256="a" * 64,
    )


def count(store: Store, table: str) -> int:
    return store.query(f"SELECT COUNT(*) FROM {table}")[0][0]


def test_database_runs_in_wal_mode_with_full_sync_foreign_keys_and_busy_timeout(tmp_path):
    with open_store(tmp_path) as store:
        assert store.query("PRAGMA journal_mode")[0][0] == "wal"
        assert store.query("PRAGMA synchronous")[0][0] == 2  # FULL
        assert store.query("PRAGMA foreign_keys")[0][0] == 1
        assert store.query("PRAGMA busy_timeout")[0][0] >= 1000
        assert store.query("PRAGMA user_version")[0][0] == len(MIGRATIONS)
    # journal_mode is a property of the file: a plain connection sees it too.
    conn = sqlite3.connect(tmp_path / "store.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_sequence_numbers_increase_strictly_across_record_types_and_reopen(tmp_path):
    seqs = []
    with open_store(tmp_path) as store:
        patient = store.new_patient(CHILD, consent=True)
        session = store.start_session(patient)
        event = store.log_event("connect", {"port": "/dev/ttyUSB0"}, session=session)
        model = store.register_model(manifest())
        with store.start_recording(session, "MV", 1000) as writer:
            writer.append(np.zeros(10, dtype=np.int16))
        result = store.save_result(session, decision="NO_REFER", probability=0.1, reason="no murmur", model=model)
        seqs += [patient.seq, session.seq, event.seq, model.seq, writer.record.seq, result.seq]
        last_before = store.last_seq()
    with open_store(tmp_path) as store:
        after_reopen = store.log_event("battery", {"percent": 54})
        seqs.append(after_reopen.seq)
    assert all(a < b for a, b in zip(seqs, seqs[1:])), seqs
    assert after_reopen.seq == last_before + 1


def test_record_ids_are_unique_uuids(tmp_path):
    with open_store(tmp_path) as store:
        ids = []
        for _ in range(30):
            patient = store.new_patient(CHILD, consent=True)
            session = store.start_session(patient)
            ids += [patient.id, session.id, store.log_event("connect").id]
        all_ids = [row[0] for table in ("patients", "demographics", "sessions", "device_events")
                   for row in store.query(f"SELECT id FROM {table}")]
    assert len(set(all_ids)) == len(all_ids) == 120
    assert all(len(i) == 36 and i.count("-") == 4 for i in ids)


def test_invalid_demographics_store_nothing_and_name_every_problem(tmp_path):
    with open_store(tmp_path) as store:
        before = store.last_seq()
        invalid = Demographics(age_group="Toddler", sex="Male", height_cm=900.0, pregnant=True)
        with pytest.raises(InvalidDemographicsError) as caught:
            store.new_patient(invalid, consent=True)
        assert caught.value.problems == check_demographics(invalid) and len(caught.value.problems) == 4
        assert "height 900.0 cm" in str(caught.value) and "Toddler" in str(caught.value)
        assert count(store, "patients") == count(store, "demographics") == 0
        assert store.last_seq() == before


def test_no_consent_stores_nothing(tmp_path):
    with open_store(tmp_path) as store:
        with pytest.raises(StoreError, match="consent"):
            store.new_patient(CHILD, consent=False)
        assert count(store, "patients") == 0


def test_patient_gets_a_checked_code_consent_time_and_demographics(tmp_path):
    times = iter(["2026-03-01T09:00:00+00:00"] * 10)
    from datetime import datetime

    with open_store(tmp_path, wall_clock=lambda: datetime.fromisoformat(next(times))) as store:
        patient = store.new_patient(CHILD, consent=True)
        assert normalize_patient_code(patient.code) == patient.code
        assert patient.consent_at == "2026-03-01T09:00:00.000+00:00"
        assert store.find_patient(patient.code.lower().replace("-", " ")) == patient
        assert store.patient(patient.id).demographics == CHILD


def test_failed_write_rolls_back_its_sequence_number(tmp_path):
    """A foreign-key violation (session that does not exist) leaves no row and no used number."""
    with open_store(tmp_path) as store:
        patient = store.new_patient(CHILD, consent=True)
        ghost = SessionRecord("no-such-id", 0, "", patient.id, "open")
        before = store.last_seq()
        with pytest.raises(sqlite3.IntegrityError):
            store.save_result(ghost, decision="REFER", probability=0.9, reason="x")
        assert store.last_seq() == before
        assert count(store, "results") == 0


def test_patient_code_check_character_catches_every_single_typo_and_swap():
    for _ in range(40):
        code = new_patient_code()
        symbols = code.replace("PCG-", "").replace("-", "")
        for i, original in enumerate(symbols):
            for other in ALPHABET:
                if other != original:
                    typo = symbols[:i] + other + symbols[i + 1:]
                    with pytest.raises(ValueError):
                        normalize_patient_code(typo)
        for i in range(len(symbols)):
            for j in range(i + 1, len(symbols)):
                if symbols[i] != symbols[j]:
                    swapped = list(symbols)
                    swapped[i], swapped[j] = swapped[j], swapped[i]
                    with pytest.raises(ValueError):
                        normalize_patient_code("".join(swapped))


def test_patient_code_avoids_look_alike_characters():
    assert not set("01OILUZ") & set(ALPHABET)
    with pytest.raises(ValueError, match="not in the form"):
        normalize_patient_code("PCG-0OIL-1Z")


def test_low_disk_space_refuses_new_patient_and_recording_with_a_clear_message(tmp_path):
    free = [10_000_000_000]
    with Store.open(tmp_path, min_free_bytes=200_000_000, free_bytes=lambda: free[0]) as store:
        patient = store.new_patient(CHILD, consent=True)
        session = store.start_session(patient)
        free[0] = 150_000_000
        with pytest.raises(LowDiskSpaceError, match="150 MB free.*200 MB needed"):
            store.new_patient(CHILD, consent=True)
        with pytest.raises(LowDiskSpaceError, match="start a recording at AV"):
            store.start_recording(session, "AV", 4000)
        assert count(store, "patients") == 1
        assert count(store, "recordings") == 0
        assert not (tmp_path / "audio").exists()


def test_disk_filling_while_recording_stops_cleanly_with_a_valid_wav(tmp_path):
    import wave

    free = [10_000_000_000]
    with Store.open(tmp_path, min_free_bytes=1_000_000, recording_reserve_bytes=500_000,
                    free_bytes=lambda: free[0]) as store:
        session = store.start_session(store.new_patient(CHILD, consent=True))
        writer = store.start_recording(session, "PV", 2000)
        chunk = np.arange(300, dtype=np.int16)
        for _ in range(5):
            writer.append(chunk)
        free[0] = 400_000  # under the reserve: the next append must not write
        with pytest.raises(DiskFullError) as caught:
            writer.append(chunk)
        assert caught.value.samples_kept == 1500
        assert writer.record.status == "interrupted" and writer.record.stop_reason == "disk_full"
        assert writer.record.samples_written == 1500
        with pytest.raises(StoreError, match="interrupted"):
            writer.append(chunk)
        with wave.open(str(store.wav_path(writer.record))) as wav:
            assert (wav.getnframes(), wav.getframerate(), wav.getsampwidth(), wav.getnchannels()) == (1500, 2000, 2, 1)
            assert np.array_equal(np.frombuffer(wav.readframes(1500), "<i2"), np.tile(chunk, 5))
        assert store.resume()[0].interrupted == (writer.record,)


def test_a_second_writer_process_is_refused_while_a_reader_may_open(tmp_path):
    with open_store(tmp_path) as store:
        store.log_event("connect")
        with pytest.raises(StoreBusyError, match="another process"):
            open_store(tmp_path)
        with Store.open(tmp_path, read_only=True) as reader:
            assert reader.last_seq() == store.last_seq()
            with pytest.raises(StoreError, match="read-only"):
                reader.log_event("connect")


def test_newer_schema_is_refused(tmp_path):
    open_store(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "store.sqlite")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError, match="schema version 99, newer"):
        open_store(tmp_path)


def test_migration_hook_applies_new_steps_in_one_transaction(tmp_path):
    with open_store(tmp_path) as store:
        store.log_event("connect")
    db = tmp_path / "store.sqlite"
    conn = sqlite3.connect(db, isolation_level=None)
    broken = (*MIGRATIONS, "ALTER TABLE device_events ADD COLUMN note TEXT;\nSELECT * FROM no_such_table;")
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn, db, broken)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert "note" not in [c[1] for c in conn.execute("PRAGMA table_info(device_events)")]
    assert migrate(conn, db, (*MIGRATIONS, "ALTER TABLE device_events ADD COLUMN note TEXT;")) == len(MIGRATIONS)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) + 1
    assert conn.execute("SELECT kind, note FROM device_events").fetchall() == [("connect", None)]
    conn.close()


def test_model_provenance_is_recorded_once_per_manifest(tmp_path):
    with open_store(tmp_path) as store:
        first = store.register_model(manifest())
        assert store.register_model(manifest()) == first
        other = store.register_model(manifest("tiny-v2"))
        assert other.id != first.id
        stored = store.query("SELECT manifest FROM models WHERE id = ?", (first.id,))[0][0]
        assert ModelManifest.from_json(stored) == manifest()


def test_results_and_events_are_validated_at_the_boundary(tmp_path):
    with open_store(tmp_path) as store:
        session = store.start_session(store.new_patient(CHILD, consent=True))
        with pytest.raises(ValueError, match="MAYBE"):
            store.save_result(session, decision="MAYBE", probability=0.5, reason="")
        with pytest.raises(ValueError, match="outside"):
            store.save_result(session, decision="REFER", probability=1.5, reason="")
        with pytest.raises(ValueError, match="needs the outcome probability"):
            store.save_result(session, decision="REFER", probability=None, reason="")
        with pytest.raises(ValueError, match="unknown sites"):
            store.save_result(session, decision="REFER", probability=0.8, reason="", site_contributions={"XX": 1})
        retake = store.save_result(session, decision="RETAKE", probability=None, reason="noisy MV")
        assert retake.probability is None
        with pytest.raises(ValueError, match="kind"):
            store.log_event("Battery Low!")
        with pytest.raises(ValueError, match="JSON"):
            store.log_event("battery", {"level": object()})
        assert count(store, "results") == 1 and count(store, "device_events") == 0


def test_recordings_at_one_site_get_repeat_numbers_and_gaps_are_kept(tmp_path):
    with open_store(tmp_path) as store:
        session = store.start_session(store.new_patient(CHILD, consent=True))
        with store.start_recording(session, "TV", 4000, first_sample_index=1000) as first:
            with pytest.raises(ValueError, match="first sample"):
                first.note_gap(990, 5)
            first.append(np.ones(100, dtype=np.int16))
            first.note_gap(1100, 20)
            first.append(np.ones(100, dtype=np.int16))
            first.note_gap(1220, 5)
            with pytest.raises(ValueError, match="previous gap"):
                first.note_gap(1200, 5)
        second = store.start_recording(session, "TV", 4000)
        second.close()
        records = store.recordings(session)
        assert [(r.site, r.repeat, r.status) for r in records] == [("TV", 0, "complete"), ("TV", 1, "complete")]
        assert records[0].gaps == ((1100, 20), (1220, 5)) and records[0].samples_written == 200
        assert (records[0].first_sample_index, records[1].first_sample_index) == (1000, 0)
        with pytest.raises(ValueError, match="unknown auscultation site"):
            store.start_recording(session, "XX", 4000)
        with pytest.raises(TypeError, match="int16"):
            store.start_recording(session, "AV", 4000).append(np.zeros(10, dtype=np.float32))


def test_store_imports_neither_torch_nor_scipy():
    code = "import sys, runtime.store; bad = {'torch', 'scipy'} & set(sys.modules); assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


def test_a_recording_thread_and_the_main_thread_share_the_store(tmp_path):
    import threading

    with open_store(tmp_path) as store:
        session = store.start_session(store.new_patient(CHILD, consent=True))
        writer = store.start_recording(session, "AV", 1000)
        failures = []

        def record():
            try:
                for _ in range(50):
                    writer.append(np.ones(100, dtype=np.int16))
                writer.close()
            except Exception as exc:  # surfaced to the main thread below
                failures.append(exc)

        thread = threading.Thread(target=record)
        thread.start()
        for i in range(50):
            store.log_event("battery", {"percent": 100 - i}, session=session)
        thread.join()
        assert failures == []
        assert store.recording(writer.record.id).samples_written == 5000
        assert count(store, "device_events") == 50


def test_a_result_keeps_the_murmur_finding_and_refuses_a_malformed_one(tmp_path):
    with open_store(tmp_path) as store:
        session = store.start_session(store.new_patient(Demographics(age_group="Child"), consent=True))
        murmur = {"Present": 0.7, "Unknown": 0.2, "Absent": 0.1}
        result = store.save_result(session, decision="REFER", probability=0.8, reason="r", murmur=murmur)
        assert result.murmur == murmur
        assert json.loads(store.query("SELECT murmur FROM results")[0][0]) == murmur
        for bad in ({"Present": 0.7, "Absent": 0.3}, {"Present": 1.5, "Unknown": 0.0, "Absent": 0.0},
                    {"Present": float("nan"), "Unknown": 0.5, "Absent": 0.5}):
            with pytest.raises(ValueError, match="murmur probabilities"):
                store.save_result(session, decision="REFER", probability=0.8, reason="r", murmur=bad)
        plain = store.save_result(session, decision="NO_REFER", probability=0.1, reason="r")
        assert plain.murmur is None
