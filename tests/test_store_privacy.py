"""Privacy of the field store: files private to the service user, erasure when consent is withdrawn,
a separate consent to reuse recordings for retraining, pseudonymous ids in the retraining export.

Everything is real: SQLite files on disk, the virtual stethoscope on a pseudo-terminal, `python -m
runtime.cli` in subprocesses (one killed with SIGKILL mid-erase, one driven through a terminal).
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import sqlite3
import stat
import struct
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from firmware_bridge.emulator import Emulator
from runtime.formats.circor import load_circor
from runtime.records import Demographics
from runtime.screening import ScreeningBox
from runtime.store import Store, StoreError, export_circor, export_records, new_patient_code
from runtime.store.schema import MIGRATIONS, SCHEMA_VERSION, migrate

REPO_ROOT = Path(__file__).resolve().parents[1]
RUNTIME = [sys.executable, "-m", "runtime.cli"]
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
# Fractional values: SQLite stores them as 8-byte doubles, so their bytes can be looked for on disk.
ERASED = Demographics(age_group="Child", sex="Female", height_cm=118.37, weight_kg=21.63)
KEPT = Demographics(age_group="Infant", sex="Male", height_cm=71.5, weight_kg=8.25)


def run(command: list[str], **options) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=180, env=ENV, **options)


def modes(root: Path) -> dict[str, int]:
    """Permission bits of the store folder and of everything under it, by path relative to it."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def assert_private(root: Path) -> dict[str, int]:
    found = modes(root)
    loose = {name: oct(mode) for name, mode in found.items()
             if mode != (0o700 if (root / name).is_dir() else 0o600)}
    assert loose == {}, f"not private to the service user: {loose}"
    return found


def record(store: Store, session, site: str, n_samples: int = 400, rate_hz: int = 2000):
    with store.start_recording(session, site, rate_hz) as writer:
        writer.append((np.arange(n_samples) * 7 % 1000).astype(np.int16))
    return writer.record


def patient_with_visits(store: Store, demographics: Demographics, *, consent_reuse: bool, open_visit: bool = False):
    """A patient with a closed visit (AV, MV, a result) and optionally a second visit left open (TV)."""
    patient = store.new_patient(demographics, consent=True, consent_reuse=consent_reuse)
    session = store.start_session(patient)
    for site in ("AV", "MV"):
        record(store, session, site)
    store.save_result(session, decision="REFER", probability=0.8, reason="murmur likely")
    store.close_session(session)
    if open_visit:
        record(store, store.start_session(patient), "TV")
    return patient


def doubles(demographics: Demographics) -> list[bytes]:
    return [struct.pack(">d", demographics.height_cm), struct.pack(">d", demographics.weight_kg)]


# --- 1. files private to the service user --------------------------------------------------------


def test_a_screening_stored_through_the_cli_leaves_every_file_and_folder_private_whatever_the_umask(tmp_path):
    root = tmp_path / "store"
    done = run(RUNTIME + ["--device", "sim", "--seconds", "1", "--speed", "50", "--consent", "--yes", "--no-model",
                          "--json", "--retakes", "0", "--db", str(root)], umask=0)
    assert done.returncode == 0, done.stderr
    found = assert_private(root)
    wavs = [name for name in found if name.endswith(".wav")]
    assert len(wavs) == 4 and {"store.sqlite", "store.lock", "audio"} <= set(found)


def test_the_database_its_wal_and_shm_and_the_audio_are_private_while_the_store_is_open(tmp_path):
    old_umask = os.umask(0)  # the loosest umask: every mode must be explicit, not left to it
    try:
        with Emulator(link=tmp_path / "steth", seed=1, speed=50) as emulator, Store.open(tmp_path / "store") as store:
            with ScreeningBox(emulator.path, store=store, seconds_per_site=1.0) as box:
                box.connect()
                visit = box.begin_patient(Demographics(age_group="Child"), consent=True)
                box.record_site(visit, "AV")
                found = assert_private(tmp_path / "store")
    finally:
        os.umask(old_umask)
    assert {"store.sqlite", "store.sqlite-wal", "store.sqlite-shm", "store.lock"} <= set(found)
    assert sum(name.endswith(".wav") for name in found) == 1


