"""Exports: incremental by sequence number (disjoint and complete), by date, stable columns, CirCor layout."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone

import numpy as np
import pytest

from runtime.formats.circor import load_circor
from runtime.records import Demographics
from runtime.store import Store, export_circor, export_records
from runtime.store.schema import TABLE_COLUMNS

CHILD = Demographics(age_group="Child", sex="Female", height_cm=118.0, weight_kg=21.5)


class Clock:
    """A settable wall clock: field boxes often have a wrong one, and exports must not care."""

    def __init__(self, moment: str):
        self.now = datetime.fromisoformat(moment)

    def __call__(self) -> datetime:
        return self.now


def visit(store: Store, sites=("AV", "MV"), n_samples: int = 400, consent_reuse: bool = False) -> None:
    session = store.start_session(store.new_patient(CHILD, consent=True, consent_reuse=consent_reuse))
    store.log_event("connect", {"port": "sim"}, session=session)
    for site in sites:
        with store.start_recording(session, site, 2000) as writer:
            writer.append((np.arange(n_samples) * 7 % 1000).astype(np.int16))
    store.save_result(session, decision="REFER", probability=0.81, reason="murmur likely",
                      site_contributions={s: 1 / len(sites) for s in sites}, operating_point="cost_optimal",
                      threshold=0.4)
    store.close_session(session)


def all_versions(store: Store) -> set[tuple[str, int]]:
    """(id, changed_seq) of every record in the store."""
    return {(row[0], row[1]) for table in TABLE_COLUMNS for row in store.query(f"SELECT id, changed_seq FROM {table}")}


def exported_versions(export) -> set[tuple[str, int]]:
    document = json.loads(export.files["records.json"])
    return {(row["id"], row["changed_seq"]) for rows in document["tables"].values() for row in rows}


def test_exports_after_a_sequence_number_are_disjoint_and_complete(tmp_path):
    with Store.open(tmp_path, min_free_bytes=0) as store:
        visit(store)
        first = export_records(store, "json")
        visit(store, sites=("PV",))
        store.log_event("battery", {"percent": 31})
        second = export_records(store, "json", after_seq=first.max_seq)
        third = export_records(store, "json", after_seq=second.max_seq)
        a, b = exported_versions(first), exported_versions(second)
        assert a and b and not a & b
        assert a | b == all_versions(store)
        assert third.max_seq == second.max_seq == store.last_seq()
        assert exported_versions(third) == set() and sum(third.counts.values()) == 0


def test_a_record_changed_after_an_export_is_exported_again_with_its_new_state(tmp_path):
    with Store.open(tmp_path, min_free_bytes=0) as store:
        session = store.start_session(store.new_patient(CHILD, consent=True))
        writer = store.start_recording(session, "TV", 2000)
        first = export_records(store, "json", after_seq=None)
        writer.append(np.zeros(100, dtype=np.int16))
        writer.close()
        second = json.loads(export_records(store, "json", after_seq=first.max_seq).files["records.json"])
        (recording,) = second["tables"]["recordings"]
        assert recording["status"] == "complete" and recording["samples_written"] == 100
        assert recording["seq"] <= first.max_seq < recording["changed_seq"]
        assert second["tables"]["patients"] == [] and second["tables"]["sessions"] == []


def test_csv_export_has_stable_columns_and_says_where_to_continue(tmp_path):
    with Store.open(tmp_path, min_free_bytes=0) as store:
        visit(store)
        export = export_records(store, "csv", after_seq=2)
        assert set(export.files) == {f"{t}.csv" for t in TABLE_COLUMNS} | {"export_info.csv"}
        for table, columns in TABLE_COLUMNS.items():
            rows = list(csv.reader(io.StringIO(export.files[f"{table}.csv"])))
            assert tuple(rows[0]) == columns
            assert len(rows) - 1 == export.counts[table]
            seqs = [int(r[columns.index("changed_seq")]) for r in rows[1:]]
            assert all(s > 2 for s in seqs) and seqs == sorted(seqs)
        info = dict(csv.reader(io.StringIO(export.files["export_info.csv"])))
        assert int(info["max_seq"]) == export.max_seq == store.last_seq()
        assert info["after_seq"] == "2" and info["store_id"] == store.store_id
        recordings = list(csv.DictReader(io.StringIO(export.files["recordings.csv"])))
        assert [r["site"] for r in recordings] == ["AV", "MV"] and recordings[0]["stop_reason"] == ""
        assert json.loads(list(csv.DictReader(io.StringIO(export.files["results.csv"])))[0]["site_contributions"]) == {
            "AV": 0.5, "MV": 0.5}
        written = export.write(tmp_path / "out")
        assert sorted(p.name for p in written) == sorted(export.files)
        assert (tmp_path / "out" / "patients.csv").read_text() == export.files["patients.csv"]


def test_since_selects_by_wall_clock_time(tmp_path):
    clock = Clock("2026-01-10T12:00:00+00:00")
    with Store.open(tmp_path, min_free_bytes=0, wall_clock=clock) as store:
        visit(store)
        clock.now = datetime(2026, 2, 3, 9, 30, tzinfo=timezone.utc)
        store.log_event("battery", {"percent": 12})
        for since in ("2026-02-01", datetime(2026, 2, 1), "2026-02-03T10:00:00+01:00"):
            export = export_records(store, "json", since=since)
            assert export.counts["device_events"] == 1 and sum(export.counts.values()) == 1
        assert sum(export_records(store, "json", since="2026-01-01").counts.values()) == len(all_versions(store))
        with pytest.raises(ValueError, match="ISO 8601"):
            export_records(store, since="last tuesday")
        with pytest.raises(ValueError, match="xml"):
            export_records(store, format="xml")


def test_read_only_store_exports_beside_a_running_recorder(tmp_path):
    with Store.open(tmp_path, min_free_bytes=0) as store:
        session = store.start_session(store.new_patient(CHILD, consent=True))
        writer = store.start_recording(session, "AV", 2000)
        writer.append(np.zeros(2000, dtype=np.int16))  # a second: synced and counted
        with Store.open(tmp_path, read_only=True) as reader:
            export = export_records(reader, "json")
        (recording,) = json.loads(export.files["records.json"])["tables"]["recordings"]
        assert recording["status"] == "recording" and recording["samples_written"] == 2000
        assert export.max_seq == store.last_seq()
        writer.close()


def test_circor_export_reads_back_with_the_same_audio_and_demographics(tmp_path):
    with Store.open(tmp_path / "store", min_free_bytes=0) as store:
        visit(store, sites=("AV", "PV", "MV"), n_samples=900, consent_reuse=True)
        session = store.start_session(store.new_patient(Demographics(age_group="Infant"), consent=True, consent_reuse=True))
        store.start_recording(session, "TV", 2000).abort("operator_cancel")  # nothing complete: left out
        assert export_circor(store, tmp_path / "circor") == 1
        patient_code = store.query("SELECT code FROM patients ORDER BY seq LIMIT 1")[0][0]
    dataset = load_circor(tmp_path / "circor")
    assert dataset.problems == []
    (patient,) = dataset.patients
    assert patient.patient_id.isdigit() and patient_code not in patient.patient_id  # a pseudonym, never the code
    assert patient.group and patient.demographics == CHILD and patient.outcome is None
    assert sorted(r.site for r in patient.recordings) == ["AV", "MV", "PV"]
    for recording in patient.recordings:
        audio = recording.read()
        assert audio.rate_hz == 2000
        assert np.array_equal(audio.samples, (np.arange(900) * 7 % 1000).astype(np.int16))
