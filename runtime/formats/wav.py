"""WAV files: 16-bit PCM mono at any rate, read by a RIFF parser of our own.

Python's `wave` module rejects WAVE_FORMAT_EXTENSIBLE headers, which many recorders write even for
plain 16-bit mono, so the chunks are walked here: unknown chunks (LIST, fact, ...) are skipped, odd
chunk sizes are followed by their pad byte, and `fmt ` must come before `data`. Anything other than
16-bit integer PCM mono is refused with a FormatError that says what the file holds instead, and so
is a declared rate above runtime.dsp's MAX_RATE_HZ (192 kHz: no recorder's rate, a damaged header).
The RIFF size field is not trusted (writers that stream often leave it wrong): chunks are walked
against the real file size. A data chunk shorter than it declares is an error, never a silent
partial read; bytes after a complete data chunk (a pad byte, trailing chunks) are ignored.
"""

from __future__ import annotations

import os
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from runtime.dsp.resample import MAX_RATE_HZ
from runtime.formats.errors import FormatError
from runtime.records import Audio

_PCM = 0x0001
_IEEE_FLOAT = 0x0003
_EXTENSIBLE = 0xFFFE
# KSDATAFORMAT_SUBTYPE_* GUIDs share these 14 bytes after the 2-byte format tag.
_SUBFORMAT_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
_FORMAT_NAMES = {
    0x0002: "Microsoft ADPCM",
    0x0006: "A-law",
    0x0007: "mu-law",
    0x0011: "IMA ADPCM",
    0x0055: "MPEG layer 3",
}
_EXPECTED = "16-bit PCM mono"
_HEADER_BYTES = 44  # what write_wav writes; CirCor .hea files declare this offset ("16+44")


@dataclass(frozen=True)
class WavHeader:
    """What a WAV header says, without the samples: rate, length and where the samples start."""

    rate_hz: int
    frames: int
    data_offset: int  # bytes from the start of the file to the first sample

    @property
    def duration_s(self) -> float:
        return self.frames / self.rate_hz


def read_wav_header(path: str | Path) -> WavHeader:
    """Parse and validate the header of a 16-bit PCM mono WAV file; reads no samples."""
    with open(path, "rb") as f:
        return _parse_header(f, path, os.fstat(f.fileno()).st_size)


def read_wav(path: str | Path) -> Audio:
    """Read a 16-bit PCM mono WAV file (plain or WAVE_FORMAT_EXTENSIBLE) at any rate."""
    with open(path, "rb") as f:
        header = _parse_header(f, path, os.fstat(f.fileno()).st_size)
        f.seek(header.data_offset)
        samples = np.fromfile(f, dtype="<i2", count=header.frames)
    if len(samples) != header.frames:
        raise FormatError(path, f"file shrank while reading: got {len(samples)} of {header.frames} samples")
    return Audio(samples.astype(np.int16, copy=False), header.rate_hz)


