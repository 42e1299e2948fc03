"""Host side of the link: open a stethoscope port, run the connect procedure, read events.

    with DeviceSession("/tmp/pcg-stethoscope") as session:   # or "socket://127.0.0.1:PORT"
        info = session.connect()                             # flush, STOP, START, DEVICE_INFO
        while True:
            try:
                events = session.read()                      # AudioChunk, Gap, SiteEvent, Status, ...
            except Disconnected:
                session.reconnect()                          # reopen the same path; gaps are reported

pyserial is imported here only, when a port is opened (firmware_bridge itself needs numpy only).
A program that must stop promptly (a service manager's SIGTERM) passes `stop`, an event that the
waits for the device check: once set, connect() and reconnect() raise Stopped within one read.
"""

from __future__ import annotations

import os
import threading
import time

from firmware_bridge import protocol as p

try:  # a serial port's tcdrain/tcflush raise termios.error (not an OSError) when the device vanishes
    from termios import error as _TermiosError
except ImportError:  # not a POSIX system: pyserial raises SerialException there
    class _TermiosError(Exception):
        pass

#: Consecutive "ready but returned no data" reads accepted on a port whose node still exists
#: (a pseudo-terminal under load does this now and then) before it counts as gone.
_EMPTY_READS_TOLERATED = 200


class LinkError(Exception):
    """The stethoscope link cannot be used; the message says what to do."""


class DeviceTimeout(LinkError):
    """The device did not answer in time."""


class Disconnected(LinkError):
    """The port went away (cable unplugged, device reset, emulator reconnect)."""


class Stopped(LinkError):
    """The host stopped waiting for the device: the program is shutting down."""


class ProtocolVersionError(LinkError):
    """The device speaks a protocol major version this host does not."""


class SampleRateError(LinkError):
    """The device's declared audio format is not the one the host expects."""