def test_an_older_store_with_loose_modes_is_tightened_when_opened_for_writing_not_for_reading(tmp_path):
    root = tmp_path / "store"
    with Store.open(root, min_free_bytes=0) as store:
        patient_with_visits(store, KEPT, consent_reuse=False)
    (root / "store.sqlite-wal").write_bytes(b"")  # as an unclean shutdown of an older release leaves it
    for name in modes(root):
        os.chmod(root / name, 0o755 if (root / name).is_dir() else 0o644)
    (root / "audio" / "stray.wav").write_bytes(b"RIFF")
    os.chmod(root / "audio" / "stray.wav", 0o666)
    loose = modes(root)
    with Store.open(root, read_only=True) as reader:  # a reader writes nothing, modes included
        reader.query("SELECT COUNT(*) FROM patients")
    assert {name: mode for name, mode in modes(root).items() if name in loose} == loose  # (SQLite may add a -shm)
    with Store.open(root, min_free_bytes=0):
        found = assert_private(root)
    assert sum(name.endswith(".wav") for name in found) == 3


# --- 2. erasure when consent is withdrawn --------------------------------------------------------


def test_erase_removes_the_audio_and_the_details_keeps_the_skeleton_and_logs_it(tmp_path):
    root = tmp_path / "store"
    moment = datetime(2026, 3, 3, 9, 30, tzinfo=timezone.utc)
    with Store.open(root, min_free_bytes=0, wall_clock=lambda: moment) as store:
        assert store.query("PRAGMA secure_delete")[0][0] == 1  # whatever the SQLite build's default
        erased = patient_with_visits(store, ERASED, consent_reuse=True, open_visit=True)
        kept = patient_with_visits(store, KEPT, consent_reuse=True)
        (root / "audio" / erased.code / "s000099").mkdir()
        (root / "audio" / erased.code / "s000099" / "AV_0.wav").write_bytes(b"RIFF")  # a crash leftover without a row
        rows_before = {t: store.query(f"SELECT COUNT(*) FROM {t}")[0][0] for t in ("patients", "demographics", "sessions",
                                                                                 "recordings", "results")}
        erasure = store.erase_patient(erased.code.lower())
        assert (erasure.code, erasure.reason, erasure.already_erased) == (erased.code, "consent withdrawn", False)
        assert (erasure.sessions, erasure.sessions_closed, erasure.recordings, erasure.files_removed) == (2, 1, 3, 4)
        assert not (root / "audio" / erased.code).exists()
        assert len(list((root / "audio" / kept.code).rglob("*.wav"))) == 2
        after = store.find_patient(erased.code)
        assert after.demographics == Demographics() and after.erased_at == erasure.erased_at
        assert after.consent_reuse is False and after.code == erased.code
        assert store.find_patient(kept.code).demographics == KEPT
        assert {t: store.query(f"SELECT COUNT(*) FROM {t}")[0][0] for t in rows_before} == rows_before  # the skeleton
        recordings = store.query("SELECT r.erased_at FROM recordings r JOIN sessions s ON s.id = r.session_id "
                                 "WHERE s.patient_id = ?", (erased.id,))
        assert [r[0] for r in recordings] == [erasure.erased_at] * 3
        assert store.query("SELECT decision FROM results r JOIN sessions s ON s.id = r.session_id WHERE s.patient_id = ?",
                           (erased.id,))[0][0] == "REFER"
        (event,) = store.query("SELECT detail, created_at FROM device_events WHERE kind = 'patient_erased'")
        assert json.loads(event[0]) == {"patient": erased.code, "erased_at": erasure.erased_at, "reason": "consent withdrawn",
                                        "sessions": 2, "sessions_closed": 1, "recordings": 3, "audio_files": 4}
        assert event[1] == erasure.erased_at == "2026-03-03T09:30:00.000+00:00"
        assert store.resume() == []  # the open visit was closed: nothing offers to continue it
        with pytest.raises(StoreError, match="was erased"):
            store.start_session(after)
        assert store.query("PRAGMA integrity_check")[0][0] == "ok"
        again = store.erase_patient(erased.code)
        assert again.already_erased and again.files_removed == 0 and again.erased_at == erasure.erased_at
        assert store.query("SELECT COUNT(*) FROM device_events WHERE kind = 'patient_erased'")[0][0] == 1
        # the old values are gone from the database file and its write-ahead log, not only hidden
        on_disk = b"".join(p.read_bytes() for p in root.glob("store.sqlite*"))
        assert all(value not in on_disk for value in doubles(ERASED))
        assert all(value in on_disk for value in doubles(KEPT))


