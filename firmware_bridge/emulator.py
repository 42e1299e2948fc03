"""The virtual stethoscope: a device that speaks PROTOCOL.md over a pseudo-terminal or TCP.

Two layers:

- `VirtualStethoscope` is the device itself, without I/O: `receive(bytes)` takes host commands,
  `tick(device_time_s)` returns the wire bytes due by then (device info, audio at `rate_hz`, site
  and button events, battery status as `Battery` says), with seeded fault injection (`Faults`).
  Usable directly to feed a decoder (the benchmark does).
- `Emulator` runs a VirtualStethoscope in a thread, in real time or `speed` times faster, behind a
  raw-mode pseudo-terminal whose path is kept in a stable symlink (`link`), or behind a TCP port
  on 127.0.0.1. Simulated unplugs close the pty and make a new one (a new /dev/pts node), then
  repoint the symlink atomically; over TCP they drop the client.

    with Emulator(link="/tmp/pcg-stethoscope", speed=1.0, seed=3) as emu:
        port = serial.Serial(emu.path, 921600, timeout=0.05)  # or socket://127.0.0.1:PORT

Audio comes from WAV files (16-bit PCM, played in order and repeated; the site is taken from a
CirCor-style name `<patient>_<SITE>.wav`) or from the heart model (`firmware_bridge.heart`), one
generator per site from one seeded (or given) profile. All fault times are in device seconds.
`firmware_bridge.scenarios` sets these up for the practice patients of `pcg-runtime --scenario`.
"""

from __future__ import annotations

import errno
import math
import os
import re
import select
import socket
import termios
import threading
import time
import tty
import wave
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from firmware_bridge import protocol as p

if TYPE_CHECKING:
    from firmware_bridge.heart import HeartProfile

GUIDED_SITES = p.SITE_CODES[:4]
FIRMWARE_VERSION = (1, 0, 0)


@dataclass(frozen=True)
class Faults:
    """What the emulated link does wrong. Rates are probabilities; all draws come from the seed."""

    bit_flip_rate: float = 0.0  # per byte sent: one random bit flipped
    drop_byte_rate: float = 0.0  # per byte sent: the byte is lost
    truncate_rate: float = 0.0  # per frame: cut at a random point (the delimiter survives)
    garbage_rate: float = 0.0  # per frame: 1..64 random bytes (no 0x00) inserted before it
    duplicate_rate: float = 0.0  # per frame: delivered twice in a row (a link that repeats what it sent)
    stall_rate: float = 0.0  # per device second: output stops for stall_s, then comes in a burst
    stall_s: float = 0.3
    disconnect_every_s: float = 0.0  # 0 = never; else an unplug every this many device seconds
    reconnect_after_s: float = 0.5  # how long each unplug lasts; audio made meanwhile is lost
    unplug_at_site: str | None = None  # one unplug, unplug_after_s after the host first sets this site
    unplug_after_s: float = 2.0  # (mid-recording: the host sets the site as it starts recording there)
    declared_rate_hz: int | None = None  # DEVICE_INFO claims this rate (a wrong-rate device)
    protocol_version: int = p.PROTOCOL_VERSION  # e.g. 0x20: a device that speaks major version 2


@dataclass(frozen=True)
class Battery:
    """The charge the device reports in STATUS: `start_pct` at power-on, less `drain_pct_per_s` per
    device second and `drain_pct_per_site` each time the host sets a site (a recording starts),
    never below `floor_pct`. The default drains about 1 % a minute."""

    start_pct: float = 100.0
    drain_pct_per_s: float = 1 / 60
    drain_pct_per_site: float = 0.0
    floor_pct: int = 5

    def pct(self, device_s: float, sites_set: int) -> int:
        return max(self.floor_pct, math.ceil(self.start_pct - self.drain_pct_per_s * device_s
                                             - self.drain_pct_per_site * sites_set))


@dataclass
class FaultCounts:
    """What was injected and sent, for the summary printed on exit."""

    frames_sent: int = 0
    bytes_sent: int = 0
    samples_sent: int = 0
    bits_flipped: int = 0
    bytes_dropped: int = 0
    frames_truncated: int = 0
    frames_duplicated: int = 0
    garbage_bursts: int = 0
    garbage_bytes: int = 0
    stalls: int = 0
    disconnects: int = 0
    samples_lost_offline: int = 0  # made while unplugged, never sent
    commands_received: int = 0


