"""Front-end speed on one core: streaming (64 ms chunks) and whole recordings, as multiples of real time.

Run (POSIX): python benchmarks/frontend.py [--repeats N]. Prints a table and writes
benchmarks/results/frontend.json. Not a test: figures depend on the machine and its load, so
medians over several repeats are reported (min and max beside them).

Targets: >= 1000x real time for a 4 kHz stream in 64 ms chunks (under ~64 us per chunk through
resampler + spectrogram), >= 5000x for whole 20 s recordings.
"""

from __future__ import annotations

import os

from one_core import machine_info  # first: one thread, one core, before numpy

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from runtime.dsp import (  # noqa: E402
    FrontEndConfig,
    FrontEndStream,
    StreamingResampler,
    StreamingSpectrogram,
    features,
    log_spectrogram,
    pool_frames,
    resample,
)

RESULTS = REPO_ROOT / "benchmarks" / "results" / "frontend.json"
CHUNK_S = 0.064
STREAM_S = 60.0
RECORDING_S = 20.0


def pcg_like(duration_s: float, rate_hz: int, seed: int = 0) -> np.ndarray:
    """int16 heart-sound stand-in: S1/S2 bursts (decaying 40-150 Hz tones) at 72 bpm plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration_s * rate_hz)) / rate_hz
    signal = 0.02 * rng.standard_normal(len(t))
    beat_s = 60.0 / 72.0
    for onset_s, freq_hz in ((0.0, 60.0), (0.3, 110.0)):
        phase = (t - onset_s) % beat_s
        burst = np.exp(-phase / 0.02) * np.sin(2 * np.pi * freq_hz * phase)
        signal += 0.3 * burst * (rng.random(len(t)) * 0.2 + 0.9)
    return np.clip(signal * 32768, -32768, 32767).astype(np.int16)


def timed(fns: list, repeats: int) -> list[list[float]]:
    """Wall seconds of each fn() per repeat, after one warm-up call each. The fns take turns within
    a repeat, so a burst of load from other processes hits all of them alike."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, fn_times in zip(fns, times):
            start = time.perf_counter()
            fn()
            fn_times.append(time.perf_counter() - start)
    return times


def summary(times: list[float], audio_s: float, n_calls: int) -> dict:
    med = statistics.median(times)
    return {
        "median_s": med,
        "min_s": min(times),
        "max_s": max(times),
        "x_real_time_median": audio_s / med,
        "x_real_time_best": audio_s / min(times),
        "us_per_call_median": med / n_calls * 1e6,
    }


def bench_stream(config: FrontEndConfig, rate_hz: int, repeats: int) -> dict:
    """FrontEndStream over STREAM_S of audio in CHUNK_S chunks, and its two stages alone."""
    samples = pcg_like(STREAM_S, rate_hz)
    chunk = int(round(CHUNK_S * rate_hz))
    chunks = [samples[i : i + chunk] for i in range(0, len(samples), chunk)]
    float_chunks = [c / 32768.0 for c in chunks]
    stream = FrontEndStream(config, rate_hz)
    resampler = StreamingResampler(rate_hz, config.target_rate_hz, config.kaiser_beta, config.half_len_factor)
    resampled_chunks = [resampler.push(c) for c in float_chunks]
    resampler.flush()
    spectrogram = StreamingSpectrogram(config)

    def run_stream():
        for c in chunks:
            stream.push(c)
        stream.flush()

    def run_resampler():
        for c in float_chunks:
            resampler.push(c)
        resampler.flush()

    def run_spectrogram():
        for c in resampled_chunks:
            spectrogram.push(c)
        spectrogram.flush()

    total, res, spec = (
        summary(t, STREAM_S, len(chunks)) for t in timed([run_stream, run_resampler, run_spectrogram], repeats)
    )

    per_chunk = []
    for c in chunks:
        start = time.perf_counter()
        stream.push(c)
        per_chunk.append(time.perf_counter() - start)
    stream.flush()
    return {
        "input_rate_hz": rate_hz,
        "audio_s": STREAM_S,
        "chunk_samples": chunk,
        "n_chunks": len(chunks),
        "total": total,
        "breakdown_us_per_chunk_median": {
            "resampler": res["us_per_call_median"],
            "spectrogram": spec["us_per_call_median"],
            "overhead": total["us_per_call_median"] - res["us_per_call_median"] - spec["us_per_call_median"],
        },
        "chunk_latency_us": {
            "p50": float(np.percentile(per_chunk, 50) * 1e6),
            "p99": float(np.percentile(per_chunk, 99) * 1e6),
            "max": float(np.max(per_chunk) * 1e6),
        },
    }


