"""The emulator through real pseudo-terminals and sockets, driven by pyserial and DeviceSession."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from firmware_bridge import protocol as p
from firmware_bridge.emulator import Emulator, Faults, HeartSource
from firmware_bridge.host import DeviceSession, DeviceTimeout, Disconnected, ProtocolVersionError, SampleRateError

serial = pytest.importorskip("serial", reason="pyserial (a runtime dependency) is needed to open ports")

RATE = p.DEFAULT_RATE_HZ
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _collect(session: DeviceSession, samples: int, timeout_s: float = 20.0, reconnect: bool = False):
    """Read events until `samples` samples have been accounted for (received or reported lost)."""
    events, reconnects = [], 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            events += session.read()
        except Disconnected:
            if not reconnect:
                raise
            session.reconnect()
            reconnects += 1
        if session.decoder.expected_index and session.decoder.expected_index >= samples:
            return events, reconnects
    raise AssertionError(f"only {session.decoder.expected_index} samples within {timeout_s} s")


def _check_stream(events, seed: int):
    """Chunks and gaps tile the stream from 0, and every delivered sample is the right one."""
    reference = HeartSource(RATE, seed).generators["AV"].read(200_000)
    position = 0
    for event in events:
        if isinstance(event, p.Gap):
            assert event.first_missing == position
            position += event.count
        elif isinstance(event, p.AudioChunk):
            assert event.first_index == position
            assert np.array_equal(event.samples, reference[event.first_index : event.end_index])
            position = event.end_index
    return position


def test_pty_symlink_session_streams_the_heart_model(tmp_path):
    with Emulator(link=tmp_path / "stethoscope", speed=8, seed=11) as emu:
        assert os.path.islink(emu.path) and os.readlink(emu.path).startswith("/dev/pts/")
        with DeviceSession(emu.path) as session:
            info = session.connect()
            assert info == p.DeviceInfo((1, 0, 0), RATE, 16, 1, 0)
            events, _ = _collect(session, 3 * RATE)
        assert emu.error is None
    assert _check_stream(events, seed=11) >= 3 * RATE
    assert not any(isinstance(e, p.Gap) for e in events)
    assert not os.path.lexists(tmp_path / "stethoscope")  # stop() removes the link


def test_plain_pyserial_on_the_symlink_speaks_the_protocol(tmp_path):
    with Emulator(link=tmp_path / "s", speed=4, seed=2) as emu:
        port = serial.Serial(emu.path, 115200, timeout=0.05)
        try:
            port.reset_input_buffer()
            port.write(p.encode(p.Start()))
            decoder = p.Decoder()
            events = []
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not any(isinstance(e, p.AudioChunk) for e in events):
                events += decoder.feed(port.read(4096))
        finally:
            port.close()
    assert isinstance(events[0], p.DeviceInfo)
    assert any(isinstance(e, p.AudioChunk) and e.first_index == 0 for e in events)


def test_unplug_and_reconnect_through_the_symlink_reports_the_gap(tmp_path):
    faults = Faults(disconnect_every_s=2.0, reconnect_after_s=0.5)
    with Emulator(link=tmp_path / "stethoscope", speed=8, seed=3, faults=faults) as emu:
        with DeviceSession(emu.path) as session:
            session.connect()
            events, reconnects = _collect(session, 7 * RATE, reconnect=True)
        link_kept = os.readlink(emu.path).startswith("/dev/pts/")
        summary = emu.summary()
    assert reconnects >= 2 and summary["disconnects"] >= 2
    assert link_kept  # each reconnect is a new /dev/pts node (the kernel may reuse the number)
    gaps = [e for e in events if isinstance(e, p.Gap)]
    assert len(gaps) >= 2
    # Each outage is about 0.5 device-s (2000 samples, give or take one emulator tick); what sat
    # unread in the old pty is lost too.
    assert all(1000 <= g.count <= 2000 + 8 * RATE for g in gaps)
    assert _check_stream(events, seed=3) >= 7 * RATE


def test_tcp_session_with_reconnect(tmp_path):
    faults = Faults(disconnect_every_s=1.5, reconnect_after_s=0.3)
    with Emulator(tcp_port=0, speed=8, seed=4, faults=faults) as emu:
        assert emu.path.startswith("socket://127.0.0.1:")
        with DeviceSession(emu.path) as session:
            session.connect()
            events, reconnects = _collect(session, 4 * RATE, reconnect=True)
    assert reconnects >= 1
    assert any(isinstance(e, p.Gap) for e in events)
    assert _check_stream(events, seed=4) >= 4 * RATE


def test_frames_the_link_delivers_twice_are_dropped_not_taken_for_restarts(tmp_path):
    faults = Faults(duplicate_rate=0.05)
    with Emulator(link=tmp_path / "stethoscope", speed=8, seed=12, faults=faults) as emu:
        with DeviceSession(emu.path) as session:
            session.connect()
            events, _ = _collect(session, 3 * RATE)
        duplicated = emu.summary()["frames_duplicated"]
    assert _check_stream(events, seed=12) >= 3 * RATE  # every chunk once, in order
    stats = session.decoder.stats
    assert stats.restarts == 0 and not any(isinstance(e, p.Gap) for e in events)
    assert duplicated > 0 and 0 < stats.duplicates <= duplicated


def test_set_site_over_the_link_is_acknowledged(tmp_path):
    with Emulator(link=tmp_path / "s", speed=4, seed=6) as emu, DeviceSession(emu.path) as session:
        session.connect()
        session.set_site("TV")
        deadline = time.monotonic() + 5
        acks = []
        while time.monotonic() < deadline and not acks:
            acks = [e for e in session.read() if isinstance(e, p.SiteEvent)]
    assert acks[0].site == "TV" and acks[0].source == p.SITE_SOURCE_HOST


def test_wrong_sample_rate_is_refused_with_both_rates_named(tmp_path):
    with Emulator(link=tmp_path / "s", speed=4, faults=Faults(declared_rate_hz=8000)) as emu:
        with DeviceSession(emu.path) as session, pytest.raises(SampleRateError, match="8000 Hz.*4000 Hz"):
            session.connect()


def test_unknown_protocol_version_is_refused_with_advice(tmp_path):
    with Emulator(link=tmp_path / "s", speed=4, faults=Faults(protocol_version=0x20)) as emu:
        with DeviceSession(emu.path) as session, pytest.raises(ProtocolVersionError, match="speaks protocol 2.0"):
            session.connect()


def test_silent_port_times_out_with_advice(tmp_path):
    master, slave = os.openpty()
    try:
        with DeviceSession(os.ttyname(slave), timeout_s=0.3) as session, pytest.raises(DeviceTimeout, match="no DEVICE_INFO"):
            session.connect()
    finally:
        os.close(master)
        os.close(slave)


def test_missing_port_is_a_clear_error(tmp_path):
    with pytest.raises(Disconnected, match="cannot open stethoscope port"):
        DeviceSession(str(tmp_path / "absent")).open()


def test_cli_emulate_and_sniff_over_tcp():
    env = {**os.environ, "PYTHONPATH": REPO}
    emulate = subprocess.Popen(
        [sys.executable, "-m", "firmware_bridge.cli", "emulate", "--tcp", "0", "--speed", "4", "--duration", "3",
         "--flip-rate", "3e-4", "--seed", "9"],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    try:
        url = emulate.stdout.readline().strip()
        assert url.startswith("socket://127.0.0.1:")
        sniff = subprocess.run(
            [sys.executable, "-m", "firmware_bridge.cli", "sniff", "--device", url, "--start", "--duration", "1.5",
             "--stats-every", "1"],
            capture_output=True, text=True, env=env, timeout=30,
        )
    finally:
        rest, _ = emulate.communicate(timeout=30)
    lines = sniff.stdout.splitlines()
    assert sniff.returncode == 0, sniff.stderr
    assert any("DEVICE_INFO firmware=1.0.0 rate=4000Hz" in line for line in lines)
    assert sum("AUDIO" in line for line in lines) > 50
    assert any("!! DROPPED" in line for line in lines) and any("!! GAP" in line for line in lines)
    assert lines[-1].startswith("-- frames=")
    assert '"bits_flipped"' in rest and emulate.returncode == 0


def test_cli_emulate_prints_the_link_and_a_summary(tmp_path):
    link = tmp_path / "stethoscope"
    out = subprocess.run(
        [sys.executable, "-m", "firmware_bridge.cli", "emulate", "--link", str(link), "--duration", "0.5"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO}, timeout=30,
    )
    assert out.returncode == 0, out.stderr
    first, last = out.stdout.splitlines()[0], out.stdout.splitlines()[-1]
    assert first == str(link) and '"summary"' in last


def test_a_spurious_empty_read_on_a_live_pty_is_not_an_unplug_but_a_vanished_port_is(tmp_path, monkeypatch):
    import serial

    with Emulator(link=tmp_path / "steth", seed=1, speed=20) as emulator:
        with DeviceSession(emulator.path) as session:
            session.connect()
            session.read()  # what arrived with DEVICE_INFO
            real_read = session._serial.read
            glitches = iter([True, True])

            def read_with_glitches(n):
                if next(glitches, False):  # what pyserial raises when select and read disagree on a pty
                    raise serial.SerialException("device reports readiness to read but returned no data")
                return real_read(n)

            monkeypatch.setattr(session._serial, "read", read_with_glitches)
            assert session.read() == [] and session.read() == []  # tolerated: the pty is still there
            deadline = time.monotonic() + 5
            while not any(isinstance(e, p.AudioChunk) for e in session.read()):
                assert time.monotonic() < deadline
            monkeypatch.setattr(session._serial, "read", lambda n: (_ for _ in ()).throw(
                serial.SerialException("device reports readiness to read but returned no data")))
            emulator.stop()  # the pty and its symlink are gone: now it is an unplug
            with pytest.raises(Disconnected, match="went away"):
                session.read()


def test_a_port_whose_other_end_vanished_is_a_disconnect_not_a_termios_error():
    """pyserial's flush (tcdrain) and reset_input_buffer (tcflush) raise termios.error, not an
    OSError, on a pseudo-terminal whose other end has closed: the session says Disconnected."""
    master, slave = os.openpty()
    session = DeviceSession(os.ttyname(slave)).open()
    try:
        os.close(master)
        session._serial.write = lambda data: len(data)  # as if the bytes were queued before the end vanished
        with pytest.raises(Disconnected, match="went away while sending"):
            session.send(p.Stop())
        with pytest.raises(Disconnected, match="went away"):
            session._flush()
    finally:
        session.__exit__(None, None, None)  # and closing it raises nothing either
        os.close(slave)
    assert session._serial is None
