"""Trainer speed on this CPU: parameters per model, one training step and one inference batch
(1 and 2 torch threads), and peak memory. Prints the figures and writes benchmarks/results/train_speed.json.

    python benchmarks/train_speed.py [--repeats 5]

A training step is a batch of 32 patients; "1 site" is PhysioNet 2016 (one recording per patient),
"4 sites" is CirCor-like. Figures depend on what else the machine runs: read them as orders of size.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import torch

from runtime.dsp.config import FrontEndConfig
from runtime.metadata import METADATA_DIM
from trainer.model import METADATA_PATHS, ModelConfig, ScreeningModel, parameter_count


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    frontend = FrontEndConfig()
    results: dict = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                     "n_freq": frontend.n_freq, "clip_frames": frontend.clip_frames, "parameters": {}, "timings_s": {}}
    for task in ("outcome", "murmur"):
        for path in METADATA_PATHS:
            results["parameters"][f"{task}/{path}"] = parameter_count(ScreeningModel(ModelConfig(task=task, metadata_path=path)))
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for n_sites in (1, 4):
            model = ScreeningModel(ModelConfig(metadata_path="hyper", n_freq=frontend.n_freq, metadata_dim=METADATA_DIM))
            optimizer = torch.optim.Adam(model.parameters())
            x = torch.randn(32, 5, frontend.n_freq, frontend.clip_frames)
            mask = torch.zeros(32, 5)
            mask[:, :n_sites] = 1.0
            metadata = torch.randn(32, METADATA_DIM)

            def step():
                logits, _ = model.head_logits(x, mask, metadata)
                optimizer.zero_grad()
                logits.sum().backward()
                optimizer.step()

            def infer():
                with torch.no_grad():
                    model.eval()(x, mask, metadata)
                model.train()

            key = f"threads{threads}/{n_sites}site"
            results["timings_s"][f"{key}/train_step_32"] = median_seconds(step, args.repeats)
            results["timings_s"][f"{key}/inference_32"] = median_seconds(infer, args.repeats)
    results["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    out = Path(__file__).parent / "results" / "train_speed.json"
    out.write_text(json.dumps(results, indent=1))
    for name, value in results["parameters"].items():
        print(f"parameters {name:24s} {value:>9,d}")
    for name, value in results["timings_s"].items():
        print(f"{name:36s} {value * 1000:8.1f} ms")
    print(f"peak memory {results['peak_memory_mb']:.0f} MB; written to {out}")


if __name__ == "__main__":
    main()