def test_erase_is_refused_while_the_patients_recording_is_written_and_for_an_unknown_code(tmp_path):
    with Store.open(tmp_path / "store", min_free_bytes=0) as store:
        patient = store.new_patient(ERASED, consent=True)
        writer = store.start_recording(store.start_session(patient), "PV", 2000)
        writer.append(np.ones(100, dtype=np.int16))
        before = store.last_seq()
        busy = f"{patient.code}'s recording at PV is being written right now.*nothing was erased"
        with pytest.raises(StoreError, match=busy):
            store.erase_patient(patient.code)
        assert store.last_seq() == before and store.wav_path(writer.record).is_file()
        writer.close()
        before = store.last_seq()
        unknown = new_patient_code()
        with pytest.raises(StoreError, match=f"no patient with code {unknown} in the store.*nothing was erased"):
            store.erase_patient(unknown)
        with pytest.raises(ValueError, match="not in the form"):
            store.erase_patient("PCG-0000")
        with pytest.raises(ValueError, match="reason"):
            store.erase_patient(patient.code, reason="  ")
        assert store.last_seq() == before
        assert store.erase_patient(patient.code, reason="guardian asked on 3 March").recordings == 1


def test_exports_after_an_erase_hold_none_of_the_erased_data_and_carry_the_erasure(tmp_path):
    with Store.open(tmp_path / "store", min_free_bytes=0) as store:
        erased = patient_with_visits(store, ERASED, consent_reuse=True)
        kept = patient_with_visits(store, KEPT, consent_reuse=True)
        before = export_records(store, "json")
        store.erase_patient(erased.code, reason="consent withdrawn")
        full_csv = export_records(store, "csv")
        full_json = export_records(store, "json").files["records.json"]
        since = json.loads(export_records(store, "json", after_seq=before.max_seq).files["records.json"])
        assert export_circor(store, tmp_path / "circor") == 1
    for text in ("".join(full_csv.files.values()), full_json):
        assert "118.37" not in text and "21.63" not in text and "71.5" in text
    demographics = {r["patient_id"]: r for r in csv.DictReader(io.StringIO(full_csv.files["demographics.csv"]))}
    assert [demographics[erased.id][k] for k in ("age_group", "sex", "height_cm", "weight_kg", "pregnant")] == [""] * 5
    # the incremental export carries the erasure, so a central copy keeping the latest version of each
    # record by id erases too; nothing of the other patient is sent again
    tables = since["tables"]
    (patient,) = tables["patients"]
    assert patient["id"] == erased.id and patient["erased_at"] and patient["consent_reuse"] == 0
    assert [(d["patient_id"], d["age_group"], d["height_cm"]) for d in tables["demographics"]] == [(erased.id, None, None)]
    assert len(tables["recordings"]) == 2 and all(r["erased_at"] == patient["erased_at"] for r in tables["recordings"])
    (event,) = tables["device_events"]
    assert event["kind"] == "patient_erased" and event["detail"]["patient"] == erased.code
    assert tables["results"] == [] and tables["sessions"] == []
    (only,) = load_circor(tmp_path / "circor").patients
    assert only.demographics == KEPT


