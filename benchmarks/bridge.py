"""Stethoscope link codec throughput, and what each emulator fault does at the decoder.

    python benchmarks/bridge.py            # prints a table, writes benchmarks/results/bridge.json

Throughput is given as a multiple of one 4 kHz stream's wire byte rate (64-sample chunks:
8,875 B/s), i.e. how many real-time streams one core decodes; median of several runs.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from firmware_bridge import protocol as p  # noqa: E402
from firmware_bridge.emulator import Faults, HeartSource, VirtualStethoscope  # noqa: E402

RATE = p.DEFAULT_RATE_HZ
CHUNK = p.DEFAULT_CHUNK_SAMPLES
SECONDS = 120
RUNS = 7
READ_BYTES = 4096  # what a host read() typically returns


def _signal(seconds: int) -> np.ndarray:
    return HeartSource(RATE, seed=1).generators["MV"].read(seconds * RATE)


def _encode(signal: np.ndarray) -> bytes:
    encoder = p.Encoder()
    return b"".join(encoder.audio(i, signal[i : i + CHUNK]) for i in range(0, len(signal), CHUNK))


def _corrupt(stream: bytes, fraction: float, seed: int = 0) -> bytes:
    """Flip one bit in `fraction` of the frames."""
    rng = np.random.default_rng(seed)
    buf = bytearray(stream)
    ends = [i for i, b in enumerate(buf) if b == 0]
    starts = [0] + [e + 1 for e in ends[:-1]]
    for k in np.flatnonzero(rng.random(len(ends)) < fraction):
        pos = int(rng.integers(starts[k], ends[k] + 1))
        buf[pos] ^= 1 << int(rng.integers(0, 8))
    return bytes(buf)


def _median_rate(fn, n_bytes: int) -> float:
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return n_bytes / statistics.median(times)


def _decode_all(stream: bytes) -> p.Decoder:
    decoder = p.Decoder()
    for i in range(0, len(stream), READ_BYTES):
        decoder.feed(stream[i : i + READ_BYTES])
    return decoder


def throughput() -> dict:
    signal = _signal(SECONDS)
    stream = _encode(signal)
    stream_bytes_per_s = len(stream) / SECONDS
    corrupted = _corrupt(stream, 0.01)
    results = {"stream_wire_bytes_per_s": round(stream_bytes_per_s, 1), "seconds_of_audio": SECONDS}
    for name, data in (("decode_clean", stream), ("decode_1pct_corrupt_frames", corrupted)):
        rate = _median_rate(lambda: _decode_all(data), len(data))
        results[name] = {"MB_per_s": round(rate / 1e6, 2), "x_realtime": round(rate / stream_bytes_per_s)}
    decoder = _decode_all(corrupted)
    results["decode_1pct_corrupt_frames"]["decoder_stats"] = decoder.stats.as_dict()
    rate = _median_rate(lambda: _encode(signal), len(stream))
    results["encode"] = {"MB_per_s": round(rate / 1e6, 2), "x_realtime": round(rate / stream_bytes_per_s)}
    return results


FAULTS = {
    "none": Faults(),
    "bit_flips_1e-4_per_byte": Faults(bit_flip_rate=1e-4),
    "dropped_bytes_1e-4_per_byte": Faults(drop_byte_rate=1e-4),
    "truncated_frames_1pct": Faults(truncate_rate=0.01),
    "garbage_bursts_1pct_of_frames": Faults(garbage_rate=0.01),
    "stalls_0.1_per_s_of_0.3s": Faults(stall_rate=0.1, stall_s=0.3),
    "disconnect_every_20s_for_0.5s": Faults(disconnect_every_s=20.0, reconnect_after_s=0.5),
    "wrong_sample_rate_8000": Faults(declared_rate_hz=8000),
    "protocol_version_2.0": Faults(protocol_version=0x20),
}
KEYS = ("frames_ok", "crc_errors", "cobs_errors", "length_errors", "oversize_frames", "resyncs", "gaps",
        "samples_lost", "frames_missed", "version_errors")


def faults(seconds: float = 60.0) -> dict:
    """Each fault alone on `seconds` of streaming (device time, simulated: no I/O), seeded."""
    out = {}
    for name, fault in FAULTS.items():
        device = VirtualStethoscope(HeartSource(RATE, seed=2), seed=2, faults=fault)
        device.receive(p.encode(p.Start()))
        decoder = p.Decoder()
        events = []
        for k in range(1, int(seconds / 0.05) + 1):
            events += decoder.feed(device.tick(k * 0.05))
        injected = {k: v for k, v in device.counts.__dict__.items() if v and k not in ("commands_received",)}
        seen = {k: getattr(decoder.stats, k) for k in KEYS}
        info = next((e for e in events if isinstance(e, p.DeviceInfo)), None)
        seen["declared_rate_hz"] = info.rate_hz if info else None
        seen["unsupported_version_events"] = sum(isinstance(e, p.UnsupportedVersion) for e in events)
        out[name] = {"injected": injected, "decoder": seen}
    return out


def main() -> None:
    results = {
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine(),
                    "numpy": np.__version__, "load_average_1min": round(os.getloadavg()[0], 2)},
        "throughput": throughput(),
        "faults_60s": faults(),
    }
    t = results["throughput"]
    print(f"one 4 kHz stream = {t['stream_wire_bytes_per_s']} wire B/s (64-sample chunks)")
    print(f"{'operation':32} {'MB/s':>8} {'x real time':>12}")
    for name in ("decode_clean", "decode_1pct_corrupt_frames", "encode"):
        print(f"{name:32} {t[name]['MB_per_s']:8.2f} {t[name]['x_realtime']:12,}")
    print()
    print(f"{'fault (60 s, seeded)':32} {'crc':>5} {'cobs':>5} {'len':>5} {'ovsz':>5} {'resync':>6} {'gaps':>5} "
          f"{'lost':>6} {'ver':>5} {'rate':>5}")
    for name, r in results["faults_60s"].items():
        d = r["decoder"]
        print(f"{name:32} {d['crc_errors']:5} {d['cobs_errors']:5} {d['length_errors']:5} {d['oversize_frames']:5} "
              f"{d['resyncs']:6} {d['gaps']:5} {d['samples_lost']:6} {d['version_errors']:5} {d['declared_rate_hz'] or '-':>5}")
    out = Path(__file__).resolve().parent / "results" / "bridge.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
