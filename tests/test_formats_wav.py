"""WAV reading and writing: 16-bit PCM mono only, every other file refused with a specific message."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.dsp.resample import MAX_RATE_HZ
from runtime.formats import FormatError, read_wav, read_wav_header, write_wav
from runtime.records import Audio

PCM_GUID = struct.pack("<H", 1) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
FLOAT_GUID = struct.pack("<H", 3) + PCM_GUID[2:]


def chunk(chunk_id: bytes, body: bytes, *, declared: int | None = None, pad: bool = True) -> bytes:
    size = len(body) if declared is None else declared
    return struct.pack("<4sI", chunk_id, size) + body + (b"\x00" if pad and len(body) % 2 else b"")


def fmt_body(*, tag=1, channels=1, rate=4000, bits=16, block_align=None) -> bytes:
    block_align = channels * bits // 8 if block_align is None else block_align
    byte_rate = (rate * block_align) & 0xFFFFFFFF  # what a writer overflowing 32 bits leaves there
    return struct.pack("<HHIIHH", tag, channels, rate, byte_rate, block_align, bits)


def extensible_fmt_body(*, rate=4000, bits=16, channels=1, guid=PCM_GUID) -> bytes:
    block_align = channels * bits // 8
    # tag, channels, rate, byte rate, block align, bits, cbSize, valid bits, channel mask, subformat
    byte_rate = (rate * block_align) & 0xFFFFFFFF
    return struct.pack("<HHIIHHHHI16s", 0xFFFE, channels, rate, byte_rate, block_align, bits, 22, bits, 4, guid)


def riff(*chunks: bytes, form: bytes = b"WAVE") -> bytes:
    body = form + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def pcm_bytes(samples) -> bytes:
    return np.asarray(samples, dtype="<i2").tobytes()


SAMPLES = np.array([0, 1, -1, 32767, -32768, 1234, -4321], dtype=np.int16)


def write(tmp_path: Path, content: bytes, name: str = "x.wav") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def assert_refused(path: Path, *fragments: str) -> None:
    with pytest.raises(FormatError) as info:
        read_wav(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message


def test_write_then_read_returns_the_same_samples_and_rate(tmp_path):
    path = tmp_path / "a.wav"
    write_wav(path, Audio(SAMPLES, 4000))
    audio = read_wav(path)
    assert audio.rate_hz == 4000
    assert audio.samples.dtype == np.int16
    np.testing.assert_array_equal(audio.samples, SAMPLES)
    assert path.stat().st_size == 44 + 2 * len(SAMPLES)
    assert [p.name for p in tmp_path.iterdir()] == ["a.wav"]  # no temporary left behind


def test_written_file_is_a_standard_pcm_header(tmp_path):
    path = tmp_path / "a.wav"
    write_wav(path, Audio(SAMPLES, 2000))
    expected = riff(chunk(b"fmt ", fmt_body(rate=2000)), chunk(b"data", pcm_bytes(SAMPLES)))
    assert path.read_bytes() == expected


def test_write_replaces_an_existing_file(tmp_path):
    path = tmp_path / "a.wav"
    write_wav(path, Audio(SAMPLES, 4000))
    write_wav(path, Audio(SAMPLES[:2], 8000))
    assert read_wav(path).rate_hz == 8000
    assert len(read_wav(path).samples) == 2


@pytest.mark.parametrize(
    "samples", [np.zeros(0, np.int16), np.zeros(3, np.float32), np.zeros((2, 3), np.int16)], ids=["empty", "float", "2d"]
)
def test_write_refuses_audio_it_could_not_read_back(tmp_path, samples):
    with pytest.raises(ValueError, match="a.wav"):
        write_wav(tmp_path / "a.wav", Audio(samples, 4000))
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("rate", [1, 44100, 44101, MAX_RATE_HZ])
def test_reads_any_sample_rate_up_to_the_maximum(tmp_path, rate):
    path = write(tmp_path, riff(chunk(b"fmt ", fmt_body(rate=rate)), chunk(b"data", pcm_bytes(SAMPLES))))
    assert read_wav(path).rate_hz == rate


@pytest.mark.parametrize("rate", [MAX_RATE_HZ + 1, 2**32 - 1])
@pytest.mark.parametrize("body", [fmt_body, extensible_fmt_body], ids=["pcm", "extensible"])
def test_refuses_a_declared_rate_above_the_maximum(tmp_path, rate, body):
    path = write(tmp_path, riff(chunk(b"fmt ", body(rate=rate)), chunk(b"data", pcm_bytes(SAMPLES))))
    assert_refused(path, f"sample rate {rate} Hz", f"at most {MAX_RATE_HZ} Hz")
    with pytest.raises(FormatError, match=f"at most {MAX_RATE_HZ} Hz"):
        read_wav_header(path)


def test_write_refuses_a_rate_read_wav_would_refuse(tmp_path):
    with pytest.raises(ValueError, match=f"{MAX_RATE_HZ} Hz"):
        write_wav(tmp_path / "a.wav", Audio(SAMPLES, MAX_RATE_HZ + 1))
    assert not any(tmp_path.iterdir())


def test_reads_wave_format_extensible_with_pcm_subformat(tmp_path):
    path = write(tmp_path, riff(chunk(b"fmt ", extensible_fmt_body()), chunk(b"data", pcm_bytes(SAMPLES))))
    audio = read_wav(path)
    assert audio.rate_hz == 4000
    np.testing.assert_array_equal(audio.samples, SAMPLES)


def test_skips_list_and_odd_sized_chunks_with_their_pad_byte(tmp_path):
    content = riff(
        chunk(b"LIST", b"INFOISFT\x05\x00\x00\x00test\x00"),  # 17 bytes: odd, padded
        chunk(b"fmt ", fmt_body()),
        chunk(b"junk", b"abc"),
        chunk(b"data", pcm_bytes(SAMPLES)),
        chunk(b"LIST", b"trailing"),
    )
    audio = read_wav(write(tmp_path, content))
    np.testing.assert_array_equal(audio.samples, SAMPLES)


def test_accepts_an_odd_trailing_byte_after_the_data(tmp_path):
    content = riff(chunk(b"fmt ", fmt_body()), chunk(b"data", pcm_bytes(SAMPLES))) + b"\x00"
    np.testing.assert_array_equal(read_wav(write(tmp_path, content)).samples, SAMPLES)


def test_header_gives_rate_frames_and_duration_without_samples(tmp_path):
    content = riff(chunk(b"LIST", b"abcd"), chunk(b"fmt ", fmt_body(rate=2000)), chunk(b"data", pcm_bytes(np.zeros(3000))))
    header = read_wav_header(write(tmp_path, content))
    assert (header.rate_hz, header.frames, header.duration_s) == (2000, 3000, 1.5)
    assert header.data_offset == 12 + 12 + 24 + 8


@pytest.mark.parametrize(
    ("fmt", "fragments"),
    [
        (fmt_body(bits=8), ["8-bit", "16-bit PCM mono"]),
        (fmt_body(bits=24), ["24-bit"]),
        (fmt_body(bits=32), ["32-bit"]),
        (fmt_body(tag=3, bits=32), ["IEEE float"]),
        (extensible_fmt_body(bits=32, guid=FLOAT_GUID), ["IEEE float"]),
        (extensible_fmt_body(bits=24), ["24-bit"]),
        (extensible_fmt_body(guid=b"\x01" * 16), ["unknown subformat GUID"]),
        (fmt_body(channels=2), ["2 channels", "mono"]),
        (extensible_fmt_body(channels=2), ["2 channels"]),
        (fmt_body(tag=0x55), ["MPEG layer 3", "0x0055"]),
        (fmt_body(block_align=4), ["block align 4"]),
        (fmt_body(rate=0), ["sample rate 0 Hz"]),
        (fmt_body()[:14], ["'fmt ' chunk has 14 bytes"]),
        (extensible_fmt_body()[:20], ["WAVE_FORMAT_EXTENSIBLE", "has 20 bytes"]),
    ],
    ids=["8bit", "24bit", "32bit", "float", "ext-float", "ext-24bit", "ext-guid", "stereo", "ext-stereo",
         "mp3", "block-align", "rate-0", "short-fmt", "short-ext-fmt"],
)
def test_refuses_sample_formats_other_than_16_bit_pcm_mono(tmp_path, fmt, fragments):
    path = write(tmp_path, riff(chunk(b"fmt ", fmt), chunk(b"data", b"\x00" * 12)))
    assert_refused(path, *fragments)


def test_refuses_an_empty_file(tmp_path):
    assert_refused(write(tmp_path, b""), "empty file")


def test_refuses_zero_samples(tmp_path):
    assert_refused(write(tmp_path, riff(chunk(b"fmt ", fmt_body()), chunk(b"data", b""))), "zero samples")


def test_refuses_a_truncated_riff_header(tmp_path):
    assert_refused(write(tmp_path, b"RIFF\x10\x00"), "truncated header", "6 bytes")


def test_refuses_a_truncated_chunk_header(tmp_path):
    content = riff(chunk(b"fmt ", fmt_body())) + b"dat"
    assert_refused(write(tmp_path, content), "truncated chunk header at byte 36")


def test_refuses_a_truncated_data_chunk(tmp_path):
    content = riff(chunk(b"fmt ", fmt_body()), chunk(b"data", pcm_bytes(SAMPLES), declared=100))
    assert_refused(write(tmp_path, content), "truncated: data chunk declares 100 bytes, file has 14")


def test_refuses_a_truncated_fmt_chunk(tmp_path):
    content = riff(chunk(b"fmt ", fmt_body()[:10], declared=16))
    assert_refused(write(tmp_path, content), "truncated", "'fmt ' chunk", "declares 16 bytes, file has 10")


@pytest.mark.parametrize(
    "content", [b"RIFX" + b"\x00" * 40, riff(form=b"AVI "), b"ID3\x04" + b"\x00" * 40], ids=["rifx", "avi", "mp3"]
)
def test_refuses_files_that_are_not_riff_wave(tmp_path, content):
    assert_refused(write(tmp_path, content), "not a RIFF/WAVE file")


def test_refuses_a_file_without_fmt_chunk(tmp_path):
    assert_refused(write(tmp_path, riff(chunk(b"LIST", b"abcd"))), "no 'fmt ' chunk and no 'data' chunk")


def test_refuses_a_file_without_data_chunk(tmp_path):
    assert_refused(write(tmp_path, riff(chunk(b"fmt ", fmt_body()))), "no 'data' chunk")


def test_refuses_data_before_fmt(tmp_path):
    content = riff(chunk(b"data", pcm_bytes(SAMPLES)), chunk(b"fmt ", fmt_body()))
    assert_refused(write(tmp_path, content), "comes before any 'fmt ' chunk")


def test_refuses_data_not_a_multiple_of_block_align(tmp_path):
    content = riff(chunk(b"fmt ", fmt_body()), chunk(b"data", b"\x00" * 7))
    assert_refused(write(tmp_path, content), "7 bytes", "not a multiple of the block align")


def test_header_reader_refuses_what_the_reader_refuses(tmp_path):
    path = write(tmp_path, riff(chunk(b"fmt ", fmt_body(channels=2)), chunk(b"data", b"\x00" * 8)))
    with pytest.raises(FormatError, match="2 channels"):
        read_wav_header(path)


def test_format_error_survives_pickling(tmp_path):
    error = FormatError(tmp_path / "a.txt", "bad thing", line=3, expected="a good thing")
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) == f"{tmp_path / 'a.txt'} line 3: bad thing; expected a good thing"
    assert copy.line == 3


VALID = riff(
    chunk(b"LIST", b"INFOabc"), chunk(b"fmt ", extensible_fmt_body()), chunk(b"data", pcm_bytes(SAMPLES))
)


def _read_or_format_error(path: Path) -> None:
    try:
        audio = read_wav(path)
    except FormatError as error:
        assert str(path) in str(error)
    else:
        assert audio.samples.dtype == np.int16 and len(audio.samples) > 0 and audio.rate_hz > 0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(length=st.integers(0, len(VALID)))
def test_every_truncation_of_a_valid_file_parses_or_raises_format_error(tmp_path, length):
    path = write(tmp_path, VALID[:length])
    if length == len(VALID):
        np.testing.assert_array_equal(read_wav(path).samples, SAMPLES)
    else:
        _read_or_format_error(path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(
    st.binary(max_size=200),
    st.binary(max_size=120).map(lambda b: b"RIFF\xff\xff\x00\x00WAVE" + b),
    st.tuples(st.integers(0, len(VALID) - 1), st.binary(min_size=1, max_size=8)).map(
        lambda t: VALID[: t[0]] + t[1] + VALID[t[0] + len(t[1]):]),
))
def test_random_bytes_parse_or_raise_format_error(tmp_path, data):
    _read_or_format_error(write(tmp_path, data))
