"""The stethoscope link protocol (PROTOCOL.md): messages, frame encoder, incremental decoder.

A frame on the wire is ``COBS(header | payload | crc16_le) 0x00``. The header is 10 bytes,
little-endian: version (major << 4 | minor), message type, sequence number (u16), sample index
(u32), sample count (u16). The CRC is CRC-16/CCITT-FALSE over header and payload.

The decoder sits on the runtime's hot path: it splits whole chunks on 0x00 and decodes COBS by
walking code bytes only, so the per-byte work happens in C (bytes.split, binascii, numpy).
"""

from __future__ import annotations

import struct
from binascii import crc_hqx
from dataclasses import dataclass

import numpy as np

PROTOCOL_MAJOR = 1
PROTOCOL_MINOR = 0
PROTOCOL_VERSION = (PROTOCOL_MAJOR << 4) | PROTOCOL_MINOR

HEADER = struct.Struct("<BBHIH")  # version, type, seq, sample_index, count
HEADER_SIZE = HEADER.size  # 10
CRC_SIZE = 2
MAX_PAYLOAD = 512  # bytes: 256 int16 samples
MAX_SAMPLES_PER_CHUNK = MAX_PAYLOAD // 2
MAX_FRAME = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE  # 524 bytes before COBS
MAX_ENCODED = MAX_FRAME + MAX_FRAME // 254 + 1  # 527 bytes after COBS, without the delimiter
MIN_FRAME = HEADER_SIZE + CRC_SIZE
DELIMITER = b"\x00"
#: A frame equal to one of the last this many received (same seq, same bytes) is a duplicate: a
#: link that repeats a buffer repeats the frames it just delivered.
DUPLICATE_WINDOW = 16

DEFAULT_RATE_HZ = 4000
DEFAULT_CHUNK_SAMPLES = 64

# Message types. The high bit marks host -> device commands.
DEVICE_INFO = 0x01
AUDIO = 0x02
SITE_EVENT = 0x03
STATUS = 0x04
ERROR = 0x05
CMD_START = 0x81
CMD_STOP = 0x82
CMD_SET_SITE = 0x83

#: Site codes on the wire; the same order as runtime.sites.SITES (a test checks it).
SITE_CODES: tuple[str, ...] = ("AV", "PV", "TV", "MV", "Phc")

SITE_SOURCE_HOST = 0  # the device acknowledges a SET_SITE command
SITE_SOURCE_BUTTON = 1  # the operator pressed the site button on the stethoscope

STATUS_CHARGING = 0x01
STATUS_STREAMING = 0x02
STATUS_CLIPPING = 0x04

ERR_ADC_OVERRUN = 1  # the device lost samples internally (its buffer overflowed)
ERR_BAD_COMMAND = 2  # a command the device could not parse or does not know
ERR_UNSUPPORTED = 3  # a valid command the device cannot honour (e.g. unknown site)


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor)."""
    return crc_hqx(data, 0xFFFF)


# --- COBS ------------------------------------------------------------------------------------


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode `data` (no delimiter added). Output has no 0x00 and is len(data)+1..+n/254+1."""
    out = []
    parts = data.split(DELIMITER)
    last = len(parts) - 1
    for k, part in enumerate(parts):
        n = len(part)
        start = 0
        while n - start >= 254:
            out.append(b"\xff")
            out.append(part[start : start + 254])
            start += 254
        if start < n or k < last or n == 0:
            out.append(bytes((n - start + 1,)))
            out.append(part[start:])
    return b"".join(out)


def _cobs_decode_blocks(enc: bytes) -> bytes | None:
    out = []
    append = out.append
    i = 0
    n = len(enc)
    while True:
        code = enc[i]
        j = i + code
        if j > n:
            return None
        append(enc[i + 1 : j])
        if j == n:
            return b"".join(out)
        if code != 0xFF:
            append(DELIMITER)
        i = j


