"""The streaming WAV writer: valid on disk at every sync, repaired after a crash, stopped cleanly by a full disk."""

from __future__ import annotations

import os
import wave
from pathlib import Path

import numpy as np
import pytest

from runtime.formats.wav import read_wav
from runtime.records import Demographics
from runtime.store import DiskFullError, Store
from runtime.store.wavstream import HEADER_BYTES, WavStreamWriter, repair_wav, wav_header


def frames_on_disk(path: Path) -> tuple[int, np.ndarray]:
    """What a standard WAV reader (Python's wave module) sees in the file."""
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getcomptype()) == (1, 2, "NONE")
        n = wav.getnframes()
        return n, np.frombuffer(wav.readframes(n), "<i2")


def writer(path: Path, rate_hz: int = 1000, **options) -> WavStreamWriter:
    options = {"sync_every_s": 1.0, "free_bytes": None, "reserve_bytes": 0, **options}
    return WavStreamWriter.create(path, rate_hz, **options)


def test_file_is_a_valid_wav_covering_the_synced_samples_after_every_write(tmp_path):
    path = tmp_path / "a" / "b" / "AV_0.wav"  # missing folders are created
    out = writer(path, rate_hz=1000)
    signal = (np.arange(5000) % 2000 - 1000).astype(np.int16)
    syncs = 0
    for chunk in np.split(signal, 20):
        syncs += out.write(chunk)
        n, samples = frames_on_disk(path)
        assert n == out.samples_synced <= out.samples_written
        assert out.samples_written - out.samples_synced < 1000  # never more than a second unsynced
        assert np.array_equal(samples, signal[:n])
    assert syncs >= 4
    assert out.close() == 5000
    assert np.array_equal(frames_on_disk(path)[1], signal)
    assert read_wav(path).rate_hz == 1000


def test_repair_sizes_a_lagging_header_to_the_whole_samples_on_disk(tmp_path):
    path = tmp_path / "crashed.wav"
    data = np.arange(301, dtype="<i2").tobytes()
    path.write_bytes(wav_header(100, 4000) + data + b"\x07")  # header lags, half a sample at the end
    assert repair_wav(path, 4000) == 301
    assert path.stat().st_size == HEADER_BYTES + 602
    n, samples = frames_on_disk(path)
    assert n == 301 and np.array_equal(samples, np.arange(301))
    assert read_wav(path).rate_hz == 4000


def test_repair_rewrites_a_header_that_never_reached_the_disk(tmp_path):
    path = tmp_path / "no_header.wav"
    path.write_bytes(b"\x00" * 20)
    assert repair_wav(path, 2000) == 0
    with wave.open(str(path)) as wav:
        assert (wav.getnframes(), wav.getframerate()) == (0, 2000)


def test_repair_leaves_a_consistent_file_untouched(tmp_path):
    path = tmp_path / "fine.wav"
    out = writer(path)
    out.write(np.arange(700, dtype=np.int16))
    out.close()
    before = path.read_bytes()
    os.utime(path, ns=(0, 0))
    assert repair_wav(path, 1000) == 700
    assert path.read_bytes() == before and path.stat().st_mtime_ns == 0


def test_append_to_continues_after_the_last_whole_sample(tmp_path):
    path = tmp_path / "cont.wav"
    path.write_bytes(wav_header(0, 1000) + np.arange(50, dtype="<i2").tobytes() + b"\x01")
    out = WavStreamWriter.append_to(path, 1000, sync_every_s=1.0, free_bytes=None, reserve_bytes=0)
    out.write(np.arange(50, 80, dtype=np.int16))
    out.close()
    n, samples = frames_on_disk(path)
    assert n == 80 and np.array_equal(samples, np.arange(80))


def test_a_really_full_disk_stops_the_recording_with_a_valid_wav(tiny_tmpfs):
    """Real ENOSPC from the kernel (no free-space hook, no reserve), for the WAV or the database first."""
    other_files = tiny_tmpfs / "other.bin"
    other_files.write_bytes(b"\0" * 300_000)
    store = Store.open(tiny_tmpfs / "store", min_free_bytes=0, recording_reserve_bytes=0)
    try:
        session = store.start_session(store.new_patient(Demographics(age_group="Infant"), consent=True))
        writer = store.start_recording(session, "AV", 4000)
        chunk = (np.arange(4000) % 1000).astype(np.int16)
        appended = 0
        with pytest.raises(DiskFullError) as caught:
            for _ in range(1000):  # 8 MB: four times the file system
                writer.append(chunk)
                appended += len(chunk)
        kept = caught.value.samples_kept
        assert appended <= kept <= appended + len(chunk)  # the failing chunk may be kept whole
        n, samples = frames_on_disk(store.wav_path(writer.record))
        assert n == kept
        assert np.array_equal(samples, np.resize(chunk, kept))
        other_files.unlink()  # the operator frees space
        record = store.resume()[0].recordings[0]
        assert record.status == "interrupted" and record.samples_written == kept
        assert record.stop_reason in ("disk_full", "crash")  # "crash" when the database could not grow either
        assert store.query("PRAGMA integrity_check")[0][0] == "ok"
    finally:
        store.close()
