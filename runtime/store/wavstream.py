"""A WAV file written as audio arrives, valid on disk after any crash, and its repair.

Format: 16-bit PCM mono with the standard 44-byte header (what runtime.formats.wav reads and writes).
Samples go straight to the file descriptor (no user-space buffer). Every `sync_every_s` of audio,
or of wall time (checked as chunks arrive), whichever comes first, the header's RIFF and data sizes
are rewritten to match the samples written and the file is fsynced, so a power cut loses less than
`sync_every_s` of audio and a killed process loses nothing (the kernel still holds what was written). After a crash the header may lag
the data; `repair_wav` sizes it to the whole samples actually on disk.

Files and folders are private to the user running the store: a WAV is created 0600 and a folder
0700, set explicitly (fchmod / chmod), so the umask cannot loosen them.

The disk filling (ENOSPC, or free space under a reserve, read through an injectable `free_bytes`)
stops the writer cleanly: the file is cut back to whole samples, its header fixed and synced, and
DiskFullError says how many samples were kept.
"""

from __future__ import annotations

import errno
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from runtime.store.errors import DiskFullError

HEADER_BYTES = 44
PRIVATE_FILE_MODE = 0o600  # recordings of children: readable by the service user only
PRIVATE_DIR_MODE = 0o700
_SIZE_FIELDS = ((4, 36), (40, 0))  # (offset, bytes added to the data size): RIFF size, data size
_MAX_DATA_BYTES = 0xFFFFFFFF - 36


def wav_header(n_samples: int, rate_hz: int) -> bytes:
    """The 44-byte header of a 16-bit PCM mono WAV holding `n_samples` at `rate_hz`."""
    data_bytes = 2 * n_samples
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", 36 + data_bytes, b"WAVE",
        b"fmt ", 16, 1, 1, rate_hz, rate_hz * 2, 2, 16,
        b"data", data_bytes,
    )  # fmt fields: PCM tag, channels, rate, byte rate, block align, bits per sample


def fsync_dir(path: str | Path) -> None:
    """fsync a directory so a file created or renamed in it survives a power cut."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs_durable(path: Path) -> None:
    """Create `path` and any missing parents, each private (0700), fsyncing each parent that gained an entry."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
        os.chmod(directory, PRIVATE_DIR_MODE)  # mkdir's mode passes through the umask; chmod does not
        fsync_dir(directory.parent)


def repair_wav(path: str | Path, rate_hz: int) -> int:
    """Make the WAV at `path` valid and return its number of whole samples.

    Cuts a trailing half sample, rewrites the header sizes (and the whole header if it is missing
    or not ours, with `rate_hz` from the database) and fsyncs. A file already consistent is left
    untouched. Raises FileNotFoundError when there is no file.
    """
    fd = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, HEADER_BYTES, 0)
        data_bytes = max(size - HEADER_BYTES, 0)
        data_bytes = min(data_bytes - data_bytes % 2, _MAX_DATA_BYTES)
        n_samples = data_bytes // 2
        expected = wav_header(n_samples, rate_hz)
        if size == HEADER_BYTES + data_bytes and _same_format(head, expected) and head == _with_sizes(head, n_samples):
            return n_samples
        if not _same_format(head, expected):
            os.pwrite(fd, expected, 0)
        else:
            _write_sizes(fd, n_samples)
        os.ftruncate(fd, HEADER_BYTES + data_bytes)
        os.fsync(fd)
        return n_samples
    finally:
        os.close(fd)


def _same_format(head: bytes, expected: bytes) -> bool:
    """True when `head` is our 44-byte header layout at the same rate (sizes aside)."""
    return len(head) == HEADER_BYTES and head[:4] == expected[:4] and head[8:40] == expected[8:40]


def _with_sizes(head: bytes, n_samples: int) -> bytes:
    out = bytearray(head)
    for offset, extra in _SIZE_FIELDS:
        out[offset : offset + 4] = struct.pack("<I", 2 * n_samples + extra)
    return bytes(out)


def _write_sizes(fd: int, n_samples: int) -> None:
    for offset, extra in _SIZE_FIELDS:
        os.pwrite(fd, struct.pack("<I", 2 * n_samples + extra), offset)


