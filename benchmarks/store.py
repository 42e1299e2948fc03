"""Field-store speed on the disk it runs on: recording as multiples of real time, the cost of one
durable sync (WAV fsync + database commit), patient registration, and an incremental export.

Run: python benchmarks/store.py [--root DIR] [--repeats N]. Prints the figures and writes
benchmarks/results/store.json. Not a test: every figure is bound by the disk's fsync latency (an SD
card on a Raspberry Pi is far slower than a server SSD), so run it on the box's own storage with
--root. Medians over repeats are reported, with min and max beside them.

Target: a 4 kHz stream in 20 ms chunks with a sync each second at >= 50x real time, so the four
sites of a visit, the UI and inference never wait on storage.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from runtime.records import Demographics  # noqa: E402
from runtime.store import Store, export_records  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "store.json"
RATE_HZ = 4000
CHUNK = 80  # 20 ms
AUDIO_S = 60.0
PATIENTS = 100


def record_once(store: Store) -> dict:
    session = store.start_session(store.new_patient(Demographics(age_group="Child"), consent=True))
    chunk = (np.arange(CHUNK) * 37 % 2000 - 1000).astype(np.int16)
    writer = store.start_recording(session, "AV", RATE_HZ)
    sync_times, append_times = [], []
    start = time.perf_counter()
    for _ in range(int(AUDIO_S * RATE_HZ / CHUNK)):
        before = writer.record  # replaced at each database write, i.e. at each sync
        t0 = time.perf_counter()
        writer.append(chunk)
        elapsed = time.perf_counter() - t0
        (sync_times if writer.record is not before else append_times).append(elapsed)
    writer.close()
    total = time.perf_counter() - start
    store.close_session(session)
    return {"x_real_time": AUDIO_S / total, "sync_ms": statistics.median(sync_times) * 1e3,
            "sync_ms_max": max(sync_times) * 1e3, "append_us": statistics.median(append_times) * 1e6,
            "syncs": len(sync_times)}


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="a folder on the disk to measure (default: a temporary one)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.root) as folder:
        with Store.open(folder, min_free_bytes=0) as store:
            runs = [record_once(store) for _ in range(args.repeats)]
            t0 = time.perf_counter()
            for _ in range(PATIENTS):
                store.start_session(store.new_patient(Demographics(age_group="Infant", sex="Male"), consent=True))
            register_ms = (time.perf_counter() - t0) / PATIENTS * 1e3
            t0 = time.perf_counter()
            export = export_records(store, "json")
            export_ms = (time.perf_counter() - t0) * 1e3
            t0 = time.perf_counter()
            export_records(store, "csv", after_seq=export.max_seq - 50)
            incremental_ms = (time.perf_counter() - t0) * 1e3
    figures = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"machine": platform.machine(), "system": platform.platform(), "python": platform.python_version()},
        "stream": {"rate_hz": RATE_HZ, "chunk_samples": CHUNK, "audio_s": AUDIO_S, "repeats": args.repeats,
                   **{key: summary([r[key] for r in runs]) for key in ("x_real_time", "sync_ms", "append_us")},
                   "sync_ms_max": max(r["sync_ms_max"] for r in runs), "syncs_per_run": runs[0]["syncs"]},
        "register_patient_and_session_ms": register_ms,
        "export_json_all_ms": export_ms,
        "export_records": sum(export.counts.values()),
        "export_csv_last_50_ms": incremental_ms,
        "target_x_real_time": 50,
    }
    stream = figures["stream"]
    print(f"4 kHz stream, 20 ms chunks: {stream['x_real_time']['median']:.0f}x real time "
          f"(min {stream['x_real_time']['min']:.0f}x); sync {stream['sync_ms']['median']:.2f} ms median, "
          f"{stream['sync_ms_max']:.2f} ms max; append {stream['append_us']['median']:.1f} us")
    print(f"register patient + session: {register_ms:.2f} ms; export of {figures['export_records']} records as "
          f"JSON: {export_ms:.1f} ms; last 50 as CSV: {incremental_ms:.1f} ms")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
