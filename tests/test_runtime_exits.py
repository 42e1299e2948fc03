"""Every command ends with a sentence and an exit code, never a traceback, and keeps what was
recorded: Ctrl-C mid-recording, a full disk, malformed files and flags, a stethoscope that restarts.

Each case runs the real command in a subprocess (or the real ScreeningBox on a real full file
system) the way the hostile tester did.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from firmware_bridge.emulator import Emulator
from runtime.cli import TerminalView
from runtime.records import Demographics
from runtime.screening import ScreeningBox
from runtime.store import DiskFullError, Store

RUNTIME = [sys.executable, "-m", "runtime.cli"]
TRAIN = [sys.executable, "-m", "trainer.crossval"]


def run(command: list[str], timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)


def assert_sentence(done: subprocess.CompletedProcess, code: int, *phrases: str) -> None:
    assert done.returncode == code, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, done.stderr[-2000:]
    for phrase in phrases:
        assert phrase in done.stderr, done.stderr[-2000:]


@pytest.mark.parametrize("content, phrase", [
    (b"\xff\xfe{\x00", "not a UTF-8 text file"),
    (b'{"height_cm": 1' + b"0" * 5000 + b"}", "not valid JSON"),
    (b"[" * 100_000, "not valid JSON"),
    (b'{"height_cm": 12', "not valid JSON"),
])
def test_a_malformed_demographics_file_is_a_sentence(tmp_path, content, phrase):
    path = tmp_path / "patient.json"
    path.write_bytes(content)
    done = run(RUNTIME + ["--db", str(tmp_path / "store"), "--demographics", str(path), "--yes", "--no-model"])
    assert_sentence(done, 2, f"--demographics {path}: {phrase}")
    assert not (tmp_path / "store").exists()  # refused before anything was opened


@pytest.mark.parametrize("flags, phrase", [
    (["--operating-point", "sensitive"], "--operating-point 'sensitive' is not one of this model's"),
    (["--speed", "0"], "--speed"),
    (["--speed", "nan"], "--speed"),
    (["--kiosk", "--port", "99999"], "--port must be from 0 to 65535"),
    (["--seconds", "-1"], "--seconds"),
    (["--retakes", "-2"], "--retakes"),
])
def test_impossible_flags_are_a_sentence(tmp_path, flags, phrase):
    done = run(RUNTIME + ["--db", str(tmp_path / "store"), "--yes", "--no-consent", *flags])
    assert_sentence(done, 2, phrase)


def test_an_unknown_operating_point_is_refused_by_triage_too(tmp_path):
    (tmp_path / "wavs").mkdir()
    done = run(RUNTIME + ["triage", str(tmp_path / "wavs"), "--out", str(tmp_path / "out.csv"),
                          "--operating-point", "sensitive"])
    assert_sentence(done, 2, "pcg-runtime triage: --operating-point 'sensitive' is not one of this model's")


@pytest.mark.parametrize("flags, phrase", [
    (["--folds", "1"], "--folds must be a whole number from 2 to 100"),
    (["--folds", "x"], "--folds must be a whole number from 2 to 100"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--lr", "0"], "--lr must be in"),
    (["--extra-share", "1.5"], "--extra-share must be in"),
])
def test_pcg_train_refuses_numbers_no_run_could_use(tmp_path, flags, phrase):
    pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[train]'); pcg-train needs it")
    done = run(TRAIN + ["--data", str(tmp_path), "--out", str(tmp_path / "run"), *flags])
    assert_sentence(done, 2, phrase)


def test_without_a_model_and_without_a_store_nothing_is_said_to_be_stored():
    done = run(RUNTIME + ["--no-model", "--no-store", "--yes", "--speed", "50", "--seconds", "6"])
    assert done.returncode == 0, done.stderr
    assert "nothing was stored" in done.stdout
    assert "is stored" not in done.stdout and "are stored" not in done.stdout


def test_ctrl_c_mid_recording_ends_with_a_sentence_and_keeps_the_visit(tmp_path):
    store_root = tmp_path / "store"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    victim = subprocess.Popen(RUNTIME + ["--db", str(store_root), "--yes", "--consent", "--no-model", "--speed", "1",
                                         "--seconds", "20", "--age-group", "Child"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        code = None
        for line in victim.stdout:  # wait until the patient is registered and recording has begun
            if line.startswith("patient code "):
                code = line.split()[2]
                break
        assert code is not None
        time.sleep(2.5)
        victim.send_signal(signal.SIGINT)
        _, stderr = victim.communicate(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert "stopped (Ctrl-C); what was recorded is kept" in stderr
    assert f"--resume {code}" in stderr
    with Store.open(store_root) as store:
        (interrupted,) = store.resume()
        assert interrupted.patient.code == code
        (recording,) = interrupted.recordings
        assert recording.status == "interrupted" and recording.stop_reason == "operator_interrupt"
        assert recording.samples_written > 0


def test_a_full_disk_mid_recording_is_not_masked_by_the_event_log(tiny_tmpfs):
    """The WAV fills the disk: the box raises the store's DiskFullError (a sentence), and closing
    it (which logs the link counters) does not raise sqlite3's error over it."""
    with Emulator(link=tiny_tmpfs / "stethoscope", seed=3, speed=50) as emulator:
        store = Store.open(tiny_tmpfs / "store", min_free_bytes=0, recording_reserve_bytes=0)
        try:
            box = ScreeningBox(emulator.path, store=store, model=None, seconds_per_site=100)
            with pytest.raises(DiskFullError) as caught:
                with box:
                    box.connect()
                    visit = box.begin_patient(Demographics(age_group="Child"), consent=True)
                    filler = tiny_tmpfs / "filler.bin"
                    with open(filler, "wb") as f:  # leave about 150 kB: a few seconds of 4 kHz audio
                        f.write(np.zeros(max(0, _free(tiny_tmpfs) - 150_000), np.uint8).tobytes())
                    box.record_site(visit, "AV")
            assert "disk" in str(caught.value)
            assert box.session is None  # closed despite the full disk
            filler.unlink()  # the operator frees space; the recording is there, valid
            (interrupted,) = store.resume()
            (recording,) = interrupted.recordings
            assert recording.status == "interrupted" and recording.samples_written > 0
            assert store.query("PRAGMA integrity_check")[0][0] == "ok"
        finally:
            store.close()