class WavSource:
    """16-bit PCM WAV files played in order, repeated; at `rate_hz` (other rates are resampled
    linearly, which is adequate for an emulator, not for measurement)."""

    _SITE_IN_NAME = re.compile(r"_(AV|PV|TV|MV|Phc)(?:_\d+)?$")

    def __init__(self, paths: list[str | Path], rate_hz: int) -> None:
        if not paths:
            raise ValueError("WavSource needs at least one WAV file")
        self.tracks = [(self._load(Path(path), rate_hz), self._site_of(Path(path))) for path in paths]
        self.restart()

    def _load(self, path: Path, rate_hz: int) -> np.ndarray:
        try:
            with wave.open(str(path), "rb") as w:
                if w.getsampwidth() != 2 or w.getcomptype() != "NONE":
                    raise ValueError(f"{path}: only 16-bit PCM WAV files can be streamed")
                frames = w.readframes(w.getnframes())
                channels, file_rate = w.getnchannels(), w.getframerate()
        except (wave.Error, EOFError) as exc:
            raise ValueError(f"{path}: not a readable WAV file ({exc})") from None
        samples = np.frombuffer(frames, "<i2")[::channels].astype(np.int16)
        if len(samples) == 0:
            raise ValueError(f"{path}: the WAV file holds no samples")
        if file_rate != rate_hz:
            t = np.arange(int(len(samples) * rate_hz / file_rate)) * (file_rate / rate_hz)
            samples = np.interp(t, np.arange(len(samples)), samples).round().astype(np.int16)
        return samples

    def _site_of(self, path: Path) -> str:
        match = self._SITE_IN_NAME.search(path.stem)
        return match.group(1) if match else p.SITE_CODES[-1]

    @property
    def site(self) -> str:
        return self.tracks[self._track][1]

    def set_site(self, site: str) -> None:
        """The operator's choice does not change what a file contains."""

    def restart(self) -> None:
        self._track = 0
        self._pos = 0

    def read(self, n: int) -> np.ndarray:
        """Up to `n` samples; fewer at the end of a file, so a chunk never spans two files."""
        samples = self.tracks[self._track][0]
        out = samples[self._pos : self._pos + n]
        self._pos += len(out)
        if self._pos >= len(samples):
            self._track = (self._track + 1) % len(self.tracks)
            self._pos = 0
        return out


class HeartSource:
    """Synthetic PCG from the heart model: one profile (drawn from the seed unless given), one
    generator per site."""

    def __init__(self, rate_hz: int, seed: int, age_group: str = "Child", site: str = "AV",
                 profile: HeartProfile | None = None) -> None:
        from firmware_bridge.heart import HeartSoundGenerator, random_profile

        self.profile = profile if profile is not None else random_profile(np.random.default_rng(seed), age_group)
        self.generators = {
            s: HeartSoundGenerator(self.profile, s, rate_hz, seed * 10 + k) for k, s in enumerate(p.SITE_CODES)
        }
        self.first_site = site
        self.site = site

    def set_site(self, site: str) -> None:
        self.site = site

    def restart(self) -> None:
        for generator in self.generators.values():
            generator.reset()
        self.site = self.first_site

    def read(self, n: int) -> np.ndarray:
        return self.generators[self.site].read(n)