def bench_whole(config: FrontEndConfig, rate_hz: int, repeats: int) -> dict:
    """features() of a RECORDING_S recording, and its stages alone."""
    samples = pcg_like(RECORDING_S, rate_hz, seed=1)
    x = samples / 32768.0
    resampled = resample(x, rate_hz, config.target_rate_hz)
    total, res, spec = (
        summary(t, RECORDING_S, 1)
        for t in timed(
            [
                lambda: features(samples, rate_hz, config),
                lambda: resample(x, rate_hz, config.target_rate_hz),
                lambda: pool_frames(log_spectrogram(resampled, config), config),
            ],
            repeats,
        )
    )
    return {
        "input_rate_hz": rate_hz,
        "audio_s": RECORDING_S,
        "total": total,
        "breakdown_ms_median": {
            "resampler": res["median_s"] * 1e3,
            "spectrogram": spec["median_s"] * 1e3,
            "overhead": (total["median_s"] - res["median_s"] - spec["median_s"]) * 1e3,
        },
    }


def peak_memory(config: FrontEndConfig) -> dict:
    """tracemalloc peak of numpy allocations: one 64 ms push, and features() of a 20 s recording."""
    samples = pcg_like(RECORDING_S, 4000, seed=2)
    stream = FrontEndStream(config, 4000)
    for i in range(0, 4000, 256):  # warm: buffers reach their steady size
        stream.push(samples[i : i + 256])
    tracemalloc.start()
    stream.push(samples[4000:4256])
    _, stream_peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    features(samples, 4000, config)
    _, whole_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # ru_maxrss is KiB on Linux, bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return {
        "tracemalloc_peak_stream_push_bytes": stream_peak,
        "tracemalloc_peak_features_20s_4khz_bytes": whole_peak,
        "ru_maxrss_process_bytes": rss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per case (median reported)")
    args = parser.parse_args()
    config = FrontEndConfig()

    streams = [bench_stream(config, rate, args.repeats) for rate in (4000, 2000)]
    wholes = [bench_whole(config, rate, args.repeats) for rate in (4000, 2000)]
    memory = peak_memory(config)
    result = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config_hash": config.config_hash(),
        "repeats": args.repeats,
        "targets_x_real_time": {"stream_64ms_chunks": 1000, "whole_recording": 5000},
        "stream": streams,
        "whole_recording": wholes,
        "memory": memory,
    }

    load = result["machine"]["load_average_1min"]
    print(
        f"front-end benchmark, one core ({result['machine']['cpu']}), numpy {np.__version__}, "
        f"median of {args.repeats}; load average {load:.2f} on {os.cpu_count()} CPUs (other work slows the medians)"
    )
    print(f"{'case':34s} {'x real time':>12s} {'(best)':>9s} {'per call':>12s}  breakdown")
    for s in streams:
        b = s["breakdown_us_per_chunk_median"]
        print(
            f"{'stream ' + str(s['input_rate_hz']) + ' Hz, 64 ms chunks':34s} {s['total']['x_real_time_median']:11.0f}x "
            f"{s['total']['x_real_time_best']:8.0f}x {s['total']['us_per_call_median']:9.1f} us  "
            f"resampler {b['resampler']:.1f} us, spectrogram {b['spectrogram']:.1f} us, overhead {b['overhead']:.1f} us; "
            f"p99 chunk {s['chunk_latency_us']['p99']:.1f} us"
        )
    for w in wholes:
        b = w["breakdown_ms_median"]
        print(
            f"{'whole ' + str(w['input_rate_hz']) + ' Hz, 20 s recording':34s} {w['total']['x_real_time_median']:11.0f}x "
            f"{w['total']['x_real_time_best']:8.0f}x {w['total']['median_s'] * 1e3:9.2f} ms  "
            f"resampler {b['resampler']:.2f} ms, spectrogram {b['spectrogram']:.2f} ms, overhead {b['overhead']:.2f} ms"
        )
    print(
        f"memory: one push peaks at {memory['tracemalloc_peak_stream_push_bytes'] / 1024:.1f} KiB, "
        f"features(20 s at 4 kHz) at {memory['tracemalloc_peak_features_20s_4khz_bytes'] / 2**20:.1f} MiB (tracemalloc); "
        f"process max RSS {memory['ru_maxrss_process_bytes'] / 2**20:.0f} MiB"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