def _free(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def test_a_stethoscope_restart_is_told_to_the_operator_not_a_key_error(capsys):
    """The box emits {"state": "restarted", "site": ...} when the device restarts mid-site
    (runtime.screening.ScreeningBox.record_site); the terminal used to look up 'away_s' in it."""
    view = TerminalView(live=False)
    view({"type": "device", "state": "restarted", "site": "MV", "connected": True, "frames_ok": 10})
    view({"type": "device", "state": "reconnected", "away_s": 1.25, "connected": True})
    err = capsys.readouterr().err
    assert "the stethoscope restarted while recording MV" in err
    assert "reconnected after 1.2 s" in err


def test_demographics_file_values_are_checked_against_the_age_group(tmp_path):
    path = tmp_path / "patient.json"
    path.write_text(json.dumps({"age_group": "Neonate", "height_cm": 229, "weight_kg": 249}))
    done = run(RUNTIME + ["--db", str(tmp_path / "store"), "--demographics", str(path), "--yes", "--consent",
                          "--no-model", "--speed", "50"])
    assert_sentence(done, 2, "implausible for age group Neonate")
    with Store.open(tmp_path / "store") as store:
        assert store.query("SELECT COUNT(*) FROM patients")[0][0] == 0


def test_store_and_export_paths_that_cannot_work_are_a_sentence(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = run(RUNTIME + ["--db", str(blocker / "store"), "--yes", "--no-model", "--speed", "50"])
    assert_sentence(done, 2, f"cannot create or open the store at {blocker / 'store'}")
    store_root = tmp_path / "store"
    Store.open(store_root).close()
    done = run(RUNTIME + ["export", "--db", str(store_root), "--out", str(blocker / "out")])
    assert_sentence(done, 2, f"cannot write to {blocker / 'out'}")
    done = run(RUNTIME + ["export", "--db", str(store_root), "--out", str(tmp_path / "out"), "--after", "9" * 30])
    assert_sentence(done, 2, "--after must be a sequence number")
    done = run(RUNTIME + ["--db", str(store_root), "--resume", "PCG-AAAA-AA", "--yes", "--no-model"])
    assert_sentence(done, 2, "no visit is open to continue")


@pytest.mark.parametrize("command", [[], ["triage"], ["export"], ["model"]])
def test_every_command_prints_the_package_version_and_the_bundled_model(command):
    from runtime.version import bundled_model_id, package_version

    done = run(RUNTIME + command + ["--version"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"pcg-runtime {package_version()}; bundled model {bundled_model_id()}"
    assert "graph " in done.stdout and "unreadable" not in done.stdout
