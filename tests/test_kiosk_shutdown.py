"""The kiosk stops within 2 s of SIGTERM in every state, with exit status 0 and its store intact
(issue 16, item 6: the systemd unit kills it 20 s after SIGTERM, and an unplugged stethoscope used
to hold it for 30 s); the terminal program stops on SIGTERM as on Ctrl-C (exit 143, visit kept).

Each state is reached in the real program, run as its own process on the virtual stethoscope (or a
port that is missing or never answers); the time is measured from the signal to the exit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from kiosk_fixtures import REPO_ROOT, EventStream, kiosk_process

from firmware_bridge.emulator import Emulator, Faults
from runtime.store import Store

#: The issue's requirement, measured from the signal to the end of the process.
STOP_LIMIT_S = 2.0
PATIENT = {"consent": True, "age_group": "Child", "sex": "Female", "height_cm": 121.5, "weight_kg": 24, "pregnant": None}


def stop_and_time(kiosk, expected_status: int = 0) -> float:
    """SIGTERM the program; its exit status and the seconds it took (asserted under STOP_LIMIT_S)."""
    started = time.monotonic()
    kiosk.process.send_signal(signal.SIGTERM)
    status = kiosk.process.wait(timeout=60)
    took = time.monotonic() - started
    print(f"stopped {took:.2f} s after SIGTERM")
    errors = kiosk.stderr()
    assert status == expected_status, errors[-2000:]
    assert "Traceback" not in errors, errors[-2000:]
    assert took < STOP_LIMIT_S, f"stopped {took:.2f} s after SIGTERM (at most {STOP_LIMIT_S:g} s allowed)"
    return took


def stop_once_unplugged(kiosk, site: str, after_s: float = 0.0) -> None:
    """A patient, a recording at `site`, the stethoscope reported unplugged during it, `after_s`
    seconds of waiting for it to come back, then SIGTERM (stop_and_time)."""
    events = EventStream(kiosk.url)
    try:
        events.wait_for(lambda e: e["type"] == "device" and e.get("connected"))
        assert kiosk.request("POST", "/api/patients", PATIENT)[0] == 201
        assert kiosk.request("POST", "/api/visit/record", {"site": site})[0] == 202
        events.wait_for(lambda e: e["type"] == "device" and e.get("state") == "disconnected")
        time.sleep(after_s)
        stop_and_time(kiosk)
    finally:
        events.close()


def intact(root) -> Store:
    store = Store.open(root, read_only=True)
    assert store.query("PRAGMA integrity_check")[0][0] == "ok"
    return store


def test_idle_with_the_stethoscope_connected(tmp_path):
    with kiosk_process("--device", "sim", "--db", str(tmp_path / "store")) as kiosk:
        events = EventStream(kiosk.url)
        try:
            events.wait_for(lambda e: e["type"] == "device" and e.get("connected"))
            stop_and_time(kiosk)
        finally:
            events.close()
    with intact(tmp_path / "store") as store:
        assert store.query("SELECT COUNT(*) FROM patients")[0][0] == 0


def test_recording(tmp_path):
    """Mid-recording: the recording is kept as interrupted and the visit stays open to continue."""
    with kiosk_process("--device", "sim", "--speed", "1", "--seconds", "30", "--db", str(tmp_path / "store")) as kiosk:
        events = EventStream(kiosk.url)
        try:
            events.wait_for(lambda e: e["type"] == "device" and e.get("connected"))
            status, _, visit = kiosk.request("POST", "/api/patients", PATIENT)
            assert status == 201
            assert kiosk.request("POST", "/api/visit/record", {"site": "AV"})[0] == 202
            events.wait_for(lambda e: e["type"] == "level" and e["elapsed_s"] >= 1.0)
            stop_and_time(kiosk)
        finally:
            events.close()
    with intact(tmp_path / "store") as store:
        (interrupted,) = store.resume()
        assert interrupted.patient.code == visit["patient_code"]
        (recording,) = interrupted.recordings
        assert (recording.status, recording.stop_reason) == ("interrupted", "box_stopped")
        assert recording.samples_written >= 4000  # the second recorded before the signal is kept


def test_stethoscope_unplugged_while_idle(tmp_path):
    """The 30 s case: the box waits up to 60 s for an unplugged stethoscope to come back. The cable
    is pulled once the kiosk is connected (the emulator stops: its port disappears, as a USB one does)."""
    with Emulator(link=tmp_path / "stethoscope", seed=1) as emulator:
        with kiosk_process("--device", emulator.path, "--db", str(tmp_path / "store")) as kiosk:
            events = EventStream(kiosk.url)
            try:
                events.wait_for(lambda e: e["type"] == "device" and e.get("connected"))
                emulator.stop()
                events.wait_for(lambda e: e["type"] == "device" and e.get("state") == "disconnected")
                time.sleep(1.0)  # well into the reconnect backoff
                stop_and_time(kiosk)
            finally:
                events.close()
    intact(tmp_path / "store").close()


def test_stethoscope_unplugged_while_recording(tmp_path):
    faults = Faults(unplug_at_site="AV", unplug_after_s=1.0, reconnect_after_s=600.0)
    with Emulator(link=tmp_path / "stethoscope", seed=1, faults=faults) as emulator:
        with kiosk_process("--device", emulator.path, "--seconds", "30", "--db", str(tmp_path / "store")) as kiosk:
            stop_once_unplugged(kiosk, "AV", after_s=1.0)
    with intact(tmp_path / "store") as store:
        (interrupted,) = store.resume()
        (recording,) = interrupted.recordings
        assert recording.status == "interrupted" and recording.samples_written > 0


def test_practice_unplug_scenario_mid_recording(tmp_path):
    """The same on `--device sim --scenario unplug`, the emulator inside the program."""
    with kiosk_process("--device", "sim", "--scenario", "unplug", "--speed", "1", "--seconds", "10",
                       "--db", str(tmp_path / "store")) as kiosk:
        stop_once_unplugged(kiosk, "PV")
    assert not (tmp_path / "store").exists()  # practice never touches the box's store


def test_stethoscope_missing(tmp_path):
    with kiosk_process("--device", str(tmp_path / "no-stethoscope-here"), "--db", str(tmp_path / "store")) as kiosk:
        events = EventStream(kiosk.url)
        try:
            failed = events.wait_for(lambda e: e["type"] == "device" and e.get("state") == "failed")
            assert "no-stethoscope-here" in failed["error"]
            stop_and_time(kiosk)
        finally:
            events.close()
    intact(tmp_path / "store").close()


def test_waiting_for_a_device_that_does_not_answer(tmp_path):
    """A port that opens but never sends DEVICE_INFO: the box waits 2 s for it, then reports it."""
    master, slave = os.openpty()
    try:
        with kiosk_process("--device", os.ttyname(slave), "--db", str(tmp_path / "store")) as kiosk:
            status, _, state = kiosk.request("GET", "/api/state")
            assert status == 200 and state["device"]["state"] == "connecting"
            stop_and_time(kiosk)
    finally:
        os.close(slave)
        os.close(master)
    intact(tmp_path / "store").close()


def test_a_result_on_screen(tmp_path):
    with kiosk_process("--device", "sim", "--speed", "50", "--seconds", "6", "--db", str(tmp_path / "store")) as kiosk:
        events = EventStream(kiosk.url)
        try:
            events.wait_for(lambda e: e["type"] == "device" and e.get("connected"))
            assert kiosk.request("POST", "/api/patients", PATIENT)[0] == 201
            for site in ("AV", "PV", "TV", "MV"):
                assert kiosk.request("POST", "/api/visit/record", {"site": site})[0] == 202
                events.wait_for(lambda e: e["type"] in ("site_done", "recording_failed") and e["site"] == site)
            status, _, result = kiosk.request("POST", "/api/visit/finish", {})
            assert status == 200 and result["decision"] in ("REFER", "NO_REFER", "RETAKE")
            stop_and_time(kiosk)
        finally:
            events.close()
    with intact(tmp_path / "store") as store:
        assert store.query("SELECT decision FROM results")[0][0] == result["decision"]
        assert store.query("SELECT status FROM sessions")[0][0] == "closed"


class _Terminal:
    """The terminal program (`pcg-runtime --device ...`) as its own process."""

    def __init__(self, *flags: str):
        self.process = subprocess.Popen([sys.executable, "-m", "runtime.cli", "--yes", *flags], cwd=REPO_ROOT,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)

    def wait_for_line(self, stream, start: str) -> str:
        for line in stream:
            if start in line:
                return line
        raise AssertionError(f"the program ended without saying {start!r}: exit {self.process.wait()}")


@pytest.mark.parametrize("unplugged", [False, True], ids=["recording", "unplugged-mid-recording"])
def test_the_terminal_program_stops_on_sigterm_as_on_ctrl_c(tmp_path, unplugged):
    faults = Faults(unplug_at_site="AV", unplug_after_s=1.0, reconnect_after_s=600.0) if unplugged else Faults()
    with Emulator(link=tmp_path / "stethoscope", seed=1, faults=faults) as emulator:
        terminal = _Terminal("--device", emulator.path, "--db", str(tmp_path / "store"), "--consent", "--no-model",
                             "--seconds", "30", "--age-group", "Child")
        try:
            code = terminal.wait_for_line(terminal.process.stdout, "patient code ").split()[2]
            if unplugged:
                terminal.wait_for_line(terminal.process.stderr, "stethoscope disconnected")
            time.sleep(1.5)
            started = time.monotonic()
            terminal.process.send_signal(signal.SIGTERM)
            _, stderr = terminal.process.communicate(timeout=60)
            took = time.monotonic() - started
        finally:
            if terminal.process.poll() is None:
                terminal.process.kill()
                terminal.process.wait()
    print(f"stopped {took:.2f} s after SIGTERM")
    assert terminal.process.returncode == 143, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    assert "stopped (SIGTERM); what was recorded is kept" in stderr and f"--resume {code}" in stderr
    assert took < STOP_LIMIT_S, f"stopped {took:.2f} s after SIGTERM (at most {STOP_LIMIT_S:g} s allowed)"
    with intact(tmp_path / "store") as store:
        (interrupted,) = store.resume()
        (recording,) = interrupted.recordings
        assert recording.status == "interrupted" and recording.samples_written > 0
