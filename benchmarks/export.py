"""Export speed and the size and CPU latency of float vs int8 models in ONNX Runtime, one thread.

Run: python benchmarks/export.py [--source runs/pn16-hyper-5fold/fold1/model.pt] [--repeats N].
Prints a table and writes benchmarks/results/export.json. Not a test: figures depend on the machine
and its load, so medians (and min) over repeats are reported.

Latency: real PhysioNet 2016 patients (the source run's data), batch 1 and 8, one intra-op thread.
Where int8 is slower, an ONNX Runtime profile of one batch-1 run gives the time per operator type,
which shows where the time goes (the Q/DQ pairs and the float LSTM around small int8 kernels).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from export.data import load_real_data  # noqa: E402
from export.manifest import build_manifest  # noqa: E402
from export.onnx_model import export_graph, with_manifest  # noqa: E402
from export.quantize import CPU, CPU_LSTM, TENSORRT, quantize  # noqa: E402
from export.source import load_source  # noqa: E402
from runtime.inference import DISABLED_OPTIMIZERS  # noqa: E402


def session(model_bytes: bytes, profile_dir: str | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    if profile_dir:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(profile_dir, "profile")
    # as the runtime runs it: QDQ propagation off, so MaxPool stays in float (runtime.inference.DISABLED_OPTIMIZERS)
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"], disabled_optimizers=list(DISABLED_OPTIMIZERS))


def latency(models: dict[str, bytes], inputs: dict, repeats: int) -> dict[str, dict]:
    """Median and min ms per run of each model, runs interleaved so load changes hit all alike."""
    sessions = {name: session(m) for name, m in models.items()}
    for s in sessions.values():
        for _ in range(3):
            s.run(None, inputs)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, s in sessions.items():
            started = time.perf_counter()
            s.run(None, inputs)
            times[name].append(time.perf_counter() - started)
    return {name: {"median_ms": statistics.median(t) * 1e3, "min_ms": min(t) * 1e3} for name, t in times.items()}


def time_per_op_type(model_bytes: bytes, inputs: dict, runs: int = 20) -> dict[str, float]:
    """Mean microseconds per run spent in each operator type (ONNX Runtime profiler)."""
    with tempfile.TemporaryDirectory() as tmp:
        s = session(model_bytes, tmp)
        for _ in range(runs):
            s.run(None, inputs)
        events = json.loads(Path(s.end_profiling()).read_text())
    totals: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"]["op_name"]
            totals[op] = totals.get(op, 0.0) + e["dur"] / runs
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", type=Path, default=REPO_ROOT / "runs" / "pn16-hyper-5fold" / "fold1" / "model.pt")
    p.add_argument("--cache", type=Path, default=REPO_ROOT / "runs" / "feature-cache")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "export.json")
    args = p.parse_args()
    torch.set_num_threads(1)

    started = time.perf_counter()
    source = load_source(args.source)
    float_graph = export_graph(source)
    float_model = with_manifest(float_graph, build_manifest(source, ("benchmarks/export.py",)))
    export_s = time.perf_counter() - started
    data = load_real_data(source, None, args.cache)
    models = {"float": (float_model, export_s)}
    for name, variant in (("int8_cpu", CPU), ("int8_cpu_lstm_dynamic", CPU_LSTM), ("int8_tensorrt", TENSORRT)):
        started = time.perf_counter()
        graph, _ = quantize(float_graph, source, data.calibration, variant, data.note)
        models[name] = (graph, time.perf_counter() - started)

    batch1 = next(data.evaluation.batches(1))
    batch8 = next(data.evaluation.batches(8))
    graphs = {name: m for name, (m, _) in models.items()}
    latency1, latency8 = latency(graphs, batch1, args.repeats), latency(graphs, batch8, max(5, args.repeats // 4))
    results = {}
    for name, (model_bytes, seconds) in models.items():
        results[name] = {
            "size_bytes": len(model_bytes), "seconds_to_make": seconds, "batch1": latency1[name], "batch8": latency8[name],
            "time_per_op_type_us_batch1": {k: round(v, 1) for k, v in list(time_per_op_type(model_bytes, batch1).items())[:12]},
        }
    base = results["float"]
    print(f"{'model':24s} {'size kB':>8s} {'b1 ms':>7s} {'b8 ms':>7s} {'x float b1':>10s} {'make s':>7s}")
    for name, r in results.items():
        r["latency_ratio_batch1"] = r["batch1"]["median_ms"] / base["batch1"]["median_ms"]
        r["latency_ratio_batch8"] = r["batch8"]["median_ms"] / base["batch8"]["median_ms"]
        r["size_ratio"] = r["size_bytes"] / base["size_bytes"]
        print(f"{name:24s} {r['size_bytes'] / 1e3:8.1f} {r['batch1']['median_ms']:7.2f} {r['batch8']['median_ms']:7.2f} "
              f"{r['latency_ratio_batch1']:10.2f} {r['seconds_to_make']:7.2f}")
    out = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": platform.processor() or platform.machine(), "system": platform.platform(), "logical_cpus": os.cpu_count(),
                    "load_average_1min": os.getloadavg()[0], "onnxruntime": ort.__version__, "torch": torch.__version__},
        "source": str(args.source.relative_to(REPO_ROOT) if args.source.is_relative_to(REPO_ROOT) else args.source),
        "inputs": {"crops": source.n_crops, "sites_present": int(batch1["site_mask"].sum()), "data": data.dataset},
        "threads": 1, "repeats": args.repeats,
        "export_float_seconds": export_s,
        "models": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
