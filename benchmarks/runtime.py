"""The field program's figures on this machine: cold start to ready, peak memory, inference latency,
latency from the last sample to the decision, and CPU per live stream.

Run (POSIX): python benchmarks/runtime.py [--repeats N]. Prints a table and writes
benchmarks/results/runtime.json. Not a test: figures depend on the machine and its load, so medians
are reported with min and max beside them.

Targets (issue 6, this machine): ready <= 1 s, peak RSS <= 150 MB, decision <= 100 ms after the last
sample, >= 500x real time per stream (decode + front-end + quality gate).

- ready: a fresh `python` process imports the runtime, verifies and loads the bundled model into an
  ONNX Runtime session and opens a SQLite store; wall time from spawning the process to "ready".
- patient: a fresh process screens one simulated patient (virtual stethoscope on a pty, 4 sites x
  10 s at 20x real time, bundled model, store): peak RSS of that process, and the time from the
  arrival of the last sample to the stored decision.
- inference: score_patient on a 4-site, 10 s-per-site patient, in process.
- stream: one core decoding COBS frames, resampling, spectrogram and quality gate (LiveSite, the
  live code path) for 60 s of 4 kHz audio in 64-sample frames read 512 bytes at a time (what a 50 ms
  serial read returns in real time); also 64-byte reads (worst case), and 32 streams interleaved.
"""

from __future__ import annotations

import os

from one_core import machine_info  # first: one thread, one core, before numpy

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from firmware_bridge import protocol  # noqa: E402
from firmware_bridge.heart import HeartSoundGenerator, random_profile  # noqa: E402
from runtime.dsp import FrontEndConfig, compute_features  # noqa: E402
from runtime.screening import LiveSite  # noqa: E402
from runtime.records import Audio, Demographics  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "runtime.json"
RATE = 4000

READY = """
import time
from pathlib import Path
import tempfile
from runtime.inference import Model
from runtime.screening import ScreeningBox
from runtime.store import Store
model = Model.load()
store = Store.open(Path(tempfile.mkdtemp()) / "db")
box = ScreeningBox("unused", store=store, model=model)
print("ready", flush=True)
"""

PATIENT = """
import json, resource, sys, tempfile, time
from pathlib import Path
from firmware_bridge.emulator import Emulator
from runtime.inference import Model
from runtime.records import Demographics
from runtime.screening import ScreeningBox
from runtime.store import Store
tmp = Path(tempfile.mkdtemp())
with Emulator(link=tmp / "steth", seed=int(sys.argv[1]), speed=20) as emulator, Store.open(tmp / "db") as store:
    with ScreeningBox(emulator.path, store=store, model=Model.load(), seconds_per_site=10.0) as box:
        box.connect()
        visit = box.begin_patient(Demographics(age_group="Child", sex="Female"), consent=True)
        for site in ("AV", "PV", "TV", "MV"):
            last = box.record_site(visit, site)
        result = box.finish(visit)
heavy = sorted(m for m in ("torch", "scipy", "onnx") if m in sys.modules)
print(json.dumps({"decision_latency_s": visit.decided_at - last.last_sample_at,
                  "stored_latency_s": visit.stored_at - last.last_sample_at, "decision": result.decision,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "heavy": heavy}))
"""


def stats(values: list[float], digits: int = 4) -> dict:
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits), "n": len(values)}


def child_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


