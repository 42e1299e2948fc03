"""INT8 with ONNX Runtime quantization, after shape inference, calibrated on real features.

Two artifacts, because one model cannot serve both backends well:

    cpu       static QDQ (uint8 activations, int8 per-channel weights) on the convolutions and the
              attention / projection matmuls, and optionally the LSTM dynamically quantized, which
              emits com.microsoft.DynamicQuantizeLSTM: an ONNX Runtime-only operator.
    tensorrt  only standard ONNX operators, symmetric int8 Q/DQ (every zero point 0) on the
              convolutions and matmuls, the LSTM in float: TensorRT's explicit quantization.

In both, every node of a DynamicLinear (the hypernetwork that generates the final layer's weights,
and the per-sample matmul that applies them) stays in float: it carries most of the quantization
error and costs almost nothing.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from torch import nn

from export.data import PatientInputs
from export.source import ExportSource
from trainer.encoder import SiteEncoder
from trainer.hypernet import DynamicLinear

QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
CALIBRATION_BATCH = 8
# ONNX Runtime's percentile calibrator keeps every intermediate tensor of every calibration batch in
# memory: for the two-headed children's model (ten fold models, four sites) 450 site recordings
# outgrew 22 GB. 64 site recordings, spread over the calibration patients, hold each activation's
# 99.99th percentile over ~3.8 million values per channel.
MAX_CALIBRATION_ROWS = 64
# activation ranges from the 99.99th percentile of |x| over the calibration crops: min/max let a few
# outliers stretch the scale (measured on PhysioNet 2016: more triage flips with MinMax)
CALIBRATION_PERCENTILE = 99.99


@dataclass(frozen=True)
class Int8Variant:
    name: str  # "cpu" | "tensorrt"
    symmetric: bool
    quantize_lstm: bool

    def describe(self, excluded: list[str], calibration: str) -> dict:
        return {
            "precision": "int8",
            "backend": "onnxruntime-cpu" if self.name == "cpu" else "tensorrt (explicit quantization from Q/DQ)",
            "quantized_ops": list(QUANTIZED_OPS) + (["LSTM (dynamic, com.microsoft.DynamicQuantizeLSTM)"] if self.quantize_lstm else []),
            "activations": ("int8 symmetric (zero point 0)" if self.symmetric else "uint8 asymmetric") + f", static, {CALIBRATION_PERCENTILE} percentile range",
            "weights": "int8 symmetric per channel" + (", biases float" if self.name == "tensorrt" else ", biases int32"),
            "kept_float": "hypernetwork and per-sample matmul (DynamicLinear), first convolution block" + ("" if self.quantize_lstm else ", LSTM"),
            "excluded_nodes": len(excluded),
            "calibration": calibration,
        }


CPU = Int8Variant("cpu", symmetric=False, quantize_lstm=False)
CPU_LSTM = Int8Variant("cpu", symmetric=False, quantize_lstm=True)
TENSORRT = Int8Variant("tensorrt", symmetric=True, quantize_lstm=False)


class _Reader:
    """onnxruntime.quantization CalibrationDataReader over real recordings, one site per example.

    ONNX Runtime's percentile calibrator stacks each tensor over all calibration batches, so every
    batch must give every intermediate tensor the same shape; the number of present sites changes
    the shapes (sites are gathered before encoding). One site per example, in full batches, keeps
    the shapes fixed while the site encoder, which holds nearly all quantized nodes, sees exactly
    the recordings' distribution. (The murmur head's attention over sites is calibrated on single
    sites too; its outputs are float-checked by the parity report.)
    """

    def __init__(self, data: PatientInputs):
        x, mask, metadata = data.inputs["x"], data.inputs["site_mask"], data.inputs["metadata"]
        rows = [(p, s) for p in range(len(data.ids)) for s in np.flatnonzero(mask[p])]
        if len(rows) > MAX_CALIBRATION_ROWS:  # evenly over the patients and sites, not the first patients only
            rows = [rows[i] for i in np.linspace(0, len(rows) - 1, MAX_CALIBRATION_ROWS).round().astype(int)]
        n_full = len(rows) // CALIBRATION_BATCH * CALIBRATION_BATCH
        if n_full == 0:
            raise ValueError(f"calibration needs at least {CALIBRATION_BATCH} site recordings, got {len(rows)}")
        batches = []
        for start in range(0, n_full, CALIBRATION_BATCH):
            chosen = rows[start : start + CALIBRATION_BATCH]
            one_x = np.zeros((len(chosen), *x.shape[1:]), dtype=np.float32)
            one_mask = np.zeros((len(chosen), mask.shape[1]), dtype=np.float32)
            for i, (p, s) in enumerate(chosen):
                one_x[i, :, s], one_mask[i, s] = x[p, :, s], 1.0
            batches.append({"x": one_x, "site_mask": one_mask, "metadata": metadata[[p for p, _ in chosen]]})
        self._batches = iter(batches)

    def get_next(self):
        return next(self._batches, None)


def node_scope(root: nn.Module, qualified_name: str) -> str:
    """The ONNX node-name prefix the TorchScript exporter gives a submodule's nodes.

    Every called module adds one path component, named relative to its nearest ancestor that is not
    a container (a ModuleList is never called; Sequential children read "cnn.0", "cnn.0.0"):
    models.0.encoder.cnn.0 -> /models.0/encoder/cnn/cnn.0/
    """
    parts, components, anchor, module = qualified_name.split("."), [], 0, root
    for i, part in enumerate(parts):
        module = getattr(module, part)
        if not isinstance(module, nn.ModuleList):
            components.append(".".join(parts[anchor : i + 1]))
        if not isinstance(module, (nn.ModuleList, nn.Sequential)):
            anchor = i + 1
    return "/" + "/".join(components) + "/"


def float_only_prefixes(source: ExportSource) -> list[str]:
    """Node scopes kept in float: every DynamicLinear, and the first convolution block (one input
    channel, the widest activations; in float it removes most of the flips at the threshold)."""
    names = [n for n, m in source.graph.named_modules() if isinstance(m, DynamicLinear)]
    names += [n for n, m in source.graph.named_modules() if isinstance(m, SiteEncoder)]
    return [node_scope(source.graph, n + ".cnn.0" if n.endswith("encoder") else n) for n in names]


def float_only_nodes(model: onnx.ModelProto, prefixes: list[str]) -> list[str]:
    return [n.name for n in model.graph.node if any(n.name.startswith(p) for p in prefixes)]


def quantize(float_model: bytes, source: ExportSource, calibration: PatientInputs, variant: Int8Variant,
             calibration_note: str) -> tuple[bytes, dict]:
    """(int8 model bytes without manifest, the variant's description for the manifest)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "float.onnx").write_bytes(float_model)
        quant_pre_process(str(tmp / "float.onnx"), str(tmp / "prepared.onnx"), skip_symbolic_shape=True)
        prepared = onnx.load(str(tmp / "prepared.onnx"))
        excluded = float_only_nodes(prepared, float_only_prefixes(source))
        quantize_static(
            str(tmp / "prepared.onnx"), str(tmp / "static.onnx"), _Reader(calibration),
            quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_exclude=excluded,
            per_channel=True, activation_type=QuantType.QInt8 if variant.symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.Percentile,
            extra_options={"ActivationSymmetric": variant.symmetric, "WeightSymmetric": True, "CalibPercentile": CALIBRATION_PERCENTILE,
                           # an int32 bias DequantizeLinear is not explicit quantization TensorRT accepts; it fuses a float bias itself
                           "QuantizeBias": variant.name != "tensorrt"},
        )
        result = tmp / "static.onnx"
        if variant.quantize_lstm:
            quantize_dynamic(str(result), str(tmp / "dynamic.onnx"), op_types_to_quantize=["LSTM"], weight_type=QuantType.QInt8)
            result = tmp / "dynamic.onnx"
        model = onnx.load(str(result))
    used = {n.domain for n in model.graph.node}
    kept = [o for o in model.opset_import if o.domain in used or o.domain in ("", "ai.onnx")]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    onnx.checker.check_model(model)
    return model.SerializeToString(), variant.describe(excluded, calibration_note)
