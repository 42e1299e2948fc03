"""The float ONNX model: one self-contained file, dynamic batch, the manifest embedded.

Exporter: torch's TorchScript exporter (`dynamo=False`). It needs no onnxscript, writes exactly the
opset asked for, and its node names carry the module path (/models.0/final/...), which is how the
quantizer finds the hypernetwork and the per-sample matmul to keep in float. The default opset is
17: TensorRT 8.5/8.6 (JetPack 5) parse up to opset 17 and TensorRT 10 (JetPack 6) more, and ONNX
Runtime has run opset 17 since 1.13. Time is fixed (crops of clip_frames frames), so only the batch
axis is dynamic; the crop count K is fixed at what cross-validation evaluated.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import torch

from export.source import ExportSource
from runtime.manifest import ModelManifest, embed_manifest
from trainer.model import INPUT_NAMES

DEFAULT_OPSET = 17
MAX_OPSET = 17  # the highest the exporter path here has been tested with on TensorRT and ONNX Runtime


def export_graph(source: ExportSource, opset: int = DEFAULT_OPSET) -> bytes:
    """Serialized float ONNX of the ensemble graph, checked by onnx.checker (no manifest yet)."""
    if not 13 <= opset <= MAX_OPSET:
        raise ValueError(f"--opset {opset} is not supported; use 13..{MAX_OPSET} (17 loads on TensorRT 8.5+ and ONNX Runtime 1.13+)")
    buffer = io.BytesIO()
    outputs = list(source.graph.output_names)
    with torch.no_grad(), warnings.catch_warnings():
        # the LSTM's zero initial state is built from the batch size inside the graph, so the
        # exporter's warning about LSTMs and batch sizes other than 1 does not apply
        warnings.filterwarnings("ignore", message="Exporting a model to ONNX with a batch_size other than 1")
        torch.onnx.export(source.graph, source.input_example(), buffer, dynamo=False, opset_version=opset,
                          input_names=list(INPUT_NAMES), output_names=outputs,
                          dynamic_axes={n: {0: "batch"} for n in (*INPUT_NAMES, *outputs)}, do_constant_folding=True)
    model_bytes = buffer.getvalue()
    model = onnx.load_from_string(model_bytes)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise RuntimeError("the exported model refers to external data; it must be one self-contained file")
    onnx.checker.check_model(model, full_check=True)
    return model_bytes


def with_manifest(model_bytes: bytes, manifest: ModelManifest) -> bytes:
    """The model with its manifest (graph hash filled in), checked again by onnx.checker."""
    out = embed_manifest(model_bytes, manifest)
    onnx.checker.check_model(onnx.load_from_string(out))
    return out


def torch_outputs(source: ExportSource, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The torch graph's outputs for numpy inputs (what parity is measured against)."""
    with torch.no_grad():
        return [t.numpy() for t in source.graph(*(torch.from_numpy(inputs[n]) for n in INPUT_NAMES))]