ERASE_THEN_CRASH = textwrap.dedent(
    """
    import os, signal, sys
    from runtime.store import Store

    store = Store.open(sys.argv[1], min_free_bytes=0)

    def crash_at_the_first_file_removal(frame, event, arg):
        if event == "call" and frame.f_code.co_name == "_remove_patient_audio":
            os.kill(os.getpid(), signal.SIGKILL)

    sys.setprofile(crash_at_the_first_file_removal)
    store.erase_patient(sys.argv[2])
    """
)


@pytest.mark.parametrize("finisher", ["erase-again", "startup"])
def test_an_erase_killed_after_its_commit_is_finished_by_a_rerun_or_at_startup(tmp_path, finisher):
    """The database change is committed before any file is removed; a process killed in between leaves
    the patient erased in the database and the audio on disk, which `erase` run again, or the field
    program's startup (Store.resume), removes."""
    root = tmp_path / "store"
    with Store.open(root, min_free_bytes=0) as store:
        code = patient_with_visits(store, ERASED, consent_reuse=True).code
    killed = run([sys.executable, "-c", ERASE_THEN_CRASH, str(root), code])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(list((root / "audio" / code).rglob("*.wav"))) == 2  # killed before the files went
    with Store.open(root, read_only=True) as reader:
        assert reader.find_patient(code).erased_at is not None and reader.find_patient(code).demographics == Demographics()
        assert reader.query("SELECT COUNT(*) FROM device_events WHERE kind = 'patient_erased'")[0][0] == 1
    if finisher == "erase-again":
        done = run(RUNTIME + ["erase", code, "--db", str(root), "--yes"])
        assert done.returncode == 0, done.stderr
        assert f"patient {code} was already erased" in done.stdout and "removed 2 audio files" in done.stdout
    else:
        with Store.open(root, min_free_bytes=0) as store:
            assert store.resume() == []
    assert not (root / "audio" / code).exists()
    with Store.open(root, read_only=True) as reader:
        assert reader.query("SELECT COUNT(*) FROM device_events WHERE kind = 'patient_erased'")[0][0] == 1


def test_the_erase_command_asks_on_a_terminal_and_refuses_when_nothing_can_be_asked(tmp_path):
    root = tmp_path / "store"
    with Store.open(root, min_free_bytes=0) as store:
        code = patient_with_visits(store, ERASED, consent_reuse=False).code

    def on_terminal(answer: bytes) -> subprocess.CompletedProcess:
        master, slave = os.openpty()
        try:
            process = subprocess.Popen(RUNTIME + ["erase", code, "--db", str(root)], stdin=slave, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True, env=ENV)
            os.write(master, answer)
            out, err = process.communicate(timeout=120)
        finally:
            os.close(master)
            os.close(slave)
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)

    refused = run(RUNTIME + ["erase", code, "--db", str(root)], stdin=subprocess.DEVNULL)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "nothing was erased" in refused.stderr and "--yes" in refused.stderr
    declined = on_terminal(b"n\n")
    assert declined.returncode == 1 and f"Erase patient {code} (Child, Female, 118.37 cm, 21.63 kg)" in declined.stdout
    assert "nothing was erased" in declined.stdout
    assert len(list((root / "audio").rglob("*.wav"))) == 2
    confirmed = on_terminal(b"y\n")
    assert confirmed.returncode == 0, confirmed.stderr
    assert f"erased patient {code} (consent withdrawn): 2 audio files removed" in confirmed.stdout
    assert list((root / "audio").rglob("*.wav")) == []
    unknown = run(RUNTIME + ["erase", new_patient_code(), "--db", str(root), "--yes"])
    assert unknown.returncode == 2 and "no patient with code" in unknown.stderr and "nothing was erased" in unknown.stderr
    nowhere = run(RUNTIME + ["erase", code, "--db", str(tmp_path / "nowhere"), "--yes"])
    assert nowhere.returncode == 2 and "no store at" in nowhere.stderr
    assert not (tmp_path / "nowhere").exists()


