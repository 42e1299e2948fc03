"""The Python codec: COBS, CRC, message round trips, gap reporting under corruption, fuzzing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge import protocol as p

def test_crc_is_ccitt_false_check_value():
    assert p.crc16(b"123456789") == 0x29B1


@pytest.fixture(scope="module")
def cobs_ref():
    return pytest.importorskip("cobs.cobs", reason="the `cobs` package (dev extra) is the COBS reference")


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=1200))
def test_cobs_matches_reference_and_round_trips(cobs_ref, data):
    encoded = p.cobs_encode(data)
    assert encoded == cobs_ref.encode(data)
    assert b"\x00" not in encoded
    assert p.cobs_decode(encoded) == data


def test_cobs_accepts_trailing_one_after_full_block():
    data = b"\x01" * 254
    assert p.cobs_decode(b"\xff" + data) == data
    assert p.cobs_decode(b"\xff" + data + b"\x01") == data


def test_cobs_rejects_truncated_block():
    assert p.cobs_decode(b"\x05\x01\x02") is None


MESSAGES = [
    p.DeviceInfo((1, 2, 3), 4000, 16, 1, 0),
    p.AudioChunk(128, np.array([0, 1, -1, 1000, -32768, 32767], dtype=np.int16)),
    p.SiteEvent("TV", p.SITE_SOURCE_BUTTON, 4000),
    p.Status(3712, 81, p.STATUS_STREAMING | p.STATUS_CHARGING, 12345),
    p.DeviceError(p.ERR_ADC_OVERRUN, "adc overrun", 77),
    p.Start(),
    p.Stop(),
    p.SetSite("Phc"),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message):
    events = p.decode_all(p.encode(message, seq=9))
    assert events == [message]


def test_encoder_numbers_frames_and_wraps():
    encoder = p.Encoder()
    encoder.seq = 0xFFFF
    frames = [encoder.encode(p.Stop()) for _ in range(2)]
    seqs = [p.HEADER.unpack_from(p.cobs_decode(f[:-1]))[2] for f in frames]
    assert seqs == [0xFFFF, 0]


def test_site_codes_follow_the_patient_tensor_order():
    from runtime.sites import SITES

    assert p.SITE_CODES == SITES


def test_encoder_refuses_oversize_and_wrong_dtype():
    with pytest.raises(ValueError, match="1..256"):
        p.encode(p.AudioChunk(0, np.zeros(257, np.int16)))
    with pytest.raises(ValueError, match="int16"):
        p.encode(p.AudioChunk(0, np.zeros(4, np.float32)))
    with pytest.raises(ValueError, match="unknown site"):
        p.encode(p.SetSite("XX"))


def test_gap_is_reported_before_the_chunk_that_follows_it():
    enc = p.Encoder()
    frames = [enc.audio(i * 10, np.full(10, i, np.int16)) for i in range(5)]
    events = p.Decoder(expected_index=0).feed(frames[0] + frames[3] + frames[4])
    assert [type(e) for e in events] == [p.AudioChunk, p.Gap, p.AudioChunk, p.AudioChunk]
    assert events[1] == p.Gap(10, 20)


def test_device_info_resets_expected_index_and_backwards_audio_is_a_restart():
    enc = p.Encoder()
    dec = p.Decoder()
    dec.feed(enc.audio(0, np.zeros(64, np.int16)) + enc.audio(64, np.zeros(64, np.int16)))
    events = dec.feed(enc.audio(0, np.zeros(64, np.int16)))
    assert not any(isinstance(e, p.Gap) for e in events)
    assert dec.stats.restarts == 1
    dec.feed(enc.encode(p.DeviceInfo((1, 0, 0), sample_index=0)))
    events = dec.feed(enc.audio(64, np.zeros(8, np.int16)))
    assert events[0] == p.Gap(0, 64)


def test_a_restart_whose_device_info_and_first_chunk_were_lost_reports_them_as_a_gap():
    enc = p.Encoder()
    dec = p.Decoder()
    dec.feed(enc.encode(p.DeviceInfo((1, 0, 0))))
    dec.feed(b"".join(enc.audio(i * 64, np.zeros(64, np.int16)) for i in range(4)))
    enc.encode(p.DeviceInfo((1, 0, 0)))  # START again: this header and the new stream's first chunk are lost
    enc.audio(0, np.ones(64, np.int16))
    events = dec.feed(enc.audio(64, np.ones(64, np.int16)))
    assert events == [p.Gap(0, 64), p.AudioChunk(64, np.ones(64, np.int16))]
    assert dec.stats.restarts == 1 and dec.stats.gaps == 1 and dec.stats.samples_lost == 64
    assert dec.expected_index == 128


def test_a_duplicated_frame_is_dropped_and_counted_not_taken_for_a_restart():
    enc = p.Encoder()
    info = enc.encode(p.DeviceInfo((1, 0, 0)))
    a, b = (enc.audio(i * 64, np.full(64, i, np.int16)) for i in range(2))
    status = enc.encode(p.Status(3600, 40, p.STATUS_STREAMING, 128))
    c = enc.audio(128, np.full(64, 2, np.int16))
    dec = p.Decoder(report_errors=True)
    # a frame twice in a row, a run of frames sent again, a header repeated after audio
    events = dec.feed(info + a + a + b + a + b + info + status + c + c)
    assert [e for e in events if not isinstance(e, p.FrameError)] == [
        p.DeviceInfo((1, 0, 0)),
        p.AudioChunk(0, np.full(64, 0, np.int16)),
        p.AudioChunk(64, np.full(64, 1, np.int16)),
        p.Status(3600, 40, p.STATUS_STREAMING, 128),
        p.AudioChunk(128, np.full(64, 2, np.int16)),
    ]
    assert [e.reason for e in events if isinstance(e, p.FrameError)] == ["duplicate"] * 5
    assert dec.stats.duplicates == 5
    assert dec.stats.restarts == dec.stats.gaps == dec.stats.frames_missed == 0
    assert dec.expected_index == 192


def test_a_restart_that_sends_the_same_samples_again_is_a_restart_not_a_duplicate():
    enc = p.Encoder()
    stream = [enc.audio(i * 64, np.full(64, i, np.int16)) for i in range(3)]
    again = [enc.audio(i * 64, np.full(64, i, np.int16)) for i in range(3)]  # START (header lost), numbered on
    dec = p.Decoder()
    events = dec.feed(b"".join(stream + again))
    assert [e.first_index for e in events] == [0, 64, 128, 0, 64, 128]
    assert dec.stats.restarts == 1 and dec.stats.duplicates == 0
    rebooted = p.Encoder()  # numbers its frames from 0 again, like those just received
    events = dec.feed(rebooted.encode(p.DeviceInfo((1, 0, 0))) + rebooted.audio(0, np.full(64, 7, np.int16)))
    assert events == [p.DeviceInfo((1, 0, 0)), p.AudioChunk(0, np.full(64, 7, np.int16))]
    assert dec.stats.duplicates == 0


def test_bad_crc_and_bad_length_are_dropped_and_counted():
    good = p.encode(p.AudioChunk(0, np.arange(8, dtype=np.int16)))
    frame = bytearray(p.cobs_decode(good[:-1]))
    frame[12] ^= 0x40
    bad_crc = p.cobs_encode(bytes(frame)) + b"\x00"
    # A count that disagrees with the payload length, with a correct CRC.
    body = p.HEADER.pack(p.PROTOCOL_VERSION, p.AUDIO, 1, 8, 9) + bytes(16)
    crc = p.crc16(body)
    bad_len = p.cobs_encode(body + bytes((crc & 0xFF, crc >> 8))) + b"\x00"
    dec = p.Decoder(report_errors=True)
    events = dec.feed(bad_crc + bad_len + good)
    assert [e.reason for e in events if isinstance(e, p.FrameError)] == ["crc", "length"]
    assert dec.stats.crc_errors == 1 and dec.stats.length_errors == 1
    assert dec.stats.resyncs == 1
    assert isinstance(events[-1], p.AudioChunk)


def test_unknown_type_ignored_and_extended_payload_tolerated():
    unknown = p.encode_frame(0x42, b"future", seq=0)
    extended = p.encode_frame(p.STATUS, bytes((0x74, 0x0E, 50, 0)) + b"new fields", seq=1, sample_index=5)
    dec = p.Decoder()
    assert dec.feed(unknown + extended) == [p.Status(3700, 50, 0, 5)]
    assert dec.stats.unknown_types == 1


def test_unknown_major_version_is_reported_once_and_not_interpreted():
    frames = b"".join(p.encode_frame(p.AUDIO, bytes(8), seq=i, count=4, version=0x21) for i in range(3))
    dec = p.Decoder()
    assert dec.feed(frames) == [p.UnsupportedVersion(2, 1)]
    assert dec.stats.version_errors == 3 and dec.stats.samples_ok == 0


def test_newer_minor_version_is_accepted():
    frame = p.encode_frame(p.AUDIO, bytes(4), seq=0, count=2, version=0x1F)
    assert isinstance(p.decode_all(frame)[0], p.AudioChunk)


def test_garbage_without_delimiter_keeps_memory_bounded():
    rng = np.random.default_rng(1)
    garbage = rng.integers(1, 256, 300_000, dtype=np.uint8).tobytes()
    dec = p.Decoder()
    for i in range(0, len(garbage), 1000):
        dec.feed(garbage[i : i + 1000])
        assert dec.buffered <= p.MAX_ENCODED
    events = dec.feed(b"\x00" + p.encode(p.Status(3600, 40)))
    assert events == [p.Status(3600, 40)]
    assert dec.stats.oversize_frames == 1


def test_sequence_numbers_count_missed_frames():
    enc = p.Encoder()
    frames = [enc.encode(p.Status(3600, 40)) for _ in range(6)]
    dec = p.Decoder()
    dec.feed(frames[0] + frames[1] + frames[4] + frames[5])
    assert dec.stats.frames_missed == 2


# --- property: corruption never delivers a bad sample, and every loss is a gap ---------------


def _build_stream(chunk_sizes: list[int], seed: int):
    rng = np.random.default_rng(seed)
    total = sum(chunk_sizes)
    # Quiet and loud stretches, so frames hold many and few zero bytes.
    signal = (rng.normal(0, 1, total) * rng.choice([3, 300, 20000], total)).clip(-32768, 32767).astype(np.int16)
    enc = p.Encoder()
    frames, starts, index = [], [], 0
    for size in chunk_sizes:
        frames.append(enc.audio(index, signal[index : index + size]))
        starts.append(index)
        index += size
    owner = np.concatenate([np.full(len(f), k) for k, f in enumerate(frames)])
    return signal, frames, starts, b"".join(frames), owner


corruption = st.tuples(
    st.sampled_from(["flip", "drop", "insert", "truncate"]),
    st.floats(0, 1, exclude_max=True),
    st.integers(0, 7),
    st.binary(min_size=1, max_size=40),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    chunk_sizes=st.lists(st.integers(1, 256), min_size=1, max_size=30),
    seed=st.integers(0, 2**32 - 1),
    corruptions=st.lists(corruption, max_size=6),
    cuts=st.lists(st.integers(1, 400), max_size=20),
)
def test_corruption_never_delivers_bad_samples_and_every_loss_is_a_gap(chunk_sizes, seed, corruptions, cuts):
    signal, frames, starts, stream, owner = _build_stream(chunk_sizes, seed)
    delimiters = {i for i, b in enumerate(stream) if b == 0}
    first_byte = np.cumsum([0] + [len(f) for f in frames])
    damaged: set[int] = set()
    touched: set[int] = set()  # original positions already flipped or deleted
    inserted: set[int] = set()  # one insertion per position keeps the bookkeeping exact
    edits = []  # (position, kind, argument)
    for kind, where, bit, garbage in corruptions:
        pos = int(where * len(stream))
        k = int(owner[pos])
        if kind == "insert":
            if pos in inserted:
                continue
            inserted.add(pos)
            edits.append((pos, "insert", garbage))
            # Only garbage that ends in a delimiter, right after the previous frame, spares frame k.
            if not (pos == first_byte[k] and garbage.endswith(b"\x00")):
                damaged.add(k)
            continue
        end = min(d for d in delimiters if d >= pos) if kind == "truncate" else pos + 1
        if end == pos or touched.intersection(range(pos, end)):
            continue
        touched.update(range(pos, end))
        edits.append((pos, "flip", 1 << bit) if kind == "flip" else (pos, "drop", end - pos))
        damaged.add(k)
        if pos in delimiters:  # a delimiter ends frame k and starts frame k + 1
            damaged.add(k + 1)
    data = bytearray(stream)
    # From the end so positions stay valid; at one position the insert goes in last.
    for pos, kind, arg in sorted(edits, key=lambda e: (e[0], e[1] != "insert"), reverse=True):
        if kind == "flip":
            data[pos] ^= arg
        elif kind == "drop":
            del data[pos : pos + arg]
        else:
            data[pos:pos] = arg

    dec = p.Decoder(expected_index=0)
    events = []
    last = 0
    for cut in sorted(set(c * 7 for c in cuts)) + [len(data)]:
        events += dec.feed(bytes(data[last:cut]))
        last = max(last, cut)

    chunks = [e for e in events if isinstance(e, p.AudioChunk)]
    for chunk in chunks:
        assert np.array_equal(chunk.samples, signal[chunk.first_index : chunk.end_index])
    intact = [starts[k] for k in range(len(frames)) if k not in damaged]
    assert [c.first_index for c in chunks] == intact
    position = 0
    for i, event in enumerate(events):
        if isinstance(event, p.Gap):
            assert event.first_missing == position and event.count > 0
            assert isinstance(events[i + 1], p.AudioChunk)
            position += event.count
        elif isinstance(event, p.AudioChunk):
            assert event.first_index == position
            position = event.end_index
    assert dec.stats.samples_lost == sum(e.count for e in events if isinstance(e, p.Gap))
    assert dec.stats.samples_ok == sum(len(c.samples) for c in chunks)


@settings(max_examples=100, deadline=None)
@given(
    chunk_sizes=st.lists(st.integers(1, 256), min_size=1, max_size=30),
    copies=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 3)), max_size=10),
)
def test_duplicated_frames_never_change_what_is_delivered(chunk_sizes, copies):
    _, frames, _, stream, _ = _build_stream(chunk_sizes, seed=0)
    later: dict[int, list[bytes]] = {}  # copies of frame k go out after frame k + delay
    for where, delay in copies:
        k = int(where * len(frames))
        later.setdefault(min(k + delay, len(frames) - 1), []).append(frames[k])
    duplicated = b"".join(f + b"".join(later.get(k, [])) for k, f in enumerate(frames))
    dec = p.Decoder(expected_index=0)
    assert dec.feed(duplicated) == p.Decoder(expected_index=0).feed(stream)
    assert dec.stats.duplicates == len(copies)
    assert dec.stats.restarts == dec.stats.gaps == 0


# --- fuzz: nothing escapes, memory stays bounded, the decoder keeps working -------------------


def test_decoder_survives_100k_random_and_mutated_inputs():
    rng = np.random.default_rng(2024)
    enc = p.Encoder()
    valid = [enc.audio(i * 64, rng.integers(-2000, 2000, 64).astype(np.int16)) for i in range(50)]
    valid += [enc.encode(m) for m in MESSAGES]
    noise = rng.integers(0, 256, 4_000_000, dtype=np.uint8).tobytes()
    sizes = rng.integers(0, 160, 100_000)
    offsets = rng.integers(0, len(noise) - 200, 100_000)
    mutate = rng.random(100_000) < 0.5
    picks = rng.integers(0, len(valid), 100_000)
    flips = rng.integers(0, 256, (100_000, 3))
    dec = p.Decoder(report_errors=True)
    for i in range(100_000):
        if mutate[i]:
            frame = bytearray(valid[picks[i]])
            for f in flips[i]:
                frame[int(f) % len(frame)] ^= 1 << (int(f) % 8)
            data = bytes(frame)
        else:
            data = noise[offsets[i] : offsets[i] + sizes[i]]
        dec.feed(data)
        assert dec.buffered <= p.MAX_ENCODED
        if i % 1000 == 999:
            probe = p.Status(3333, 33, 0, i)  # a new frame each time: the same one again is a duplicate
            assert probe in dec.feed(b"\x00" + p.encode(probe))
    assert dec.stats.crc_errors > 0 and dec.stats.frames_ok >= 100
