"""Parity proofs written beside each model: float ONNX vs torch, int8 vs float, on real recordings.

    float_parity(source, model_bytes, data)        max |p_onnx - p_torch| over held-out patients
    int8_report(float_bytes, int8_bytes, ...)      AUROC and challenge cost float vs int8, triage
                                                   agreement at every operating point, the murmur
                                                   head's class agreement (two-headed models), file
                                                   size ratio, latency ratio at batch 1 with one thread
"""

from __future__ import annotations

import time

import numpy as np

from export.data import PatientInputs, RealData
from export.onnx_model import torch_outputs
from export.source import ExportSource
from runtime.inference import DISABLED_OPTIMIZERS
from trainer import metrics

FLOAT_TOLERANCE = 1e-4
AUROC_TOLERANCE = 0.005
AGREEMENT_TARGET = 0.99


def cpu_session(model_bytes: bytes, threads: int = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # as the runtime runs it (runtime.inference.DISABLED_OPTIMIZERS: no int8 MaxPool)
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"], disabled_optimizers=list(DISABLED_OPTIMIZERS))


def probabilities(session, data: PatientInputs, batch: int = 16, output: str = "outcome_probability") -> np.ndarray:
    return np.concatenate([session.run([output], b)[0] for b in data.batches(batch)]).astype(np.float64)


def has_output(session, name: str) -> bool:
    return any(o.name == name for o in session.get_outputs())


def murmur_parity(float_session, int8_session, data: PatientInputs) -> dict:
    """The murmur head of a two-headed model (pcg-export --murmur-run), int8 against float: how often
    the most likely class is the same, and the largest probability change."""
    p_float = probabilities(float_session, data, output="murmur_probabilities")
    p_int8 = probabilities(int8_session, data, output="murmur_probabilities")
    return {"class_agreement": float(np.mean(p_float.argmax(1) == p_int8.argmax(1))),
            "max_abs_probability_difference": float(np.abs(p_int8 - p_float).max())}


def float_parity(source: ExportSource, model_bytes: bytes, data: PatientInputs) -> dict:
    """Every output of the ONNX model against the torch graph, on real patients."""
    session = cpu_session(model_bytes)
    worst: dict[str, float] = {}
    for batch in data.batches(16):
        got = session.run(None, batch)
        expected = torch_outputs(source, batch)
        for name, a, b in zip(source.graph.output_names, got, expected):
            worst[name] = max(worst.get(name, 0.0), float(np.abs(a.astype(np.float64) - b).max()))
    return {
        "patients": len(data.ids),
        "max_abs_difference": worst,
        "tolerance_probability": FLOAT_TOLERANCE,
        "passed": worst["outcome_probability"] <= FLOAT_TOLERANCE,
    }


def paired_latency_ms(models: list[bytes], inputs: dict[str, np.ndarray], repeats: int = 30) -> list[float]:
    """Median wall time of one run of each model, one intra-op thread, runs interleaved so that a
    shared machine's changing load hits every model alike."""
    sessions = [cpu_session(m) for m in models]
    for s in sessions:
        for _ in range(2):
            s.run(None, inputs)
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(repeats):
        for s, t in zip(sessions, times):
            started = time.perf_counter()
            s.run(None, inputs)
            t.append(time.perf_counter() - started)
    return [float(np.median(t) * 1000.0) for t in times]


def int8_report(float_bytes: bytes, int8_bytes: bytes, data: RealData, thresholds: dict[str, float], repeats: int = 30) -> dict:
    evaluation = data.evaluation
    float_session, int8_session = cpu_session(float_bytes), cpu_session(int8_bytes)
    p_float, p_int8 = probabilities(float_session, evaluation), probabilities(int8_session, evaluation)
    murmur = murmur_parity(float_session, int8_session, evaluation) if has_output(float_session, "murmur_probabilities") else None
    labels = evaluation.labels
    auroc_float, auroc_int8 = metrics.auroc(labels, p_float), metrics.auroc(labels, p_int8)
    points = {}
    for name, threshold in thresholds.items():
        f, q = metrics.threshold_metrics(labels, p_float, threshold), metrics.threshold_metrics(labels, p_int8, threshold)
        points[name] = {"threshold": threshold, "triage_agreement": float(np.mean((p_float >= threshold) == (p_int8 >= threshold))),
                        "cost_float": f["cost"], "cost_int8": q["cost"],
                        "sensitivity_float": f["sensitivity"], "sensitivity_int8": q["sensitivity"],
                        "specificity_float": f["specificity"], "specificity_int8": q["specificity"]}
    one = next(evaluation.batches(1))
    latency_float, latency_int8 = paired_latency_ms([float_bytes, int8_bytes], one, repeats)
    agreement = min(p["triage_agreement"] for p in points.values())
    murmur_agrees = murmur is None or murmur["class_agreement"] >= AGREEMENT_TARGET
    return {
        "data": {"dataset": data.dataset, "evaluation_fold": data.evaluation_fold, "patients": len(evaluation.ids),
                 "abnormal": int(labels.sum()), "note": data.note},
        "auroc_float": auroc_float, "auroc_int8": auroc_int8, "auroc_difference": auroc_int8 - auroc_float,
        "max_abs_probability_difference": float(np.abs(p_int8 - p_float).max()),
        "mean_abs_probability_difference": float(np.abs(p_int8 - p_float).mean()),
        "operating_points": points,
        **({"murmur_head": murmur} if murmur else {}),
        "size_bytes_float": len(float_bytes), "size_bytes_int8": len(int8_bytes), "size_ratio": len(int8_bytes) / len(float_bytes),
        "latency_ms_batch1_1thread_float": latency_float, "latency_ms_batch1_1thread_int8": latency_int8,
        "latency_ratio": latency_int8 / latency_float,
        "targets": {"auroc_difference": AUROC_TOLERANCE, "triage_agreement": AGREEMENT_TARGET,
                    **({"murmur_class_agreement": AGREEMENT_TARGET} if murmur else {})},
        "passed": abs(auroc_int8 - auroc_float) <= AUROC_TOLERANCE and agreement >= AGREEMENT_TARGET and murmur_agrees,
    }