def test_the_erase_command_is_refused_while_another_process_records(tmp_path):
    root = tmp_path / "store"
    recorder = subprocess.Popen(RUNTIME + ["--db", str(root), "--yes", "--consent", "--no-model", "--speed", "1",
                                           "--seconds", "30", "--age-group", "Child"],
                                env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        code = None
        for line in recorder.stdout:
            if line.startswith("patient code "):
                code = line.split()[2]
                break
        assert code is not None
        refused = run(RUNTIME + ["erase", code, "--db", str(root), "--yes"])
    finally:
        recorder.send_signal(signal.SIGINT)
        recorder.communicate(timeout=60)
    assert refused.returncode == 2 and "another process is writing to the store" in refused.stderr
    assert "nothing was erased" in refused.stderr
    with Store.open(root, read_only=True) as reader:
        assert reader.find_patient(code).erased_at is None and reader.find_patient(code).demographics.age_group == "Child"


# --- 3. a separate consent to reuse recordings for retraining -------------------------------------


def test_reuse_consent_is_stored_apart_from_screening_consent_and_defaults_to_no(tmp_path):
    with Store.open(tmp_path / "store", min_free_bytes=0) as store:
        assert store.new_patient(KEPT, consent=True).consent_reuse is False
        assert store.new_patient(KEPT, consent=True, consent_reuse=True).consent_reuse is True
        with pytest.raises(TypeError, match="consent_reuse must be True or False"):
            store.new_patient(KEPT, consent=True, consent_reuse="yes")
        assert [r[0] for r in store.query("SELECT consent_reuse FROM patients ORDER BY seq")] == [0, 1]


def test_an_older_store_is_migrated_with_reuse_consent_not_given(tmp_path):
    root = tmp_path / "store"
    root.mkdir()
    db = root / "store.sqlite"
    conn = sqlite3.connect(db, isolation_level=None)
    migrate(conn, db, MIGRATIONS[:1])  # exactly what the first release wrote
    code, now = new_patient_code(), "2026-01-05T10:00:00.000+00:00"
    conn.execute("INSERT INTO store_info VALUES ('store_id', 'box-7')")
    conn.execute("UPDATE sequence_counter SET last_seq = 2")
    conn.execute("INSERT INTO patients VALUES ('p-1', 1, ?, 1, ?, ?, ?)", (now, now, code, now))
    conn.execute("INSERT INTO demographics VALUES ('d-1', 2, ?, 2, ?, 'p-1', 'Child', 'Male', 120.5, NULL, NULL)", (now, now))
    conn.close()
    with Store.open(root, min_free_bytes=0) as store:
        assert store.query("PRAGMA user_version")[0][0] == SCHEMA_VERSION == len(MIGRATIONS) >= 2
        patient = store.find_patient(code)
        assert patient.consent_reuse is False and patient.erased_at is None
        assert patient.demographics == Demographics(age_group="Child", sex="Male", height_cm=120.5)
        (row,) = json.loads(export_records(store, "json").files["records.json"])["tables"]["patients"]
        assert row["consent_reuse"] == 0 and row["code"] == code
        assert store.last_seq() == 2  # the migration wrote no record


@pytest.mark.parametrize("how, stored", [
    (["--consent"], 0),
    (["--consent", "--consent-reuse"], 1),
    (["--consent", "--no-consent-reuse"], 0),
    ({"consent": True, "consent_reuse": True}, 1),
])
def test_the_cli_takes_reuse_consent_from_flags_or_the_demographics_file(tmp_path, how, stored):
    flags = how
    if isinstance(how, dict):
        (tmp_path / "patient.json").write_text(json.dumps({"age_group": "Child", **how}))
        flags = ["--demographics", str(tmp_path / "patient.json")]
    done = run(RUNTIME + ["--device", "sim", "--seconds", "1", "--speed", "50", "--yes", "--no-model", "--json",
                          "--retakes", "0", "--db", str(tmp_path / "store"), *flags])
    assert done.returncode == 0, done.stderr
    with Store.open(tmp_path / "store", read_only=True) as reader:
        assert reader.query("SELECT consent_reuse FROM patients")[0][0] == stored


def test_the_cli_refuses_a_reuse_consent_that_is_not_a_yes_or_no(tmp_path):
    (tmp_path / "patient.json").write_text(json.dumps({"consent": True, "consent_reuse": "yes"}))
    done = run(RUNTIME + ["--db", str(tmp_path / "store"), "--demographics", str(tmp_path / "patient.json"), "--yes",
                          "--no-model"])
    assert done.returncode == 2 and "consent_reuse must be true or false" in done.stderr
    both = run(RUNTIME + ["--db", str(tmp_path / "store"), "--consent-reuse", "--no-consent-reuse", "--yes", "--no-model"])
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("given, answers, expected, asked_reuse", [
    ((None, None), "y\n\n", (True, False), True),
    ((None, None), "y\ny\n", (True, True), True),
    ((None, None), "n\n", (False, None), False),
    ((True, None), "n\n", (True, False), True),
    ((True, True), "", (True, True), False),
])
def test_the_terminal_asks_reuse_consent_after_screening_consent_and_only_once_that_is_given(
        monkeypatch, capsys, given, answers, expected, asked_reuse):
    from runtime.cli import prompt_consents

    monkeypatch.setattr(sys, "stdin", io.StringIO(answers))
    assert prompt_consents(*given) == expected
    shown = capsys.readouterr().out
    assert ("retrain" in shown) == asked_reuse
    if asked_reuse and given[0] is None:
        assert shown.index("store the recording") < shown.index("retrain")


# --- 4. pseudonymous ids in the retraining export ----------------------------------------------


def test_the_circor_export_uses_stable_pseudonyms_and_only_patients_who_consented_to_reuse(tmp_path):
    root = tmp_path / "store"
    with Store.open(root, min_free_bytes=0) as store:
        revisited = patient_with_visits(store, ERASED, consent_reuse=True)
        record(store, store.start_session(revisited), "AV", n_samples=300)  # a revisit: AV again, kept open
        declined = patient_with_visits(store, KEPT, consent_reuse=False)
        other = patient_with_visits(store, Demographics(age_group="Adolescent"), consent_reuse=True)
        patients = [revisited, declined, other]
    with Store.open(root, read_only=True) as reader:
        assert export_circor(reader, tmp_path / "first") == 2
        assert export_circor(reader, tmp_path / "second") == 2
        secrets = [v for (v,) in reader.query("SELECT value FROM store_info WHERE key != 'store_id'")]
        sessions = [s for (s,) in reader.query("SELECT id FROM sessions")]
    first = {p.relative_to(tmp_path / "first"): p.read_bytes() for p in (tmp_path / "first").rglob("*") if p.is_file()}
    second = {p.relative_to(tmp_path / "second"): p.read_bytes() for p in (tmp_path / "second").rglob("*") if p.is_file()}
    assert first == second  # the same ids, names and bytes for the same store
    everything = b"".join(str(name).encode() + content for name, content in first.items())
    for patient in patients:
        for trace in (patient.code, patient.code.replace("-", ""), patient.code[4:].replace("-", ""), patient.id):
            assert trace.encode() not in everything, f"{trace} leaked into the retraining export"
    assert secrets  # the pseudonym key: kept in the store, never exported (the store id is the campaign)
    for trace in secrets + sessions:
        assert trace.encode() not in everything
    dataset = load_circor(tmp_path / "first")
    assert dataset.problems == []
    ids = [p.patient_id for p in dataset.patients]
    assert all(i.isdigit() and len(i) == 15 for i in ids) and len(set(ids)) == 2
    rows = list(csv.DictReader(io.StringIO(first[Path("training_data.csv")].decode())))
    assert [r["Patient ID"] for r in rows] == sorted(ids)  # not the order of registration
    by_age = {p.demographics.age_group: p for p in dataset.patients}
    assert set(by_age) == {"Child", "Adolescent"}  # the patient without reuse consent is absent
    child = by_age["Child"]
    assert child.demographics == ERASED
    assert sorted((r.site, r.repeat) for r in child.recordings) == [("AV", 0), ("AV", 1), ("MV", 0)]