def cobs_decode(enc: bytes) -> bytes | None:
    """Decode one COBS block sequence (no 0x00 inside); None when it is malformed (truncated)."""
    # Fast path: without 0xFF codes every code byte after the first stands for a 0x00, so the
    # decoded frame is the input with those positions zeroed and the first byte dropped.
    i = enc[0]
    if i == 0xFF:
        return _cobs_decode_blocks(enc)
    n = len(enc)
    buf = bytearray(enc)
    while i < n:
        code = enc[i]
        if code == 0xFF:
            return _cobs_decode_blocks(enc)
        buf[i] = 0
        i += code
    if i != n:
        return None
    return bytes(memoryview(buf)[1:])


# --- messages --------------------------------------------------------------------------------

_INFO = struct.Struct("<BBBIBB")  # firmware major, minor, patch, rate_hz, sample_bits, channels
_STATUS = struct.Struct("<HBB")  # battery_mv, battery_pct, flags
_SITE = struct.Struct("<BB")  # site code, source


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """Sent by the device after START (and at boot). `sample_index` is where its audio will start."""

    firmware: tuple[int, int, int]
    rate_hz: int = DEFAULT_RATE_HZ
    sample_bits: int = 16
    channels: int = 1
    sample_index: int = 0


@dataclass(frozen=True, slots=True, eq=False)
class AudioChunk:
    """`samples` (int16, shape [n]) are stream samples first_index .. first_index + n - 1."""

    first_index: int
    samples: np.ndarray

    @property
    def end_index(self) -> int:
        return self.first_index + len(self.samples)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, AudioChunk)
            and other.first_index == self.first_index
            and np.array_equal(other.samples, self.samples)
        )


@dataclass(frozen=True, slots=True)
class SiteEvent:
    """The auscultation site changed at stream sample `sample_index` (button or SET_SITE ack)."""

    site: str  # one of SITE_CODES
    source: int = SITE_SOURCE_BUTTON
    sample_index: int = 0


@dataclass(frozen=True, slots=True)
class Status:
    """Battery and state flags (STATUS_*), sent periodically by the device."""

    battery_mv: int
    battery_pct: int
    flags: int = 0
    sample_index: int = 0


@dataclass(frozen=True, slots=True)
class DeviceError:
    """An error the device reports (ERR_* code) with a short ASCII text."""

    code: int
    text: str = ""
    sample_index: int = 0


@dataclass(frozen=True, slots=True)
class Start:
    """Host command: start a new recording; the device answers DeviceInfo, then audio from 0."""


@dataclass(frozen=True, slots=True)
class Stop:
    """Host command: stop streaming."""


@dataclass(frozen=True, slots=True)
class SetSite:
    """Host command: the operator is now at `site`; the device answers with a SiteEvent."""

    site: str


Message = DeviceInfo | AudioChunk | SiteEvent | Status | DeviceError | Start | Stop | SetSite


# --- decoder events (not messages: they describe the link, not the device) -------------------


@dataclass(frozen=True, slots=True)
class Gap:
    """Samples first_missing .. first_missing + count - 1 never arrived (emitted before the chunk
    that follows them)."""

    first_missing: int
    count: int


@dataclass(frozen=True, slots=True)
class UnsupportedVersion:
    """A valid frame with a protocol major version this decoder does not speak (emitted once per
    run of such frames); its contents are not decoded."""

    major: int
    minor: int


@dataclass(frozen=True, slots=True)
class FrameError:
    """A dropped frame (only when the decoder is built with report_errors=True)."""

    reason: str  # "crc", "length", "cobs", "oversize", "duplicate"
    size: int  # encoded bytes dropped


Event = Message | Gap | UnsupportedVersion | FrameError


# --- encoder ---------------------------------------------------------------------------------


def _site_code(site: str) -> int:
    try:
        return SITE_CODES.index(site)
    except ValueError:
        raise ValueError(f"unknown site {site!r}; expected one of {', '.join(SITE_CODES)}") from None