class VirtualStethoscope:
    """The device's behaviour (no I/O). Times are device seconds from power-on."""

    def __init__(
        self,
        source: WavSource | HeartSource,
        rate_hz: int = p.DEFAULT_RATE_HZ,
        chunk_samples: int = p.DEFAULT_CHUNK_SAMPLES,
        seed: int = 0,
        faults: Faults = Faults(),
        status_every_s: float = 1.0,
        site_every_s: float = 0.0,
        battery: Battery = Battery(),
    ) -> None:
        if not 1 <= chunk_samples <= p.MAX_SAMPLES_PER_CHUNK:
            raise ValueError(f"chunk_samples must be 1..{p.MAX_SAMPLES_PER_CHUNK}, got {chunk_samples}")
        self.source = source
        self.rate_hz = rate_hz
        self.chunk_samples = chunk_samples
        self.faults = faults
        self.status_every_s = status_every_s
        self.site_every_s = site_every_s
        self.battery = battery
        self.sites_set = 0  # SET_SITE commands received
        self.counts = FaultCounts()
        self._rng = np.random.default_rng(seed)
        self._encoder = p.Encoder(version=faults.protocol_version)
        self._commands = p.Decoder()
        self._pending: list[tuple[bytes, int]] = []  # (frame, samples in it) not yet sent
        self.streaming = False
        self.index = 0  # the sample clock: index of the next sample
        self._stream_t0 = 0.0
        self._now = 0.0
        self._next_status = 0.0
        self._next_button = float("inf")  # set by START
        self._next_stall = self._draw_stall(0.0)
        self._stall_until = 0.0
        every = faults.disconnect_every_s
        self._next_unplug = every if every > 0 else float("inf")
        self._site_unplug_at = float("inf")  # set by the SET_SITE that Faults.unplug_at_site names
        self._site_unplugged = False
        self._offline_until = 0.0
        self._send(self._device_info())  # a device announces itself at boot

    # -- host side -----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """False during a simulated unplug (the transport closes its end meanwhile)."""
        return self._now >= self._offline_until

    def receive(self, data: bytes) -> None:
        """Bytes from the host; commands take effect at the current device time."""
        unknown = self._commands.stats.unknown_types
        for event in self._commands.feed(data):
            self.counts.commands_received += isinstance(event, (p.Start, p.Stop, p.SetSite))
            if isinstance(event, p.Start):
                self.source.restart()
                self.streaming = True
                self.index = 0
                self._stream_t0 = self._now
                self._next_button = self._now + (self.site_every_s or float("inf"))
                self._send(self._device_info())
            elif isinstance(event, p.Stop):
                self.streaming = False
            elif isinstance(event, p.SetSite):
                self.sites_set += 1
                if event.site == self.faults.unplug_at_site and not self._site_unplugged:
                    self._site_unplugged = True
                    self._site_unplug_at = self._now + self.faults.unplug_after_s
                self.source.set_site(event.site)
                self._send(p.SiteEvent(event.site, p.SITE_SOURCE_HOST, self.index))
            elif isinstance(event, p.UnsupportedVersion):
                self._send(p.DeviceError(p.ERR_BAD_COMMAND, f"unsupported protocol {event.major}.{event.minor}", self.index))
            else:
                self._send(p.DeviceError(p.ERR_BAD_COMMAND, f"not a command: {type(event).__name__}", self.index))
        if self._commands.stats.unknown_types > unknown:
            self._send(p.DeviceError(p.ERR_BAD_COMMAND, "unknown command type", self.index))

    def tick(self, now_s: float) -> bytes:
        """Advance the device to `now_s` and return the wire bytes it sends by then."""
        self._now = now_s = max(now_s, self._now)
        if now_s >= self._next_unplug:
            self.counts.disconnects += 1
            self._offline_until = self._next_unplug + self.faults.reconnect_after_s
            self._next_unplug += self.faults.disconnect_every_s
        if now_s >= self._site_unplug_at:
            self.counts.disconnects += 1
            self._offline_until = max(self._offline_until, self._site_unplug_at + self.faults.reconnect_after_s)
            self._site_unplug_at = float("inf")
        if self.streaming:
            self._make_audio(now_s)
        if now_s >= self._next_status:
            self._next_status = now_s + self.status_every_s
            self._send(self._status())
        if self.streaming and now_s >= self._next_button:
            self._next_button += self.site_every_s
            site = GUIDED_SITES[(GUIDED_SITES.index(self.source.site) + 1) % 4] if self.source.site in GUIDED_SITES else "AV"
            self.source.set_site(site)
            self._send(p.SiteEvent(site, p.SITE_SOURCE_BUTTON, self.index))
        if now_s >= self._next_stall:
            self.counts.stalls += 1
            self._stall_until = now_s + self.faults.stall_s
            self._next_stall = self._draw_stall(self._stall_until)
        if not self.connected:  # what the device makes meanwhile goes nowhere
            self.counts.samples_lost_offline += sum(n for _, n in self._pending)
            self._pending.clear()
            return b""
        if now_s < self._stall_until or not self._pending:
            return b""
        self.counts.samples_sent += sum(n for _, n in self._pending)
        frames = [frame for frame, _ in self._pending]
        self._pending.clear()
        return self._corrupt(frames)

    # -- internals -----------------------------------------------------------------------------

    def _device_info(self) -> p.DeviceInfo:
        rate = self.faults.declared_rate_hz or self.rate_hz
        return p.DeviceInfo(FIRMWARE_VERSION, rate, 16, 1, self.index)

    def _status(self) -> p.Status:
        pct = self.battery.pct(self._now, self.sites_set)
        flags = p.STATUS_STREAMING if self.streaming else 0
        return p.Status(3300 + 9 * pct, pct, flags, self.index)

    def _send(self, message: p.Message) -> None:
        self._pending.append((self._encoder.encode(message), 0))

    def _make_audio(self, now_s: float) -> None:
        due = int((now_s - self._stream_t0) * self.rate_hz)
        while due - self.index >= self.chunk_samples:
            site = self.source.site
            samples = self.source.read(self.chunk_samples)
            self._pending.append((self._encoder.audio(self.index, samples), len(samples)))
            self.index += len(samples)
            if self.source.site != site:  # the next sample starts another file: announce its site
                self._send(p.SiteEvent(self.source.site, p.SITE_SOURCE_BUTTON, self.index))

    def _draw_stall(self, after_s: float) -> float:
        rate = self.faults.stall_rate
        return after_s + self._rng.exponential(1.0 / rate) if rate > 0 else float("inf")

    def _corrupt(self, frames: list[bytes]) -> bytes:
        f, counts, rng = self.faults, self.counts, self._rng
        counts.frames_sent += len(frames)
        if f.truncate_rate or f.garbage_rate or f.duplicate_rate:
            out = []
            for frame in frames:
                if f.duplicate_rate and rng.random() < f.duplicate_rate:
                    counts.frames_duplicated += 1
                    out.append(frame)
                if f.garbage_rate and rng.random() < f.garbage_rate:
                    burst = rng.integers(1, 256, int(rng.integers(1, 65)), dtype=np.uint8).tobytes()
                    counts.garbage_bursts += 1
                    counts.garbage_bytes += len(burst)
                    out.append(burst)
                if f.truncate_rate and rng.random() < f.truncate_rate and len(frame) > 2:
                    counts.frames_truncated += 1
                    frame = frame[: int(rng.integers(1, len(frame) - 1))] + p.DELIMITER
                out.append(frame)
            frames = out
        data = b"".join(frames)
        if f.bit_flip_rate:
            n = rng.binomial(len(data), f.bit_flip_rate)
            if n:
                buf = np.frombuffer(data, np.uint8).copy()
                where = rng.integers(0, len(buf), n)
                buf[where] ^= (1 << rng.integers(0, 8, n)).astype(np.uint8)
                counts.bits_flipped += n
                data = buf.tobytes()
        if f.drop_byte_rate:
            keep = rng.random(len(data)) >= f.drop_byte_rate
            counts.bytes_dropped += int(len(data) - keep.sum())
            data = np.frombuffer(data, np.uint8)[keep].tobytes()
        counts.bytes_sent += len(data)
        return data


