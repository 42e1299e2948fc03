"""runtime.screening end to end: the virtual stethoscope over a real pseudo-terminal, a real SQLite
store, corrupted bytes, an unplug mid-site, and a process killed mid-recording then restarted."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from firmware_bridge.emulator import Emulator, Faults
from firmware_bridge.heart import HeartSoundGenerator, random_profile
from firmware_bridge.host import ProtocolVersionError, SampleRateError
from runtime.formats.wav import write_wav
from runtime.records import Audio, Demographics
from runtime.screening import ScreeningBox, ScreeningError
from runtime.store import InvalidDemographicsError, Store

RATE = 4000


def heart_wav(path: Path, seconds: float, seed: int = 4) -> np.ndarray:
    """A long heart-sound WAV for the emulator to stream: link sample k is samples[k % n]."""
    profile = random_profile(np.random.default_rng(seed), "Child")
    samples = HeartSoundGenerator(profile, "AV", RATE, seed).read(int(seconds * RATE))
    write_wav(path, Audio(samples, RATE))
    return samples


def stored_indices(record) -> np.ndarray:
    """The link sample index of every stored sample: from the first index on, skipping the gaps."""
    indices, next_index, gaps = [], record.first_sample_index, list(record.gaps)
    while len(indices) < record.samples_written:
        if gaps and next_index == gaps[0][0]:
            next_index += gaps.pop(0)[1]
            continue
        stop = gaps[0][0] if gaps else next_index + record.samples_written - len(indices)
        take = min(stop - next_index, record.samples_written - len(indices))
        indices.extend(range(next_index, next_index + take))
        next_index += take
    return np.array(indices)


def test_corruption_and_an_unplug_mid_site_lose_only_what_the_link_lost(tmp_path):
    source = heart_wav(tmp_path / "source.wav", 60.0)
    faults = Faults(bit_flip_rate=2e-5, disconnect_every_s=4.0, reconnect_after_s=0.4)
    events = []
    with Emulator(link=tmp_path / "steth", wav=[tmp_path / "source.wav"], speed=8, faults=faults) as emulator, \
            Store.open(tmp_path / "db") as store:
        with ScreeningBox(emulator.path, store=store, seconds_per_site=3.0, listener=events.append) as box:
            box.connect()
            visit = box.begin_patient(Demographics(age_group="Child"), consent=True)
            for site in ("AV", "PV", "TV", "MV"):
                box.record_site(visit, site)
            result = box.finish(visit)
            link = box.device_status()
        records = store.recordings(store.session(visit.session_id))
        kinds = [k for (k,) in store.query("SELECT kind FROM device_events ORDER BY seq")]
        assert store.query("PRAGMA integrity_check")[0][0] == "ok"
        audio = {r.site: store.read_audio(r).samples for r in records}
    assert [r.site for r in records] == ["AV", "PV", "TV", "MV"]
    assert emulator.summary()["disconnects"] >= 2 and link["reconnects"] >= 1
    assert link["crc_errors"] + link["gaps"] > 0
    assert kinds.count("device_disconnected") == kinds.count("device_reconnected") == link["reconnects"]
    states = [e["state"] for e in events if e["type"] == "device"]
    assert states[0] == "connected" and "disconnected" in states and states[-1] != "disconnected"
    gap_samples = 0
    for record in records:
        assert record.status == "complete" and record.samples_written == 3 * RATE
        # every stored sample is the source sample at its link index: nothing corrupted, nothing shifted
        assert np.array_equal(audio[record.site], source[stored_indices(record) % len(source)])
        gap_samples += sum(count for _, count in record.gaps)
    assert gap_samples > 0  # the unplugs and bit flips inside recordings are stored as gaps
    assert gap_samples == sum(s["samples_lost"] for s in (r.to_dict() for r in visit.sites.values()))
    assert result.decision in (None, "RETAKE")  # no model here: stored, but no decision


def test_demographics_that_cannot_be_true_are_refused_before_anything_is_stored(tmp_path):
    with Emulator(link=tmp_path / "steth", seed=1, speed=20) as emulator, Store.open(tmp_path / "db") as store:
        with ScreeningBox(emulator.path, store=store) as box:
            box.connect()
            with pytest.raises(InvalidDemographicsError) as refused:
                box.begin_patient(Demographics(sex="Male", pregnant=True, height_cm=900.0), consent=True)
        assert store.query("SELECT COUNT(*) FROM patients")[0][0] == 0
    assert "height" in str(refused.value) and "pregnancy" in str(refused.value)


def test_without_consent_the_patient_is_screened_but_nothing_is_stored(tmp_path):
    with Emulator(link=tmp_path / "steth", seed=1, speed=20) as emulator, Store.open(tmp_path / "db") as store:
        with ScreeningBox(emulator.path, store=store, seconds_per_site=1.0) as box:
            box.connect()
            visit = box.begin_patient(Demographics(), consent=False)
            recording = box.record_site(visit, "AV")
        assert visit.session_id is None and recording.recording_id is None and len(visit.patient_code) > 4
        assert store.query("SELECT COUNT(*) FROM recordings")[0][0] == 0
    assert recording.features.shape[0] == 48 and recording.seconds == 1.0


@pytest.mark.parametrize("faults, error, words", [
    (Faults(declared_rate_hz=8000), SampleRateError, "8000 Hz"),
    (Faults(declared_rate_hz=2**32 - 1), SampleRateError, "4294967295 Hz"),  # absurd: refused, no filter built
    (Faults(protocol_version=0x20), ProtocolVersionError, "protocol 2.0"),
])
def test_wrong_rate_or_protocol_is_a_clear_error(tmp_path, faults, error, words):
    with Emulator(link=tmp_path / "steth", seed=1, speed=20, faults=faults) as emulator:
        box = ScreeningBox(emulator.path)
        with pytest.raises(error) as refused:
            box.connect()
        assert words in str(refused.value)
        with pytest.raises(ScreeningError, match="not connected"):
            box.record_site(None, "AV")


KILLED_RUN = [sys.executable, "-m", "runtime.cli", "--device", "sim", "--seconds", "4", "--speed", "2",
              "--consent", "--yes", "--no-model", "--json", "--retakes", "0"]


def _wait_for(db: Path, sql: str, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
                    row = conn.execute(sql).fetchone()
                if row is not None:
                    return row
            except sqlite3.OperationalError:
                pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {sql}")


def test_a_process_killed_mid_recording_resumes_its_visit_after_restart(tmp_path):
    root = tmp_path / "db"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    victim = subprocess.Popen(KILLED_RUN + ["--db", str(root)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # the second site has been recording for a while: kill -9, no chance to clean up
        _wait_for(root / "store.sqlite", "SELECT 1 FROM recordings WHERE site = 'PV' AND samples_written >= 4000")
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    restart = [sys.executable, "-m", "runtime.cli", "--device", "sim", "--seconds", "1", "--speed", "20",
               "--yes", "--no-model", "--json", "--retakes", "0", "--db", str(root)]
    # a run that asks nothing cannot confirm who is in front of the stethoscope: refused, naming the visit
    unconfirmed = subprocess.run(restart, env=env, capture_output=True, text=True, timeout=120)
    assert unconfirmed.returncode == 2 and "an unfinished visit is open" in unconfirmed.stderr
    with Store.open(root, read_only=True) as store:
        (code,) = store.query("SELECT code FROM patients")[0]
    assert f"--resume {code}" in unconfirmed.stderr and "sites done: AV" in unconfirmed.stderr
    done = subprocess.run(restart + ["--resume", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert "resuming the interrupted visit" in done.stderr
    with Store.open(root, read_only=True) as store:
        assert store.query("PRAGMA integrity_check")[0][0] == "ok"
        (code,) = store.query("SELECT code FROM patients")[0]
        rows = store.query("SELECT site, status, stop_reason, samples_written FROM recordings ORDER BY seq")
        sessions = store.query("SELECT status FROM sessions")
    assert report["patient_code"] == code and len(sessions) == 1 and sessions[0][0] == "closed"
    statuses = [(r[0], r[1]) for r in rows]
    # AV finished before the kill and is kept; PV was cut (kept as interrupted, every synced sample
    # still in its WAV) and recorded again; TV and MV recorded after the restart
    assert statuses[0] == ("AV", "complete") and statuses[1] == ("PV", "interrupted")
    assert rows[1][2] == "crash" and rows[1][3] >= 4000
    assert statuses[2:] == [("PV", "complete"), ("TV", "complete"), ("MV", "complete")]
    assert [s["site"] for s in report["sites"]] == ["AV", "PV", "TV", "MV"]
    assert report["sites"][0]["seconds"] == 4.0 and report["sites"][1]["seconds"] == 1.0


def test_a_stethoscope_that_restarts_mid_site_has_the_site_recorded_again(tmp_path):
    import threading

    from firmware_bridge import protocol

    events = []
    with Emulator(link=tmp_path / "steth", seed=2, speed=4) as emulator, Store.open(tmp_path / "db") as store:
        with ScreeningBox(emulator.path, store=store, seconds_per_site=2.0, listener=events.append) as box:
            box.connect()
            visit = box.begin_patient(Demographics(), consent=True)
            # a START mid-recording makes the device restart its stream at sample 0, as after a reboot
            threading.Timer(0.3, lambda: box.session.send(protocol.Start())).start()
            recording = box.record_site(visit, "AV")
        rows = store.query("SELECT status, stop_reason, samples_written FROM recordings ORDER BY seq")
        kinds = [k for (k,) in store.query("SELECT kind FROM device_events ORDER BY seq")]
    assert [tuple(r)[:2] for r in rows] == [("interrupted", "device_restart"), ("complete", None)]
    assert rows[0][2] > 0 and rows[1][2] == 2 * RATE  # the cut recording keeps what it had
    assert recording.seconds == 2.0 and recording.recording_id is not None
    assert "device_restarted" in kinds and any(e.get("state") == "restarted" for e in events)


def test_a_site_that_fails_its_first_recording_and_two_retakes_cannot_be_assessed(tmp_path):
    from dataclasses import replace

    from firmware_bridge.heart import synthesize, to_pcm16
    from runtime.screening import MAX_RETAKES_PER_SITE
    from runtime.triage import CANNOT_ASSESS

    # the virtual stethoscope with its sensor disconnected: mains hum and contact bumps, no heart
    rng = np.random.default_rng(5)
    dead, _ = synthesize(replace(random_profile(rng, "Child"), unusable="flat"), "AV", 40.0, RATE, rng)
    write_wav(tmp_path / "dead_AV.wav", Audio(to_pcm16(dead), RATE))
    with Emulator(link=tmp_path / "steth", wav=[tmp_path / "dead_AV.wav"], speed=8) as emulator, \
            Store.open(tmp_path / "db") as store:
        with ScreeningBox(emulator.path, store=store, seconds_per_site=6.0) as box:
            box.connect()
            visit = box.begin_patient(Demographics(age_group="Child"), consent=True)
            results = []
            for _ in range(MAX_RETAKES_PER_SITE + 1):  # the first recording, then each retake
                recording = box.record_site(visit, "AV")
                assert not recording.quality.ok
                results.append(box.finish(visit, keep_open_on_retake=True))
            status_after = store.session(visit.session_id).status
        stored = store.query("SELECT decision, reason FROM results ORDER BY seq")
    assert MAX_RETAKES_PER_SITE == 2
    *retakes, last = results
    for result in retakes:  # the first recording and the first retake failed: retake, the visit stays open
        assert result.decision == "RETAKE" and result.cannot_assess == ()
        assert result.reason.startswith("retake AV: ") and CANNOT_ASSESS not in result.reason
    assert last.decision == "RETAKE" and last.cannot_assess == ("AV",)
    assert last.reason.startswith("cannot assess: refer for clinical auscultation (AV failed")
    assert last.to_dict()["cannot_assess"] == ["AV"]
    assert status_after == "closed"  # no more looping: the visit is over even with keep_open_on_retake
    assert visit.failed_recordings == {"AV": 3}
    assert [tuple(row) for row in stored][-1] == ("RETAKE", last.reason) and len(stored) == 3


def test_low_disk_space_refuses_a_new_patient_with_a_clear_message_and_stores_nothing(tmp_path):
    from runtime.store import LowDiskSpaceError

    free = {"bytes": 10 * 2**30}
    with Emulator(link=tmp_path / "steth", seed=1, speed=20) as emulator, \
            Store.open(tmp_path / "db", min_free_bytes=2**30, free_bytes=lambda: free["bytes"]) as store:
        with ScreeningBox(emulator.path, store=store, seconds_per_site=1.0) as box:
            box.connect()
            first = box.begin_patient(Demographics(), consent=True)
            box.record_site(first, "AV")
            free["bytes"] = 100 * 2**20  # the card is nearly full now
            with pytest.raises(LowDiskSpaceError, match="free"):
                box.begin_patient(Demographics(), consent=True)
        assert store.query("SELECT COUNT(*) FROM patients")[0][0] == 1
        (status,) = store.query("SELECT status FROM recordings")[0]
    assert status == "complete"  # the recording made before is intact


def test_the_operator_chooses_which_open_visit_to_resume(tmp_path):
    root = tmp_path / "db"
    with Store.open(root) as store:
        codes = []
        for _ in range(2):
            patient = store.new_patient(Demographics(age_group="Child"), consent=True)
            store.start_session(patient)
            codes.append(patient.code)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    base = [sys.executable, "-m", "runtime.cli", "--device", "sim", "--seconds", "1", "--speed", "20", "--yes",
            "--no-model", "--json", "--retakes", "0", "--db", str(root)]
    refused = subprocess.run(base + ["--resume", "PCG-0000-00"], env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    done = subprocess.run(base + ["--resume", codes[0].lower()], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["patient_code"] == codes[0]
    assert f"other open visits (resume one with --resume CODE): {codes[1]}" in done.stderr
    with Store.open(root, read_only=True) as store:
        statuses = dict(store.query("SELECT p.code, s.status FROM sessions s JOIN patients p ON p.id = s.patient_id"))
    assert statuses == {codes[0]: "closed", codes[1]: "open"}


def _crashed_visit(root: Path) -> str:
    """Patient A registered with consent, visit open with AV complete: what a crash mid-PV leaves."""
    with Store.open(root) as store:
        patient = store.new_patient(Demographics(age_group="Child", sex="Female", height_cm=120.0, weight_kg=22.0), consent=True)
        session = store.start_session(patient)
        with store.start_recording(session, "AV", RATE) as writer:
            writer.append(np.zeros(RATE, dtype=np.int16))
        return patient.code


def _sessions(root: Path) -> dict:
    with Store.open(root, read_only=True) as store:
        return {code: (status, age) for code, status, age in store.query(
            "SELECT p.code, s.status, d.age_group FROM sessions s JOIN patients p ON p.id = s.patient_id "
            "JOIN demographics d ON d.patient_id = p.id")}


def test_another_patients_details_never_go_into_an_open_visit(tmp_path):
    root = tmp_path / "db"
    code_a = _crashed_visit(root)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    patient_b = [sys.executable, "-m", "runtime.cli", "--device", "sim", "--seconds", "1", "--speed", "20", "--no-model", "--json",
                 "--retakes", "0", "--db", str(root), "--age-group", "Adolescent", "--sex", "M", "--height", "170", "--consent", "--yes"]
    refused = subprocess.run(patient_b, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and code_a in refused.stderr and "--new-patient" in refused.stderr
    assert _sessions(root) == {code_a: ("open", "Child")}  # nothing of B went anywhere
    # naming A's visit with B's details is refused too, with the fields that differ
    named = subprocess.run(patient_b + ["--resume", code_a], env=env, capture_output=True, text=True, timeout=120)
    assert named.returncode == 2 and "not those of patient" in named.stderr and "age group Adolescent given, Child stored" in named.stderr
    assert _sessions(root) == {code_a: ("open", "Child")}
    # --new-patient: A's visit is closed with everything in it kept, and B is registered as B
    new = subprocess.run(patient_b + ["--new-patient"], env=env, capture_output=True, text=True, timeout=120)
    assert new.returncode == 0, new.stderr
    code_b = json.loads(new.stdout)["patient_code"]
    assert code_b != code_a and _sessions(root) == {code_a: ("closed", "Child"), code_b: ("closed", "Adolescent")}
    with Store.open(root, read_only=True) as store:
        kept = store.query("SELECT COUNT(*) FROM recordings r JOIN sessions s ON s.id = r.session_id "
                           "JOIN patients p ON p.id = s.patient_id WHERE p.code = ?", (code_a,))[0][0]
        events = [json.loads(d) for k, d in store.query("SELECT kind, detail FROM device_events") if k == "session_closed_unfinished"]
    assert kept == 1 and events[0]["patient"] == code_a and "--new-patient" in events[0]["reason"]


@pytest.mark.parametrize("answer, continued", [("y\n", True), ("n\n", False), ("\nmaybe\nn\n", False)])
def test_the_terminal_asks_whether_the_child_is_the_open_visits_patient(tmp_path, monkeypatch, capsys, answer, continued):
    import io
    from types import SimpleNamespace

    from runtime.cli import open_visit_to_continue

    root = tmp_path / "db"
    code_a = _crashed_visit(root)
    monkeypatch.setattr(sys, "stdin", io.StringIO(answer))
    args = SimpleNamespace(resume=None, new_patient=False)
    with Store.open(root) as store, ScreeningBox("unused", store=store) as box:
        visit = open_visit_to_continue(box, args, {}, None, True, print)
    shown = capsys.readouterr().out
    assert f"An unfinished visit is open: patient {code_a} (Child, Female, 120 cm, 22 kg" in shown and "sites done: AV" in shown
    assert (visit is not None) == continued
    assert _sessions(root)[code_a][0] == ("open" if continued else "closed")
    if continued:
        assert visit.patient_code == code_a and list(visit.sites) == ["AV"]