def write_wav(path: str | Path, audio: Audio) -> None:
    """Write `audio` as a standard 44-byte-header 16-bit PCM mono WAV file.

    Written to a temporary file beside `path` and renamed over it, so a reader never sees a
    half-written file. Raises ValueError for audio that read_wav would refuse (empty, not int16).
    """
    path = Path(path)
    samples = np.asarray(audio.samples)
    if samples.ndim != 1 or samples.dtype != np.int16:
        raise ValueError(f"write_wav {path}: samples are {samples.dtype} with shape {samples.shape}; expected 1-D int16")
    if samples.size == 0:
        raise ValueError(f"write_wav {path}: no samples; expected at least one")
    rate_hz = int(audio.rate_hz)
    if not 0 < rate_hz <= MAX_RATE_HZ:
        raise ValueError(f"write_wav {path}: sample rate {audio.rate_hz} Hz; expected 1 to {MAX_RATE_HZ} Hz")
    data = samples.astype("<i2", copy=False).tobytes()
    if len(data) + _HEADER_BYTES - 8 > 0xFFFFFFFF:
        raise ValueError(f"write_wav {path}: {len(data)} bytes of audio do not fit a RIFF file (4 GiB)")
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", len(data) + _HEADER_BYTES - 8, b"WAVE",
        b"fmt ", 16, _PCM, 1, rate_hz, rate_hz * 2, 2, 16,
        b"data", len(data),
    )  # fmt fields: tag, channels, rate, byte rate, block align, bits per sample
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "xb") as f:
            f.write(header)
            f.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _parse_header(f: BinaryIO, path: str | Path, file_size: int) -> WavHeader:
    if file_size == 0:
        raise FormatError(path, "empty file (0 bytes)", expected=f"a RIFF/WAVE file holding {_EXPECTED} audio")
    head = f.read(12)
    if len(head) < 12:
        raise FormatError(path, f"truncated header: the file has only {file_size} bytes",
                          expected="at least the 12-byte RIFF/WAVE header")
    riff, _, wave = struct.unpack("<4sI4s", head)
    if riff != b"RIFF" or wave != b"WAVE":
        raise FormatError(path, f"not a RIFF/WAVE file (starts with {head[:4]!r}, form type {head[8:12]!r})",
                          expected=f"'RIFF' ... 'WAVE' holding {_EXPECTED} audio")
    rate_hz = None
    position = 12
    while True:
        if position + 8 > file_size:
            if position < file_size:
                raise FormatError(path, f"truncated chunk header at byte {position} "
                                        f"({file_size - position} of 8 bytes present)")
            missing = "no 'fmt ' chunk and no 'data' chunk" if rate_hz is None else "no 'data' chunk"
            raise FormatError(path, missing, expected="a 'fmt ' chunk followed by a 'data' chunk")
        f.seek(position)
        chunk_id, size = struct.unpack("<4sI", f.read(8))
        body = position + 8
        available = file_size - body
        name = chunk_id.decode("latin-1")
        if chunk_id == b"data":
            if rate_hz is None:
                raise FormatError(path, f"'data' chunk at byte {position} comes before any 'fmt ' chunk",
                                  expected="'fmt ' before 'data'")
            if size > available:
                raise FormatError(path, f"truncated: data chunk declares {size} bytes, file has {available}")
            if size == 0:
                raise FormatError(path, "zero samples: the data chunk is empty", expected="at least one sample")
            if size % 2:
                raise FormatError(path, f"data chunk has {size} bytes, not a multiple of the block align (2)",
                                  expected=f"whole {_EXPECTED} samples")
            return WavHeader(rate_hz=rate_hz, frames=size // 2, data_offset=body)
        if size > available:
            raise FormatError(path, f"truncated: {name!r} chunk at byte {position} declares {size} bytes, "
                                    f"file has {available}")
        if chunk_id == b"fmt ":
            rate_hz = _parse_fmt(f.read(min(size, 40)), path)
        position = body + size + (size & 1)  # odd-sized chunks are followed by a pad byte


def _parse_fmt(raw: bytes, path: str | Path) -> int:
    """Validate a fmt chunk body; returns the sample rate."""
    if len(raw) < 16:
        raise FormatError(path, f"'fmt ' chunk has {len(raw)} bytes", expected="at least 16")
    tag, channels, rate_hz, _, block_align, bits = struct.unpack("<HHIIHH", raw[:16])
    encoding = tag
    if tag == _EXTENSIBLE:
        if len(raw) < 40:
            raise FormatError(path, f"WAVE_FORMAT_EXTENSIBLE 'fmt ' chunk has {len(raw)} bytes", expected="40")
        subformat = raw[24:40]
        if subformat[2:] != _SUBFORMAT_GUID_TAIL:
            raise FormatError(path, f"WAVE_FORMAT_EXTENSIBLE with unknown subformat GUID {subformat.hex()}",
                              expected="the PCM subformat")
        (encoding,) = struct.unpack("<H", subformat[:2])
    if encoding == _IEEE_FLOAT:
        raise FormatError(path, f"IEEE float samples ({bits}-bit)", expected=_EXPECTED)
    if encoding != _PCM:
        name = _FORMAT_NAMES.get(encoding, "unknown encoding")
        raise FormatError(path, f"{name} (format tag 0x{encoding:04x})", expected=_EXPECTED)
    if channels != 1:
        raise FormatError(path, f"{channels} channels", expected="mono (1 channel) 16-bit PCM")
    if bits != 16:
        raise FormatError(path, f"{bits}-bit samples", expected=_EXPECTED)
    if block_align != 2:
        raise FormatError(path, f"block align {block_align}", expected="2 bytes per frame for 16-bit mono")
    if rate_hz == 0:
        raise FormatError(path, "sample rate 0 Hz", expected="a positive sample rate")
    if rate_hz > MAX_RATE_HZ:
        raise FormatError(path, f"sample rate {rate_hz} Hz, more than any recorder uses (a damaged header?)",
                          expected=f"at most {MAX_RATE_HZ} Hz")
    return rate_hz
