"""A recorder process killed with SIGKILL mid-recording: the store and the audio survive, and the session continues."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from runtime.formats.wav import read_wav
from runtime.store import Store

REPO_ROOT = Path(__file__).resolve().parents[1]
RATE_HZ = 4000
CHUNK = 80  # 20 ms, as the stethoscope link delivers it

# The child records forever, reporting after each append how many samples it has handed over.
RECORDER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from runtime.records import Demographics
    from runtime.store import Store

    root, rate_hz, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = Store.open(root, min_free_bytes=0)
    patient = store.new_patient(Demographics(age_group="Child", sex="Male"), consent=True)
    session = store.start_session(patient)
    store.log_event("connect", {"port": "sim"}, session=session)
    writer = store.start_recording(session, "MV", rate_hz)
    total = 0
    while True:
        writer.append((np.arange(total, total + chunk) % 30011).astype(np.int16))
        total += chunk
        print(total, flush=True)
    """
)


def expected_audio(n: int) -> np.ndarray:
    return (np.arange(n) % 30011).astype(np.int16)


def test_sigkill_mid_recording_loses_at_most_a_second_and_the_session_continues(tmp_path):
    root = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", RECORDER, str(root), str(RATE_HZ), str(CHUNK)],
        stdout=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT,
    )
    reported = 0
    try:
        for line in child.stdout:
            reported = int(line)
            if reported >= 3 * RATE_HZ + RATE_HZ // 3:  # 3.33 s: a few syncs behind it, part of a second after
                break
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert reported >= 3 * RATE_HZ, "the recorder died before it had recorded"

    with Store.open(root, min_free_bytes=0) as store:
        assert store.query("PRAGMA integrity_check")[0][0] == "ok"
        interrupted = store.resume()
        assert len(interrupted) == 1
        (recording,) = interrupted[0].interrupted
        assert (recording.site, recording.status, recording.stop_reason) == ("MV", "interrupted", "crash")

        audio = read_wav(store.wav_path(recording))  # parses: the header matches the data
        n = len(audio.samples)
        assert audio.rate_hz == RATE_HZ and n == recording.samples_written
        # A power cut may lose up to a second (the sync interval); a killed process loses nothing it
        # handed over, because the kernel holds it: the repaired file has at least what was reported.
        assert n >= reported, f"lost {(reported - n) / RATE_HZ:.2f} s of audio"
        assert np.array_equal(audio.samples, expected_audio(n))

        # The operator continues the same recording, then records the site again.
        with store.continue_recording(recording) as writer:
            writer.append(expected_audio(n + RATE_HZ)[n:])
        assert writer.record.status == "complete"
        assert np.array_equal(read_wav(store.wav_path(writer.record)).samples, expected_audio(n + RATE_HZ))
        with store.start_recording(interrupted[0].session, "MV", RATE_HZ) as repeat:
            repeat.append(expected_audio(RATE_HZ))
        assert repeat.record.repeat == 1
        store.close_session(interrupted[0].session)
        assert store.resume() == []
