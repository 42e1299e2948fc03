"""The virtual stethoscope's behaviour and fault injection, without I/O (device time is simulated)."""

from __future__ import annotations

import wave

import numpy as np
import pytest

from firmware_bridge import protocol as p
from firmware_bridge.emulator import Faults, HeartSource, VirtualStethoscope, WavSource

RATE = p.DEFAULT_RATE_HZ


def _run(device: VirtualStethoscope, seconds: float, commands: list[p.Message] = (), step_s: float = 0.01):
    """Send `commands` at t=0, tick for `seconds`, decode everything with a fresh host decoder."""
    host = p.Encoder()
    for command in commands:
        device.receive(host.encode(command))
    decoder = p.Decoder()
    events = []
    for k in range(1, int(seconds / step_s) + 1):
        events += decoder.feed(device.tick(k * step_s))
    return events, decoder


def _reference(seed: int, n: int, site: str = "AV") -> np.ndarray:
    return HeartSource(RATE, seed).generators[site].read(n)


def _assert_samples_match(events, reference):
    for chunk in (e for e in events if isinstance(e, p.AudioChunk)):
        assert np.array_equal(chunk.samples, reference[chunk.first_index : chunk.end_index])


def test_start_sends_device_info_then_real_time_audio_from_zero():
    device = VirtualStethoscope(HeartSource(RATE, seed=4), seed=4)
    events, decoder = _run(device, 2.0, [p.Start()])
    kinds = [type(e) for e in events]
    assert kinds[0] is p.DeviceInfo  # the boot announcement, then START's
    assert kinds.count(p.DeviceInfo) == 2
    chunks = [e for e in events if isinstance(e, p.AudioChunk)]
    assert chunks[0].first_index == 0
    assert all(a.end_index == b.first_index for a, b in zip(chunks, chunks[1:]))
    assert 2.0 * RATE - 64 <= chunks[-1].end_index <= 2.0 * RATE  # paced by device time
    assert decoder.stats.gaps == 0
    assert kinds.count(p.Status) == 2
    _assert_samples_match(events, _reference(4, 8000))


def test_nothing_streams_before_start_and_stop_stops():
    device = VirtualStethoscope(HeartSource(RATE, seed=1), seed=1)
    events, _ = _run(device, 0.5)
    assert not any(isinstance(e, p.AudioChunk) for e in events)
    device.receive(p.encode(p.Start()))
    device.receive(p.encode(p.Stop(), seq=1))
    events = p.decode_all(device.tick(1.0))
    assert not any(isinstance(e, p.AudioChunk) for e in events)


def test_set_site_is_acknowledged_at_the_sample_clock_and_switches_the_heart_source():
    device = VirtualStethoscope(HeartSource(RATE, seed=2), seed=2)
    device.receive(p.encode(p.Start()))
    device.tick(0.5)
    device.receive(p.encode(p.SetSite("MV"), seq=1))
    events = p.decode_all(device.tick(0.6))
    acks = [e for e in events if isinstance(e, p.SiteEvent)]
    assert acks == [p.SiteEvent("MV", p.SITE_SOURCE_HOST, 1984)]
    assert device.source.site == "MV"


def test_unknown_command_is_answered_with_an_error():
    device = VirtualStethoscope(HeartSource(RATE, seed=2), seed=2)
    device.receive(p.encode_frame(0x8F, b"", seq=0))
    errors = [e for e in p.decode_all(device.tick(0.01)) if isinstance(e, p.DeviceError)]
    assert len(errors) == 1 and errors[0].code == p.ERR_BAD_COMMAND


def test_site_button_cycles_the_guided_sites():
    device = VirtualStethoscope(HeartSource(RATE, seed=2), seed=2, site_every_s=1.0)
    events, _ = _run(device, 3.5, [p.Start()])
    sites = [(e.site, e.sample_index) for e in events if isinstance(e, p.SiteEvent)]
    assert [s for s, _ in sites] == ["PV", "TV", "MV"]
    assert [i for _, i in sites] == [3968, 8000, 11968]  # the sample clock when pressed (chunk-aligned)


def test_wav_files_stream_in_order_with_their_sites(tmp_path):
    paths = []
    for k, site in enumerate(["AV", "MV"]):
        path = tmp_path / f"9979_{site}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(np.full(1000, 100 * (k + 1), dtype="<i2").tobytes())
        paths.append(path)
    device = VirtualStethoscope(WavSource(paths, RATE), seed=0)
    events, decoder = _run(device, 0.6, [p.Start()])
    audio = np.concatenate([e.samples for e in events if isinstance(e, p.AudioChunk)])
    assert np.array_equal(audio[:1000], np.full(1000, 100)) and np.all(audio[1000:2000] == 200)
    sites = [e for e in events if isinstance(e, p.SiteEvent)]
    assert sites[:2] == [p.SiteEvent("MV", p.SITE_SOURCE_BUTTON, 1000), p.SiteEvent("AV", p.SITE_SOURCE_BUTTON, 2000)]
    assert decoder.stats.gaps == 0