def _pack(message: Message) -> tuple[int, int, int, bytes]:
    """(type, sample_index, count, payload) of a message."""
    if isinstance(message, AudioChunk):
        samples = np.asarray(message.samples)
        if samples.dtype != np.int16:
            raise ValueError(f"audio samples must be int16, got {samples.dtype}")
        if not 1 <= len(samples) <= MAX_SAMPLES_PER_CHUNK:
            raise ValueError(f"audio chunk must hold 1..{MAX_SAMPLES_PER_CHUNK} samples, got {len(samples)}")
        return AUDIO, message.first_index, len(samples), samples.astype("<i2", copy=False).tobytes()
    if isinstance(message, DeviceInfo):
        payload = _INFO.pack(*message.firmware, message.rate_hz, message.sample_bits, message.channels)
        return DEVICE_INFO, message.sample_index, 0, payload
    if isinstance(message, SiteEvent):
        return SITE_EVENT, message.sample_index, 0, _SITE.pack(_site_code(message.site), message.source)
    if isinstance(message, Status):
        return STATUS, message.sample_index, 0, _STATUS.pack(message.battery_mv, message.battery_pct, message.flags)
    if isinstance(message, DeviceError):
        text = message.text.encode("ascii", "replace")[:255]
        return ERROR, message.sample_index, 0, bytes((message.code, len(text))) + text
    if isinstance(message, Start):
        return CMD_START, 0, 0, b""
    if isinstance(message, Stop):
        return CMD_STOP, 0, 0, b""
    if isinstance(message, SetSite):
        return CMD_SET_SITE, 0, 0, bytes((_site_code(message.site),))
    raise TypeError(f"not a protocol message: {message!r}")