class WavStreamWriter:
    """Appends int16 samples to a WAV file, syncing data and header every `sync_every_s`.

    Make one with `create` (a new file) or `append_to` (continue a repaired file). `write` returns
    True when it synced, so the caller can record progress elsewhere at the same moments.
    """

    def __init__(
        self,
        fd: int,
        path: Path,
        rate_hz: int,
        n_samples: int,
        *,
        sync_every_s: float,
        free_bytes: Callable[[], int] | None,
        reserve_bytes: int,
    ):
        self.path = path
        self.rate_hz = rate_hz
        self._fd: int | None = fd
        self._data_bytes = 2 * n_samples  # bytes of audio the kernel has accepted
        self._synced_samples = n_samples
        self._sync_every_samples = max(1, int(round(sync_every_s * rate_hz)))
        self._sync_every_s = sync_every_s
        self._last_sync = time.monotonic()
        self._free_bytes = free_bytes
        self._reserve_bytes = reserve_bytes
        self.stopped_for_disk = False

    @classmethod
    def create(cls, path: str | Path, rate_hz: int, **options) -> WavStreamWriter:
        """A new, empty, valid WAV at `path` (which must not exist), durable with its directory entry."""
        path = Path(path)
        make_dirs_durable(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
        try:
            os.fchmod(fd, PRIVATE_FILE_MODE)  # exactly 0600, whatever the umask
            os.write(fd, wav_header(0, rate_hz))
            os.fsync(fd)
            fsync_dir(path.parent)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        return cls(fd, path, rate_hz, 0, **options)

    @classmethod
    def append_to(cls, path: str | Path, rate_hz: int, **options) -> WavStreamWriter:
        """Continue the WAV at `path` after its last whole sample (repairing it first)."""
        path = Path(path)
        n_samples = repair_wav(path, rate_hz)
        fd = os.open(path, os.O_WRONLY)
        os.lseek(fd, HEADER_BYTES + 2 * n_samples, os.SEEK_SET)
        return cls(fd, path, rate_hz, n_samples, **options)

    @property
    def samples_written(self) -> int:
        return self._data_bytes // 2

    @property
    def samples_synced(self) -> int:
        """Samples the header covers and that are on stable storage."""
        return self._synced_samples

    @property
    def closed(self) -> bool:
        return self._fd is None

    def write(self, samples: np.ndarray) -> bool:
        """Append int16 samples; sync when due. Returns True if this call synced.

        Raises DiskFullError (after stopping cleanly) when the disk is full or below the reserve.
        """
        if self._fd is None:
            raise ValueError(f"{self.path}: the WAV writer is closed")
        data = samples.astype("<i2", copy=False).tobytes()
        if self._data_bytes + len(data) > _MAX_DATA_BYTES:
            raise ValueError(f"{self.path}: a WAV file holds at most 4 GiB; start a new recording")
        if self._free_bytes is not None and self._free_bytes() < self._reserve_bytes + len(data):
            self.stop_for_disk("free space fell below the recording reserve")
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                self._data_bytes += written
                view = view[written:]
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            self.stop_for_disk(exc.strerror or "no space left on device")
        unsynced = self.samples_written - self._synced_samples
        if unsynced >= self._sync_every_samples or time.monotonic() - self._last_sync >= self._sync_every_s:
            self.sync()
            return True
        return False

    def sync(self) -> None:
        """Header sizes to the whole samples written, then fsync (data and header together)."""
        if self._fd is None:
            return
        n_samples = self.samples_written
        try:
            _write_sizes(self._fd, n_samples)
            os.fsync(self._fd)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            self.stop_for_disk(exc.strerror or "no space left on device")
        self._synced_samples = n_samples
        self._last_sync = time.monotonic()

    def close(self) -> int:
        """Final sync and close; returns the number of samples in the file."""
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None
        return self._synced_samples

    def stop_for_disk(self, why: str) -> None:
        """Keep the whole samples already accepted, make the file valid, close it, raise DiskFullError."""
        fd, self._fd = self._fd, None
        self.stopped_for_disk = True
        keep = self.samples_written
        try:
            try:
                os.ftruncate(fd, HEADER_BYTES + 2 * keep)  # drops a half sample; never needs space
                _write_sizes(fd, keep)
                os.fsync(fd)
            except OSError:
                # The newest data may never reach the disk; fall back to what was already synced.
                keep = self._synced_samples
                try:
                    os.ftruncate(fd, HEADER_BYTES + 2 * keep)
                    _write_sizes(fd, keep)
                    os.fsync(fd)
                except OSError:
                    pass  # the header on disk is the last synced one, which matches `keep`
        finally:
            os.close(fd)
        self._data_bytes = 2 * keep
        self._synced_samples = keep
        raise DiskFullError(
            f"{self.path.name}: recording stopped, disk full ({why}); the file is valid and keeps "
            f"{keep / self.rate_hz:.1f} s ({keep} samples). Export and remove old recordings to free space.",
            samples_kept=keep,
        )