class DeviceSession:
    """One stethoscope on `port` (a device path, a symlink, or a pyserial URL such as
    socket://127.0.0.1:PORT). `expected_rate_hz=None` accepts any declared rate; `stop`, once
    set, ends a wait for the device (Stopped)."""

    def __init__(
        self,
        port: str,
        baudrate: int = 921600,
        expected_rate_hz: int | None = p.DEFAULT_RATE_HZ,
        timeout_s: float = 2.0,
        read_timeout_s: float = 0.05,
        stop: threading.Event | None = None,
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.expected_rate_hz = expected_rate_hz
        self.timeout_s = timeout_s
        self.read_timeout_s = read_timeout_s
        self.stop = stop or threading.Event()
        self.decoder = p.Decoder()
        self.info: p.DeviceInfo | None = None
        self._encoder = p.Encoder()
        self._serial = None
        self._backlog: list[p.Event] = []  # what arrived right after DEVICE_INFO in connect()
        self._empty_reads = 0  # consecutive "ready but no data" reads (see _read_raw)

    # -- port ----------------------------------------------------------------------------------

    def open(self) -> DeviceSession:
        import serial

        try:
            self._serial = serial.serial_for_url(self.port, baudrate=self.baudrate, timeout=self.read_timeout_s)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise Disconnected(f"cannot open stethoscope port {self.port}: {exc}") from exc
        return self

    def close(self) -> None:
        if self._serial is not None:
            try:
                self._serial.close()
            except (OSError, _TermiosError):
                pass
            self._serial = None

    def __enter__(self) -> DeviceSession:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        if self._serial is not None:
            try:
                self.send(p.Stop())
            except LinkError:
                pass
        self.close()

    # -- protocol ------------------------------------------------------------------------------

    def send(self, command: p.Start | p.Stop | p.SetSite) -> None:
        import serial

        try:
            self._serial.write(self._encoder.encode(command))
            self._serial.flush()
        except (serial.SerialException, OSError, _TermiosError) as exc:
            raise Disconnected(f"stethoscope port {self.port} went away while sending: {exc}") from exc

    def connect(self) -> p.DeviceInfo:
        """Flush, STOP, START, and wait for DEVICE_INFO (START is resent once halfway). Returns the
        device info; raises ProtocolVersionError, SampleRateError, DeviceTimeout or Stopped."""
        self._flush()
        self.send(p.Stop())
        time.sleep(0.05)
        self._flush()
        self.decoder.reset()
        self.send(p.Start())
        deadline = time.monotonic() + self.timeout_s
        resend_at = time.monotonic() + self.timeout_s / 2
        while time.monotonic() < deadline:
            self._check_stop("waiting for the stethoscope to answer")
            events = self._read_raw()
            for k, event in enumerate(events):
                if isinstance(event, p.UnsupportedVersion):
                    raise ProtocolVersionError(
                        f"the stethoscope on {self.port} speaks protocol {event.major}.{event.minor}; this host "
                        f"speaks {p.PROTOCOL_MAJOR}.x: update the screening software or flash matching firmware"
                    )
                if isinstance(event, p.DeviceInfo):
                    self._check(event)
                    self.info = event
                    self._backlog = events[k + 1 :]
                    return event
            if resend_at and time.monotonic() >= resend_at:
                self.send(p.Start())
                resend_at = 0.0
        raise DeviceTimeout(
            f"no DEVICE_INFO from {self.port} within {self.timeout_s:g} s after START: check the cable, "
            f"that the stethoscope is on, and the baud rate ({self.baudrate})"
        )

    def _check(self, info: p.DeviceInfo) -> None:
        if self.expected_rate_hz is not None and info.rate_hz != self.expected_rate_hz:
            raise SampleRateError(
                f"the stethoscope on {self.port} streams at {info.rate_hz} Hz but {self.expected_rate_hz} Hz is "
                f"expected: set its firmware to {self.expected_rate_hz} Hz"
            )
        if info.sample_bits != 16 or info.channels != 1:
            raise SampleRateError(
                f"the stethoscope on {self.port} sends {info.channels} channel(s) of {info.sample_bits}-bit "
                "samples; only mono 16-bit audio is supported"
            )

    def set_site(self, site: str) -> None:
        self.send(p.SetSite(site))

    def read(self) -> list[p.Event]:
        """Events from what arrived within the read timeout (maybe none). Raises Disconnected."""
        if self._backlog:
            events, self._backlog = self._backlog, []
            return events
        return self._read_raw()

    def reconnect(self, timeout_s: float = 5.0) -> None:
        """Reopen the same path (retrying until `timeout_s`) and keep decoding where the stream
        was, so samples missed while away come out as one Gap. Sends no command: a device that
        kept streaming just continues; one that rebooted sends DEVICE_INFO (call connect())."""
        self.close()
        deadline = time.monotonic() + timeout_s
        while True:
            self._check_stop("waiting for the stethoscope to come back")
            try:
                self.open()
                break
            except Disconnected:
                if time.monotonic() >= deadline:
                    raise
                self.stop.wait(0.02)
        self.decoder.reset(expected_index=self.decoder.expected_index)

    def _check_stop(self, doing: str) -> None:
        if self.stop.is_set():
            raise Stopped(f"stopped {doing} on {self.port}: the program is shutting down")

    def _flush(self) -> None:
        import serial

        try:
            self._serial.reset_input_buffer()
        except (serial.SerialException, OSError, _TermiosError) as exc:
            raise Disconnected(f"stethoscope port {self.port} went away: {exc}") from exc

    def _read_raw(self) -> list[p.Event]:
        import serial

        if self._serial is None:
            raise Disconnected(f"stethoscope port {self.port} is not open")
        try:
            data = self._serial.read(max(4096, self._serial.in_waiting))
        except (serial.SerialException, OSError) as exc:
            # A pseudo-terminal under load can report readiness and then return no data while its
            # other end is still there; a port whose device node is gone has really gone away.
            self._empty_reads += 1
            if "returned no data" in str(exc) and os.path.exists(self.port) and self._empty_reads < _EMPTY_READS_TOLERATED:
                time.sleep(0.001)
                return []
            raise Disconnected(f"stethoscope port {self.port} went away: {exc}") from exc
        self._empty_reads = 0
        return self.decoder.feed(data) if data else []