def encode_frame(
    msg_type: int, payload: bytes, seq: int, sample_index: int = 0, count: int = 0, version: int = PROTOCOL_VERSION
) -> bytes:
    """One wire frame: COBS(header | payload | crc16 little-endian) followed by 0x00."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds the {MAX_PAYLOAD}-byte maximum")
    body = HEADER.pack(version, msg_type, seq & 0xFFFF, sample_index & 0xFFFFFFFF, count) + payload
    crc = crc_hqx(body, 0xFFFF)
    return cobs_encode(body + bytes((crc & 0xFF, crc >> 8))) + DELIMITER


class Encoder:
    """Encodes messages for one direction of the link, numbering frames 0, 1, ... (mod 2**16)."""

    def __init__(self, version: int = PROTOCOL_VERSION) -> None:
        self.seq = 0
        self.version = version

    def encode(self, message: Message) -> bytes:
        msg_type, sample_index, count, payload = _pack(message)
        frame = encode_frame(msg_type, payload, self.seq, sample_index, count, self.version)
        self.seq = (self.seq + 1) & 0xFFFF
        return frame

    def audio(self, first_index: int, samples: np.ndarray) -> bytes:
        """Encode int16 `samples` (shape [1..256]) as the chunk starting at stream index
        `first_index`, without building an AudioChunk (the emulator's hot path)."""
        if samples.dtype != np.int16 or not 1 <= len(samples) <= MAX_SAMPLES_PER_CHUNK:
            return self.encode(AudioChunk(first_index, samples))  # raises with the reason
        frame = encode_frame(AUDIO, samples.astype("<i2", copy=False).tobytes(), self.seq, first_index,
                             len(samples), self.version)
        self.seq = (self.seq + 1) & 0xFFFF
        return frame


def encode(message: Message, seq: int = 0) -> bytes:
    """Encode one message as frame number `seq`."""
    msg_type, sample_index, count, payload = _pack(message)
    return encode_frame(msg_type, payload, seq, sample_index, count)


# --- decoder ---------------------------------------------------------------------------------


@dataclass
class DecoderStats:
    """Counters since the decoder was made. frames_ok counts every frame that passed CRC and length
    checks (including unknown types, unsupported versions and duplicates)."""

    bytes_in: int = 0
    frames_ok: int = 0
    crc_errors: int = 0
    length_errors: int = 0  # too short, or audio payload != 2 * count, or payload below minimum
    cobs_errors: int = 0
    oversize_frames: int = 0  # more than MAX_ENCODED bytes without a delimiter (garbage, lost 0x00)
    version_errors: int = 0
    unknown_types: int = 0
    resyncs: int = 0  # valid frames that followed one or more dropped frames
    gaps: int = 0
    samples_lost: int = 0  # in gaps: inside a stream, and before the first chunk seen of a restarted one
    samples_ok: int = 0
    frames_missed: int = 0  # from sequence numbers: frames that never arrived or were dropped
    restarts: int = 0  # audio that went back in the stream (a new recording)
    duplicates: int = 0  # frames the link delivered again (dropped)

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


_MIN_PAYLOAD = {DEVICE_INFO: _INFO.size, SITE_EVENT: _SITE.size, STATUS: _STATUS.size, ERROR: 2, CMD_SET_SITE: 1}
_NO_PAYLOAD = {CMD_START: Start(), CMD_STOP: Stop()}
_KNOWN = frozenset(_MIN_PAYLOAD) | frozenset(_NO_PAYLOAD)


class Decoder:
    """Incremental frame decoder: feed(bytes) -> events, for arbitrary chunking of the byte stream.

    Emits messages (DeviceInfo, AudioChunk, ...), a Gap before an audio chunk whose first index
    is past the expected one, UnsupportedVersion, and FrameError when `report_errors` is set.
    `expected_index` is the stream index of the first sample to come (None: learn it from the
    first chunk); a DeviceInfo resets it to its sample_index. A chunk before the expected index
    starts a new stream (a restart whose DeviceInfo was lost): the new stream began at 0, so a
    Gap(0, first_index) comes before it when its first chunks were lost too. A repeat of one of
    the last DUPLICATE_WINDOW frames (same seq, same bytes) is dropped as a duplicate. Memory is
    bounded: at most MAX_ENCODED bytes of an unfinished frame, and the last DUPLICATE_WINDOW frames.
    """

    def __init__(self, expected_index: int | None = None, report_errors: bool = False) -> None:
        self.stats = DecoderStats()
        self.expected_index = expected_index
        self.report_errors = report_errors
        self._tail = b""
        self._discarding = False  # inside an oversize frame: drop up to the next delimiter
        self._after_error = False
        self._next_seq: int | None = None
        self._recent: list[bytes | None] = [None] * DUPLICATE_WINDOW  # frame with seq k at k % window
        self._version_reported = False

    @property
    def buffered(self) -> int:
        """Bytes held for an unfinished frame (never more than MAX_ENCODED)."""
        return len(self._tail)

    def reset(self, expected_index: int | None = None) -> None:
        """Forget partial input and stream position (e.g. after reopening the port); keep stats."""
        self._tail = b""
        self._discarding = False
        self._next_seq = None
        self._recent = [None] * DUPLICATE_WINDOW
        self.expected_index = expected_index

    def feed(self, data: bytes) -> list[Event]:
        stats = self.stats
        stats.bytes_in += len(data)
        events: list[Event] = []
        if self._discarding:
            end = data.find(0)
            if end < 0:
                return events
            data = data[end + 1 :]
            self._discarding = False
        buf = self._tail + data if self._tail else data
        parts = buf.split(DELIMITER)
        tail = parts.pop()
        if len(tail) > MAX_ENCODED:
            self._drop("oversize", len(tail), events)
            tail = b""
            self._discarding = True
        self._tail = tail
        for part in parts:
            if part:
                self._frame(part, events)
        return events

    def _drop(self, reason: str, size: int, events: list[Event]) -> None:
        stats = self.stats
        if reason == "crc":
            stats.crc_errors += 1
        elif reason == "length":
            stats.length_errors += 1
        elif reason == "cobs":
            stats.cobs_errors += 1
        else:
            stats.oversize_frames += 1
        self._after_error = True
        if self.report_errors:
            events.append(FrameError(reason, size))

    def _frame(self, part: bytes, events: list[Event]) -> None:
        n_enc = len(part)
        if n_enc > MAX_ENCODED:
            self._drop("oversize", n_enc, events)
            return
        frame = cobs_decode(part)
        if frame is None:
            self._drop("cobs", n_enc, events)
            return
        n = len(frame)
        if n < MIN_FRAME:
            self._drop("length", n_enc, events)
            return
        if crc_hqx(frame[:-2], 0xFFFF) != frame[-2] | (frame[-1] << 8):
            self._drop("crc", n_enc, events)
            return
        stats = self.stats
        version = frame[0]
        if version >> 4 != PROTOCOL_MAJOR:
            # Only the version byte is known to mean the same in every major version.
            stats.frames_ok += 1
            stats.version_errors += 1
            self._after_error = False
            if not self._version_reported:
                self._version_reported = True
                events.append(UnsupportedVersion(version >> 4, version & 0x0F))
            return
        self._version_reported = False
        version, msg_type, seq, index, count = HEADER.unpack_from(frame)
        if msg_type == AUDIO:
            if n != MIN_FRAME + 2 * count or count == 0:
                self._drop("length", n_enc, events)
                return
        elif msg_type in _KNOWN and (count != 0 or n - MIN_FRAME < _MIN_PAYLOAD.get(msg_type, 0)):
            self._drop("length", n_enc, events)
            return
        stats.frames_ok += 1
        if self._after_error:
            stats.resyncs += 1
            self._after_error = False
        next_seq = self._next_seq
        if next_seq is not None and seq != next_seq:
            # A restarted stream is numbered on (START) or from 0 (reboot), with new contents; only
            # a repeat of a recent frame, seq and bytes alike, is the link delivering it again.
            if (next_seq - 1 - seq) & 0xFFFF < DUPLICATE_WINDOW and frame == self._recent[seq % DUPLICATE_WINDOW]:
                stats.duplicates += 1
                if self.report_errors:
                    events.append(FrameError("duplicate", n_enc))
                return
            missed = (seq - next_seq) & 0xFFFF
            if missed < 0x8000:
                stats.frames_missed += missed
        self._next_seq = (seq + 1) & 0xFFFF
        self._recent[seq % DUPLICATE_WINDOW] = frame
        if msg_type == AUDIO:
            expected = self.expected_index
            if expected is not None and index != expected:
                ahead = (index - expected) & 0xFFFFFFFF
                if ahead < 0x80000000:
                    stats.gaps += 1
                    stats.samples_lost += ahead
                    events.append(Gap(expected, ahead))
                else:
                    stats.restarts += 1
                    if index:  # the new stream began at 0: its DeviceInfo and first chunks were lost
                        stats.gaps += 1
                        stats.samples_lost += index
                        events.append(Gap(0, index))
            self.expected_index = (index + count) & 0xFFFFFFFF
            stats.samples_ok += count
            events.append(AudioChunk(index, np.frombuffer(frame, "<i2", count, HEADER_SIZE)))
            return
        payload = frame[HEADER_SIZE:-2]
        message = self._message(msg_type, index, payload)
        if message is None:
            stats.unknown_types += 1
        else:
            events.append(message)

    def _message(self, msg_type: int, index: int, payload: bytes) -> Message | None:
        # Payloads may be longer than this version knows: newer minor versions append fields.
        if msg_type == STATUS:
            mv, pct, flags = _STATUS.unpack_from(payload)
            return Status(mv, pct, flags, index)
        if msg_type == SITE_EVENT:
            code, source = _SITE.unpack_from(payload)
            return SiteEvent(_site_name(code), source, index)
        if msg_type == DEVICE_INFO:
            major, minor, patch, rate_hz, bits, channels = _INFO.unpack_from(payload)
            self.expected_index = index
            return DeviceInfo((major, minor, patch), rate_hz, bits, channels, index)
        if msg_type == ERROR:
            text = payload[2 : 2 + payload[1]].decode("ascii", "replace")
            return DeviceError(payload[0], text, index)
        if msg_type == CMD_SET_SITE:
            return SetSite(_site_name(payload[0]))
        return _NO_PAYLOAD.get(msg_type)


def _site_name(code: int) -> str:
    # An unknown code from a newer device maps to the "other" slot rather than failing.
    return SITE_CODES[code] if code < len(SITE_CODES) else SITE_CODES[-1]


def decode_all(data: bytes, expected_index: int | None = None) -> list[Event]:
    """Decode a complete byte string (convenience for tests and files of captured bytes)."""
    return Decoder(expected_index).feed(data)
