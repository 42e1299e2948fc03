"""Quality gate on the shared real recordings: RETAKE rate, reasons, and CPU cost per second of audio.

Run (POSIX): python benchmarks/quality.py [--repeats N]. Prints a summary and writes
benchmarks/results/quality.json. Reads ../shared/data/physionet2016 in place (PCG_SHARED_DATA
overrides ../shared/data); without it the RETAKE part is skipped with the reason and only the cost
is measured. Not a test: the cost depends on the machine and its load, so medians over repeats.

The cost is the gate alone (QualityMonitor.push per 64 ms chunk plus result at the end, with the
front-end frames computed beforehand), the part the gate adds to a live stream.
"""

from __future__ import annotations

import os

from one_core import machine_info  # first: one thread, one core, before numpy

import argparse  # noqa: E402
import collections  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from frontend import pcg_like  # noqa: E402  (the same heart-sound stand-in as the front-end benchmark)
from runtime.dsp import FrontEndConfig, FrontEndStream  # noqa: E402
from runtime.formats import load_dataset  # noqa: E402
from runtime.quality import REASONS, QualityMonitor, QualityThresholds, assess  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "quality.json"
SHARED_DATA = Path(os.environ.get("PCG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
PHYSIONET2016 = SHARED_DATA / "physionet2016"
CHUNK_S = 0.064
STREAM_S = 60.0


def rate(retakes: int, total: int) -> dict:
    return {"recordings": total, "retake": retakes, "retake_rate": retakes / total if total else None}


def retake_rates(root: Path, config: FrontEndConfig, thresholds: QualityThresholds) -> dict:
    """The gate on every shared recording: rates overall, per database and per label, and per reason."""
    dataset = load_dataset(root)
    verdicts = []
    for patient in dataset.patients:
        recording = patient.recordings[0]
        quality = assess(recording.read(), recording.site, config, thresholds=thresholds)
        verdicts.append((patient, quality))

    def summarise(selected):
        return rate(sum(not q.ok for _, q in selected), len(selected))

    groups = sorted({p.group for p, _ in verdicts})
    labels = sorted({p.outcome for p, _ in verdicts})
    reasons = collections.Counter(r for _, q in verdicts for r in q.reasons)
    passed_bpm = [q.heart_rate_bpm for _, q in verdicts if q.ok]
    return {
        "root": str(root),
        "overall": summarise(verdicts),
        "per_database": {g: summarise([v for v in verdicts if v[0].group == g]) for g in groups},
        "per_label": {label: summarise([v for v in verdicts if v[0].outcome == label]) for label in labels},
        "per_database_and_label": {
            f"{g}/{label}": summarise([v for v in verdicts if v[0].group == g and v[0].outcome == label])
            for g in groups for label in labels
        },
        "reasons": {r: reasons.get(r, 0) for r in REASONS},
        "passed_heart_rate_bpm_percentiles": {
            str(p): float(np.percentile(passed_bpm, p)) for p in (1, 5, 50, 95, 99)
        } if passed_bpm else {},
        "retakes": [
            {"record": p.patient_id, "database": p.group, "label": p.outcome, **_rounded(q.to_dict())}
            for p, q in verdicts if not q.ok
        ],
    }


def _rounded(data: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in data.items() if k != "site"}


def gate_cost(config: FrontEndConfig, thresholds: QualityThresholds, rate_hz: int, repeats: int) -> dict:
    """Seconds of CPU-bound wall time the gate adds per second of audio, streaming 64 ms chunks."""
    samples = pcg_like(STREAM_S, rate_hz)
    chunk = int(round(CHUNK_S * rate_hz))
    stream = FrontEndStream(config, rate_hz)
    chunks = [(samples[i : i + chunk], stream.push(samples[i : i + chunk])) for i in range(0, len(samples), chunk)]

    def run() -> None:
        monitor = QualityMonitor(rate_hz, config, thresholds)
        for c, frames in chunks:
            monitor.push(c, frames)
        monitor.result("AV")

    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    monitor = QualityMonitor(rate_hz, config, thresholds)
    push_times = []
    for c, frames in chunks:
        start = time.perf_counter()
        monitor.push(c, frames)
        push_times.append(time.perf_counter() - start)
    start = time.perf_counter()
    monitor.result("AV")
    result_s = time.perf_counter() - start
    return {
        "input_rate_hz": rate_hz,
        "audio_s": STREAM_S,
        "n_chunks": len(chunks),
        "median_s": median,
        "min_s": min(times),
        "max_s": max(times),
        "x_real_time_median": STREAM_S / median,
        "push_us_p50": float(np.percentile(push_times, 50) * 1e6),
        "push_us_p99": float(np.percentile(push_times, 99) * 1e6),
        "result_ms_60s": result_s * 1e3,
        "frontend_x_real_time_for_comparison": STREAM_S / _frontend_time(config, samples, chunk, rate_hz),
    }


def _frontend_time(config: FrontEndConfig, samples: np.ndarray, chunk: int, rate_hz: int) -> float:
    stream = FrontEndStream(config, rate_hz)
    start = time.perf_counter()
    for i in range(0, len(samples), chunk):
        stream.push(samples[i : i + chunk])
    stream.flush()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats of the cost case (median reported)")
    args = parser.parse_args()
    config, thresholds = FrontEndConfig(), QualityThresholds()

    if (PHYSIONET2016 / "training-a" / "REFERENCE.csv").is_file():
        started = time.perf_counter()
        shared = retake_rates(PHYSIONET2016, config, thresholds)
        shared["seconds_to_assess_all"] = time.perf_counter() - started
    else:
        shared = {"skipped": f"no PhysioNet 2016 tree at {PHYSIONET2016} (set PCG_SHARED_DATA)"}
    costs = [gate_cost(config, thresholds, r, args.repeats) for r in (4000, 2000)]
    result = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config_hash": config.config_hash(),
        "thresholds": asdict(thresholds),
        "repeats": args.repeats,
        "shared_physionet2016": shared,
        "gate_cost": costs,
    }

    if "skipped" in shared:
        print(f"RETAKE rate: skipped, {shared['skipped']}")
    else:
        o = shared["overall"]
        print(f"quality gate on {o['recordings']} shared PhysioNet 2016 recordings: "
              f"RETAKE {o['retake']} ({100 * o['retake_rate']:.1f}%)")
        for title, part in (("database", shared["per_database"]), ("label", shared["per_label"]),
                            ("database/label", shared["per_database_and_label"])):
            for name, r in part.items():
                print(f"  {title:15s} {name:22s} {r['retake']:4d} / {r['recordings']:4d}  {100 * r['retake_rate']:5.1f}%")
        print("  reasons: " + ", ".join(f"{k} {v}" for k, v in shared["reasons"].items()))
        p = shared["passed_heart_rate_bpm_percentiles"]
        print(f"  heart rate of passed recordings: median {p['50']:.0f} bpm, 5-95% {p['5']:.0f}-{p['95']:.0f} bpm")
    print(f"gate cost, one core, median of {args.repeats}, load average {result['machine']['load_average_1min']:.2f}:")
    for c in costs:
        print(f"  {c['input_rate_hz']} Hz stream, 64 ms chunks: {c['x_real_time_median']:.0f}x real time "
              f"({1e3 / c['x_real_time_median']:.3f} ms CPU per s of audio; push p50 {c['push_us_p50']:.1f} us, "
              f"p99 {c['push_us_p99']:.1f} us; result() {c['result_ms_60s']:.2f} ms for 60 s); "
              f"front-end alone {c['frontend_x_real_time_for_comparison']:.0f}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