# --- transports --------------------------------------------------------------------------------


class _PtyTransport:
    """A raw-mode pseudo-terminal; `link` (a symlink) always points at the current slave."""

    def __init__(self, link: str | Path | None) -> None:
        self.link = Path(link) if link else None
        self.master = self.slave = -1
        self.slave_path = ""

    @property
    def path(self) -> str:
        return str(self.link) if self.link else self.slave_path

    def open(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave, termios.TCSANOW)
        os.set_blocking(self.master, False)
        self.slave_path = os.ttyname(self.slave)
        if self.link:
            tmp = self.link.with_name(f".{self.link.name}.{os.getpid()}.tmp")
            tmp.unlink(missing_ok=True)
            os.symlink(self.slave_path, tmp)
            os.replace(tmp, self.link)  # atomic: readers see the old or the new node, never none

    def close(self) -> None:
        for fd in (self.master, self.slave):
            if fd >= 0:
                os.close(fd)
        self.master = self.slave = -1

    def shutdown(self) -> None:
        if self.link and self.link.is_symlink() and os.readlink(self.link) == self.slave_path:
            self.link.unlink()

    def wait_readable(self, timeout_s: float) -> None:
        select.select([self.master], [], [], timeout_s)

    def read(self) -> bytes:
        try:
            return os.read(self.master, 4096)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EIO):  # EIO: no slave opened yet / host closed it
                return b""
            raise

    def write(self, data: bytes, deadline_s: float) -> int:
        """Write what the host side takes before `deadline_s` (monotonic); the rest is lost, as on
        a UART whose receiver does not keep up. Returns bytes written."""
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.master, view) :]
            except BlockingIOError:
                left = deadline_s - time.monotonic()
                if left <= 0:
                    break
                select.select([], [self.master], [], left)
        return len(data) - len(view)


