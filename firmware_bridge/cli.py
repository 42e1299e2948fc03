"""pcg-bridge: the virtual stethoscope (`emulate`) and a decoder for what a device sends (`sniff`).

    pcg-bridge emulate --link /tmp/pcg-stethoscope --speed 1 --seed 3
    pcg-bridge emulate --tcp 7000 --wav a_AV.wav b_MV.wav --flip-rate 1e-4
    pcg-bridge sniff --device /tmp/pcg-stethoscope --start
    pcg-bridge sniff --device socket://127.0.0.1:7000 --baud 921600
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

from firmware_bridge import protocol as p


def _version(text: str) -> int:
    major, _, minor = text.partition(".")
    try:
        value = (int(major) << 4) | int(minor or 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MAJOR.MINOR such as 2.0, got {text!r}") from None
    if not 0 <= value <= 0xFF:
        raise argparse.ArgumentTypeError(f"major and minor must be 0..15, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pcg-bridge", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    emu = sub.add_parser("emulate", help="run a virtual stethoscope on a pseudo-terminal or TCP port")
    where = emu.add_mutually_exclusive_group()
    where.add_argument("--link", default="/tmp/pcg-stethoscope",
                       help="stable symlink to the pseudo-terminal, kept across reconnects (default %(default)s)")
    where.add_argument("--tcp", type=int, metavar="PORT", help="listen on 127.0.0.1:PORT instead (0: any free port)")
    emu.add_argument("--wav", nargs="+", default=[], metavar="FILE", help="16-bit PCM WAV files to stream, in order, repeated")
    emu.add_argument("--seed", type=int, default=0, help="seeds the heart model and every fault draw")
    emu.add_argument("--age-group", default="Child", help="heart model patient age group (default %(default)s)")
    emu.add_argument("--speed", type=float, default=1.0, help="device seconds per wall second (default 1: real time)")
    emu.add_argument("--rate", type=int, default=p.DEFAULT_RATE_HZ, help="sample rate in Hz (default %(default)s)")
    emu.add_argument("--chunk", type=int, default=p.DEFAULT_CHUNK_SAMPLES, help="samples per audio frame (default %(default)s)")
    emu.add_argument("--status-every", type=float, default=1.0, metavar="S", help="battery status period, device seconds")
    emu.add_argument("--site-every", type=float, default=0.0, metavar="S",
                     help="press the site button every S device seconds (heart model only; 0: never)")
    emu.add_argument("--duration", type=float, default=0.0, metavar="S", help="stop after S wall seconds (0: until Ctrl-C)")
    faults = emu.add_argument_group("fault injection (seeded; reported on exit)")
    faults.add_argument("--flip-rate", type=float, default=0.0, metavar="P", help="bit flip probability per byte")
    faults.add_argument("--drop-rate", type=float, default=0.0, metavar="P", help="byte loss probability per byte")
    faults.add_argument("--truncate-rate", type=float, default=0.0, metavar="P", help="probability a frame is cut short")
    faults.add_argument("--garbage-rate", type=float, default=0.0, metavar="P", help="probability of a garbage burst before a frame")
    faults.add_argument("--duplicate-rate", type=float, default=0.0, metavar="P", help="probability a frame is delivered twice")
    faults.add_argument("--stall-rate", type=float, default=0.0, metavar="R", help="output stalls per device second")
    faults.add_argument("--stall-s", type=float, default=0.3, metavar="S", help="length of a stall")
    faults.add_argument("--disconnect-every", type=float, default=0.0, metavar="S", help="unplug every S device seconds")
    faults.add_argument("--reconnect-after", type=float, default=0.5, metavar="S", help="length of an unplug")
    faults.add_argument("--declare-rate", type=int, default=None, metavar="HZ", help="claim this rate in DEVICE_INFO (wrong-rate device)")
    faults.add_argument("--protocol-version", type=_version, default=p.PROTOCOL_VERSION, metavar="MAJOR.MINOR",
                        help="version byte of every frame sent (e.g. 2.0: a device the host cannot speak to)")

    sniff = sub.add_parser("sniff", help="decode and print what a stethoscope sends")
    sniff.add_argument("--device", required=True, help="serial device, symlink, or socket://HOST:PORT")
    sniff.add_argument("--baud", type=int, default=921600, help="baud rate (default %(default)s)")
    sniff.add_argument("--start", action="store_true", help="send STOP then START first (the host connect procedure)")
    sniff.add_argument("--duration", type=float, default=0.0, metavar="S", help="stop after S seconds (0: until Ctrl-C)")
    sniff.add_argument("--stats-every", type=float, default=5.0, metavar="S", help="print counters every S seconds")
    return parser


def _emulate(args: argparse.Namespace) -> int:
    from firmware_bridge.emulator import Emulator, Faults

    faults = Faults(
        bit_flip_rate=args.flip_rate, drop_byte_rate=args.drop_rate, truncate_rate=args.truncate_rate,
        garbage_rate=args.garbage_rate, duplicate_rate=args.duplicate_rate, stall_rate=args.stall_rate,
        stall_s=args.stall_s, disconnect_every_s=args.disconnect_every, reconnect_after_s=args.reconnect_after,
        declared_rate_hz=args.declare_rate, protocol_version=args.protocol_version,
    )
    try:
        emulator = Emulator(
            link=None if args.tcp is not None else args.link, tcp_port=args.tcp, wav=args.wav, seed=args.seed,
            age_group=args.age_group, speed=args.speed, rate_hz=args.rate, chunk_samples=args.chunk,
            status_every_s=args.status_every, site_every_s=args.site_every, faults=faults,
        )
        emulator.start()
    except (ValueError, OSError) as exc:
        print(f"pcg-bridge emulate: {exc}", file=sys.stderr)
        return 2
    print(emulator.path, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        deadline = time.monotonic() + args.duration if args.duration > 0 else float("inf")
        while time.monotonic() < deadline and emulator.error is None:
            time.sleep(0.05)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
        print(json.dumps({"summary": emulator.summary()}), flush=True)
    if emulator.error is not None:
        print(f"pcg-bridge emulate: the emulator stopped: {emulator.error!r}", file=sys.stderr)
        return 1
    return 0


def describe(event: p.Event) -> str:
    """One line for a decoded message or link event (what `sniff` prints)."""
    if isinstance(event, p.AudioChunk):
        s = event.samples
        return f"AUDIO      index={event.first_index} n={len(s)} min={int(s.min())} max={int(s.max())}"
    if isinstance(event, p.Gap):
        return f"!! GAP     first_missing={event.first_missing} count={event.count}"
    if isinstance(event, p.FrameError):
        return f"!! DROPPED {event.reason.upper()} error, {event.size} bytes"
    if isinstance(event, p.UnsupportedVersion):
        return f"!! VERSION protocol {event.major}.{event.minor} frames (not decoded)"
    if isinstance(event, p.DeviceInfo):
        fw = ".".join(map(str, event.firmware))
        return f"DEVICE_INFO firmware={fw} rate={event.rate_hz}Hz bits={event.sample_bits} channels={event.channels} index={event.sample_index}"
    if isinstance(event, p.SiteEvent):
        source = "button" if event.source == p.SITE_SOURCE_BUTTON else "host"
        return f"SITE       {event.site} from {source} at index={event.sample_index}"
    if isinstance(event, p.Status):
        return f"STATUS     battery={event.battery_mv}mV {event.battery_pct}% flags=0x{event.flags:02x} index={event.sample_index}"
    if isinstance(event, p.DeviceError):
        return f"!! ERROR   code={event.code} {event.text!r} index={event.sample_index}"
    return type(event).__name__.upper()


def _counters(stats: p.DecoderStats) -> str:
    return (
        f"-- frames={stats.frames_ok} bytes={stats.bytes_in} samples={stats.samples_ok} crc_errors={stats.crc_errors} "
        f"length_errors={stats.length_errors} cobs_errors={stats.cobs_errors} oversize={stats.oversize_frames} "
        f"resyncs={stats.resyncs} gaps={stats.gaps} samples_lost={stats.samples_lost} "
        f"frames_missed={stats.frames_missed} duplicates={stats.duplicates} restarts={stats.restarts} "
        f"version_errors={stats.version_errors} unknown_types={stats.unknown_types}"
    )


def _sniff(args: argparse.Namespace) -> int:
    import serial

    try:
        port = serial.serial_for_url(args.device, baudrate=args.baud, timeout=0.05)
    except (serial.SerialException, OSError, ValueError) as exc:
        print(f"pcg-bridge sniff: cannot open {args.device}: {exc}", file=sys.stderr)
        return 2
    decoder = p.Decoder(report_errors=True)
    highlight = sys.stdout.isatty()
    start = time.monotonic()
    next_stats = start + args.stats_every
    try:
        if args.start:
            encoder = p.Encoder()
            port.reset_input_buffer()
            port.write(encoder.encode(p.Stop()))
            time.sleep(0.05)
            port.reset_input_buffer()
            port.write(encoder.encode(p.Start()))
        while args.duration <= 0 or time.monotonic() - start < args.duration:
            data = port.read(max(1, port.in_waiting))
            now = time.monotonic() - start
            for event in decoder.feed(data) if data else []:
                text = describe(event)
                line = f"{now:9.3f}  {text}"
                print(f"\033[1;31m{line}\033[0m" if highlight and text.startswith("!!") else line)
            if time.monotonic() >= next_stats:
                next_stats += args.stats_every
                print(_counters(decoder.stats), flush=True)
    except KeyboardInterrupt:
        pass
    except serial.SerialException as exc:
        print(f"pcg-bridge sniff: {args.device} went away: {exc}", file=sys.stderr)
        print(_counters(decoder.stats))
        return 1
    finally:
        port.close()
    print(_counters(decoder.stats), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return _emulate(args) if args.command == "emulate" else _sniff(args)


if __name__ == "__main__":
    sys.exit(main())
