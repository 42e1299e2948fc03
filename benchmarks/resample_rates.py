"""Resampling 20 s to 1 kHz at common and awkward input rates: time and peak memory, one core.

Run (POSIX): python benchmarks/resample_rates.py [--repeats N]. Prints a table and writes
benchmarks/results/resample_rates.json. Not a test: figures depend on the machine and its load.

Awkward rates share few factors with 1000 (44101 -> 1000 is up/down = 1000/44101), so they take
the resampler's per-output path instead of its polyphase matrix, which would need about 2*up*down
entries (1.1 GB at 47999 Hz). The first call at a rate designs its filter (cold); later calls reuse
it (warm). Peak memory is tracemalloc's peak of numpy allocations during the cold call, the 20 s
input itself (allocated before) not included.
"""

from __future__ import annotations

import os

from one_core import machine_info  # first: one thread, one core, before numpy

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from runtime.dsp import ratio_for, resample  # noqa: E402
from runtime.dsp.resample import MAX_MATRIX_ENTRIES, MAX_RATE_HZ, _layout  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "resample_rates.json"
RECORDING_S = 20.0
RATES_HZ = (4000, 44100, 48000, 44101, 47999, 96001, MAX_RATE_HZ - 1)


def bench_rate(rate_hz: int, repeats: int) -> dict:
    x = np.random.default_rng(rate_hz).standard_normal(int(RECORDING_S * rate_hz))
    up, down = ratio_for(rate_hz, 1000)
    tracemalloc.start()
    start = time.perf_counter()
    resample(x, rate_hz, 1000)
    cold_s = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    warm = []
    for _ in range(repeats):
        start = time.perf_counter()
        resample(x, rate_hz, 1000)
        warm.append(time.perf_counter() - start)
    return {
        "input_rate_hz": rate_hz,
        "up": up,
        "down": down,
        "path": "matrix" if _layout(up, down, 10).matrix_entries <= MAX_MATRIX_ENTRIES else "per_output",
        "audio_s": RECORDING_S,
        "cold_s": cold_s,
        "warm_median_s": statistics.median(warm),
        "tracemalloc_peak_cold_bytes": peak,
        "input_bytes": x.nbytes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="warm repeats per rate (median reported)")
    args = parser.parse_args()
    cases = [bench_rate(rate, args.repeats) for rate in RATES_HZ]
    result = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "repeats": args.repeats,
        "cases": cases,
    }
    load = result["machine"]["load_average_1min"]
    print(f"resampling {RECORDING_S:g} s to 1 kHz, one core ({result['machine']['cpu']}), numpy {np.__version__}; "
          f"load average {load:.2f} on {os.cpu_count()} CPUs")
    print(f"{'rate':>8s} {'up/down':>13s} {'path':>10s} {'cold':>9s} {'warm':>9s} {'peak memory':>12s}")
    for c in cases:
        print(f"{c['input_rate_hz']:>8d} {str(c['up']) + '/' + str(c['down']):>13s} {c['path']:>10s} "
              f"{c['cold_s'] * 1e3:7.1f}ms {c['warm_median_s'] * 1e3:7.1f}ms "
              f"{c['tracemalloc_peak_cold_bytes'] / 2**20:9.1f} MiB")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