class _TcpTransport:
    """127.0.0.1:port; one host at a time. An unplug drops the client; it reconnects itself."""

    def __init__(self, port: int) -> None:
        self.server = socket.create_server(("127.0.0.1", port))
        self.server.setblocking(False)
        self.port = self.server.getsockname()[1]
        self.client: socket.socket | None = None
        self.listening = True

    @property
    def path(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def open(self) -> None:
        self.listening = True

    def close(self) -> None:
        self.listening = False
        if self.client:
            self.client.close()
            self.client = None

    def shutdown(self) -> None:
        self.server.close()

    def wait_readable(self, timeout_s: float) -> None:
        select.select([self.client or self.server], [], [], timeout_s)

    def read(self) -> bytes:
        if self.client is None:
            if not self.listening:
                return b""
            try:
                self.client, _ = self.server.accept()
            except BlockingIOError:
                return b""
            self.client.setblocking(False)
            self.client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return b""
        try:
            data = self.client.recv(4096)
        except BlockingIOError:
            return b""
        except OSError:
            data = b""
        if not data:  # the host went away; wait for the next one
            self.client.close()
            self.client = None
        return data

    def write(self, data: bytes, deadline_s: float) -> int:
        if self.client is None:
            return 0
        view = memoryview(data)
        while view:
            try:
                view = view[self.client.send(view) :]
            except BlockingIOError:
                left = deadline_s - time.monotonic()
                if left <= 0:
                    break
                select.select([], [self.client], [], left)
            except OSError:
                self.client.close()
                self.client = None
                break
        return len(data) - len(view)


@dataclass
class Emulator:
    """A VirtualStethoscope in a thread behind a pty (`link`) or TCP (`tcp_port`, 0 = any free).

    `start()` returns once the port exists (`path` is what the host opens); `stop()` ends the
    thread, closes the port and removes the symlink; `summary()` reports traffic and faults.
    """

    link: str | Path | None = None
    tcp_port: int | None = None
    wav: list[str | Path] = field(default_factory=list)
    seed: int = 0
    age_group: str = "Child"
    speed: float = 1.0
    rate_hz: int = p.DEFAULT_RATE_HZ
    chunk_samples: int = p.DEFAULT_CHUNK_SAMPLES
    status_every_s: float = 1.0
    site_every_s: float = 0.0
    faults: Faults = Faults()
    battery: Battery = Battery()
    profile: HeartProfile | None = None  # the heart to play instead of one drawn from the seed

    def __post_init__(self) -> None:
        if self.speed <= 0:
            raise ValueError(f"speed must be > 0, got {self.speed}")
        source = (WavSource(self.wav, self.rate_hz) if self.wav
                  else HeartSource(self.rate_hz, self.seed, self.age_group, profile=self.profile))
        self.device = VirtualStethoscope(
            source, self.rate_hz, self.chunk_samples, self.seed, self.faults, self.status_every_s, self.site_every_s,
            self.battery,
        )
        self._transport = _TcpTransport(self.tcp_port) if self.tcp_port is not None else _PtyTransport(self.link)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.bytes_undelivered = 0  # no host attached, or a host too slow to take them
        self.error: BaseException | None = None

    @property
    def path(self) -> str:
        """What the host opens: the symlink (or /dev/pts/N without one), or socket://127.0.0.1:PORT."""
        return self._transport.path

    def start(self) -> Emulator:
        self._transport.open()
        self._thread = threading.Thread(target=self._run, name="pcg-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        self._transport.close()
        self._transport.shutdown()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def summary(self) -> dict:
        return {"device_time_s": round(self.device._now, 3), **asdict(self.device.counts), "bytes_undelivered": self.bytes_undelivered}

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # surfaced by the caller through .error; the thread must not die silently
            self.error = exc

    def _loop(self) -> None:
        t0 = time.monotonic()
        period_s = self.chunk_samples / self.rate_hz / self.speed
        device, transport = self.device, self._transport
        online = True
        while not self._stop.is_set():
            if online:
                transport.wait_readable(min(period_s, 0.02))
                data = transport.read()
                if data:
                    device.receive(data)
            else:
                time.sleep(min(period_s, 0.01))
            out = device.tick((time.monotonic() - t0) * self.speed)
            if device.connected != online:
                online = device.connected
                transport.close()
                if online:
                    transport.open()
            if out and online:
                written = transport.write(out, time.monotonic() + 0.05)
                self.bytes_undelivered += len(out) - written