def bench_ready(repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-c", READY], stdout=subprocess.PIPE, env=child_env(), text=True)
        line = child.stdout.readline()
        times.append(time.perf_counter() - started)
        child.wait(timeout=60)
        assert line.strip() == "ready", line
    return stats(times)


def bench_patient(repeats: int) -> dict:
    latencies, stored, rss, decisions = [], [], [], []
    for seed in range(repeats):
        done = subprocess.run([sys.executable, "-c", PATIENT, str(seed)], capture_output=True, text=True,
                              env=child_env(), timeout=300)
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        report = json.loads(done.stdout.strip().splitlines()[-1])
        assert report["heavy"] == [], report
        latencies.append(report["decision_latency_s"] * 1000)
        stored.append(report["stored_latency_s"] * 1000)
        rss.append(report["peak_rss_mb"])
        decisions.append(report["decision"])
    return {"decision_latency_ms": stats(latencies, 2), "stored_latency_ms": stats(stored, 2), "peak_rss_mb": stats(rss, 1), "decisions": decisions}


def patient_features(config: FrontEndConfig, seconds: float = 10.0) -> dict:
    profile = random_profile(np.random.default_rng(3), "Child")
    return {site: compute_features(Audio(HeartSoundGenerator(profile, site, RATE, 3).read(int(seconds * RATE)), RATE),
                                   config) for site in ("AV", "PV", "TV", "MV")}


def bench_inference(repeats: int) -> dict:
    from runtime.inference import Model
    from runtime.triage import score_patient

    model = Model.load()
    config = FrontEndConfig.from_dict(model.manifest.frontend)
    features = patient_features(config)
    demo = Demographics(age_group="Child")
    score_patient(model, features, demo, config)  # warm up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        score_patient(model, features, demo, config)
        times.append((time.perf_counter() - started) * 1000)
    return {"ms_per_patient": stats(times, 2), "provider": model.provider, "sites": 4, "seconds_per_site": 10.0}


def wire_bytes(seconds: float, seed: int) -> bytes:
    profile = random_profile(np.random.default_rng(seed), "Child")
    samples = HeartSoundGenerator(profile, "AV", RATE, seed).read(int(seconds * RATE))
    encoder = protocol.Encoder()
    chunk = protocol.DEFAULT_CHUNK_SAMPLES
    return b"".join(encoder.encode(protocol.AudioChunk(i, samples[i:i + chunk])) for i in range(0, len(samples), chunk))


def bench_stream(config: FrontEndConfig, n_streams: int, seconds: float, repeats: int, piece: int) -> dict:
    """CPU seconds per audio second for decode + front-end + quality gate (runtime.screening.LiveSite,
    the live code path: each serial read's audio is processed at once), n_streams interleaved."""
    data = [wire_bytes(seconds, seed) for seed in range(min(n_streams, 4))]
    multiples = []
    for _ in range(repeats):
        decoders = [protocol.Decoder() for _ in range(n_streams)]
        sites = [LiveSite(config, RATE) for _ in range(n_streams)]
        blobs = [data[k % len(data)] for k in range(n_streams)]
        started = time.process_time()
        for offset in range(0, len(blobs[0]), piece):
            for k in range(n_streams):
                batch = [e.samples for e in decoders[k].feed(blobs[k][offset:offset + piece])
                         if isinstance(e, protocol.AudioChunk)]
                if batch:
                    sites[k].push(np.concatenate(batch))
        for k in range(n_streams):
            sites[k].finish("AV")
        cpu = time.process_time() - started
        multiples.append(n_streams * seconds / cpu)
    per_stream = stats(multiples, 1)
    return {"streams": n_streams, "audio_s_per_stream": seconds, "bytes_per_read": piece,
            "reads_per_audio_second": round(len(data[0]) / seconds / piece, 1),
            "realtime_multiple_per_stream": per_stream,
            "streams_one_core_sustains": int(statistics.median(multiples) // 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    config = FrontEndConfig()
    print("cold start to ready ...", flush=True)
    ready = bench_ready(args.repeats)
    print("simulated patients ...", flush=True)
    patient = bench_patient(max(3, args.repeats // 2))
    print("inference ...", flush=True)
    inference = bench_inference(max(21, args.repeats * 3))
    print("streams ...", flush=True)
    # a 4 kHz stream is ~8.9 kB/s on the wire; the runtime reads every 50 ms (pyserial timeout),
    # so ~444 bytes per read in real time: 512-byte reads are the live case, 64 bytes a worst case
    one = bench_stream(config, 1, 60.0, args.repeats, piece=512)
    worst = bench_stream(config, 1, 60.0, max(3, args.repeats // 2), piece=64)
    many = bench_stream(config, 32, 10.0, max(3, args.repeats // 2), piece=512)
    result = {
        "benchmark": "runtime",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "targets": {"ready_s": 1.0, "peak_rss_mb": 150, "decision_latency_ms": 100, "realtime_multiple": 500},
        "ready_s": ready,
        "patient": patient,
        "inference": inference,
        "stream_1": one,
        "stream_1_small_reads": worst,
        "stream_32": many,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"ready                      {ready['median']:.3f} s   (min {ready['min']:.3f}, max {ready['max']:.3f})")
    print(f"peak RSS, one patient      {patient['peak_rss_mb']['median']:.1f} MB")
    print(f"last sample -> decision    {patient['decision_latency_ms']['median']:.1f} ms "
          f"(stored: {patient['stored_latency_ms']['median']:.1f} ms)")
    print(f"inference per patient      {inference['ms_per_patient']['median']:.2f} ms ({inference['provider']})")
    print(f"one stream                 {one['realtime_multiple_per_stream']['median']:.0f}x real time "
          f"({worst['realtime_multiple_per_stream']['median']:.0f}x with 64-byte reads)")
    print(f"32 streams interleaved     {many['realtime_multiple_per_stream']['median']:.0f}x real time each "
          f"-> one core sustains ~{many['streams_one_core_sustains']} streams")
    print(f"load average {result['machine']['load_average_1min']:.1f}; wrote {RESULTS.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