def test_wav_source_rejects_what_it_cannot_stream(tmp_path):
    path = tmp_path / "8bit.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(RATE)
        w.writeframes(bytes(100))
    with pytest.raises(ValueError, match="16-bit PCM"):
        WavSource([path], RATE)


# --- each fault, alone, and what the host decoder makes of it ----------------------------------

FAULTS = {
    "bit_flips": Faults(bit_flip_rate=1e-4),
    "dropped_bytes": Faults(drop_byte_rate=1e-4),
    "truncated_frames": Faults(truncate_rate=0.01),
    "garbage_bursts": Faults(garbage_rate=0.01),
    "duplicated_frames": Faults(duplicate_rate=0.01),
    "stalls": Faults(stall_rate=0.5, stall_s=0.3),
    "disconnects": Faults(disconnect_every_s=5.0, reconnect_after_s=0.5),
}


@pytest.mark.parametrize("name", FAULTS)
def test_injected_faults_are_counted_and_never_deliver_bad_samples(name):
    device = VirtualStethoscope(HeartSource(RATE, seed=5), seed=5, faults=FAULTS[name])
    events, decoder = _run(device, 19.0, [p.Start()], step_s=0.05)
    counts, stats = device.counts, decoder.stats
    _assert_samples_match(events, _reference(5, 19 * RATE))
    # Every sample up to the last delivered one either arrived or is inside a reported gap.
    chunks = [e for e in events if isinstance(e, p.AudioChunk)]
    assert stats.samples_ok + stats.samples_lost == chunks[-1].end_index
    damage = stats.crc_errors + stats.cobs_errors + stats.length_errors + stats.oversize_frames
    if name in ("bit_flips", "dropped_bytes", "truncated_frames"):
        assert counts.bits_flipped + counts.bytes_dropped + counts.frames_truncated > 0
        assert damage > 0 and stats.gaps > 0 and stats.resyncs > 0
    elif name == "garbage_bursts":
        assert counts.garbage_bursts > 0
        assert damage > 0 and stats.gaps > 0
    elif name == "stalls":
        assert counts.stalls > 0
        assert damage == 0 and stats.gaps == 0  # late, not lost
    elif name == "duplicated_frames":
        assert counts.frames_duplicated > 0
        assert stats.duplicates == counts.frames_duplicated  # each copy dropped, none taken for a restart
        assert damage == 0 and stats.gaps == 0 and stats.restarts == 0
    else:
        assert counts.disconnects == 3
        assert stats.gaps == 3 and stats.samples_lost == counts.samples_lost_offline


def test_a_restart_whose_device_info_and_first_chunk_are_lost_reports_their_samples_as_lost():
    device = VirtualStethoscope(HeartSource(RATE, seed=7), seed=7)
    _, decoder = _run(device, 1.0, [p.Start()])
    before = decoder.stats.samples_ok
    device.receive(p.encode(p.Start(), seq=1))  # the device restarts its stream at sample 0
    frames = [frame + p.DELIMITER for frame in device.tick(1.2).split(p.DELIMITER) if frame]
    kinds = [type(p.decode_all(frame)[0]) for frame in frames]
    lost = {kinds.index(p.DeviceInfo), kinds.index(p.AudioChunk)}  # the restart's header and first chunk
    events = decoder.feed(b"".join(f for k, f in enumerate(frames) if k not in lost))
    chunks = [e for e in events if isinstance(e, p.AudioChunk)]
    assert events[0] == p.Gap(0, 64) and chunks[0].first_index == 64
    assert decoder.stats.restarts == 1 and decoder.stats.samples_lost == 64
    assert decoder.stats.samples_ok - before + decoder.stats.samples_lost == chunks[-1].end_index
    _assert_samples_match(events, _reference(7, RATE))  # the source restarted with the stream


def test_wrong_rate_and_version_faults_change_what_the_device_declares():
    wrong_rate = VirtualStethoscope(HeartSource(RATE, seed=1), faults=Faults(declared_rate_hz=8000))
    info = p.decode_all(wrong_rate.tick(0.01))[0]
    assert isinstance(info, p.DeviceInfo) and info.rate_hz == 8000
    future = VirtualStethoscope(HeartSource(RATE, seed=1), faults=Faults(protocol_version=0x20))
    assert p.decode_all(future.tick(0.01)) == [p.UnsupportedVersion(2, 0)]
