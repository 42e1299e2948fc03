"""TensorRT: a compatibility check that runs anywhere, and an engine build for the GPU it runs on.

    check_tensorrt_compatible(model, max_opset)   problems (empty list: the TensorRT ONNX parser can
                                                  take it): operators in the default domain that the
                                                  parser supports, opset, int8 Q/DQ with zero points
                                                  all 0, LSTM constraints
    build_engine(onnx_bytes, manifest, max_batch) serialized engine + sidecar manifest (needs tensorrt
                                                  and a CUDA GPU; imported lazily)

Engines are specific to the GPU model and the TensorRT version, so they are built where they run.
TensorRT 10 and 11 differ: 11 removed implicit INT8 (calibrators, BuilderFlag.INT8 precision
hints) and builds every network strongly typed. Here the precision comes from the Q/DQ nodes in the
graph (explicit quantization), so one code path serves both: a strongly typed network (the flag is
required on 10, ignored on 11); TensorRT 8.x (JetPack 5) has no strong typing and gets BuilderFlag.INT8
with an explicit-batch network. VERSION_COMPATIBLE (TensorRT >= 8.6) makes an engine that later
TensorRT versions, including the lean runtime, can load; such an engine needs
`runtime.engine_host_code_allowed = True` to deserialize.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import onnx

from runtime.manifest import ModelManifest
from trainer.model import INPUT_NAMES

#: Default-domain operators the TensorRT ONNX parser supports (onnx-tensorrt operators.md, TensorRT
#: 8.5 to 10), restricted to what a model of this project could plausibly contain.
TENSORRT_OPS = frozenset("""
Abs Add And ArgMax ArgMin AveragePool BatchNormalization Cast Ceil Clip Concat Constant ConstantOfShape
Conv ConvTranspose Cos CumSum DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand
Flatten Floor GRU Gather GatherElements GatherND Gemm GlobalAveragePool GlobalMaxPool Greater GreaterOrEqual
HardSigmoid HardSwish Identity If InstanceNormalization LayerNormalization LeakyRelu Less LessOrEqual Log
LogSoftmax Loop LSTM MatMul Max MaxPool Mean Min Mod Mul Neg NonZero Not OneHot Or Pad Pow PRelu
QuantizeLinear RNN Range Reciprocal ReduceL1 ReduceL2 ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd
ReduceSum ReduceSumSquare Relu Reshape Resize Round ScatterElements ScatterND Selu Shape Sigmoid Sign Sin Size
Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tanh Tile TopK Transpose Trilu
Unsqueeze Where Xor
""".split())
TENSORRT_MAX_OPSET = 17  # TensorRT 8.5/8.6 (JetPack 5) parse up to 17; TensorRT 10 (JetPack 6) up to 20
_LSTM_ACTIVATIONS = ["Sigmoid", "Tanh", "Tanh"]


class TensorRTUnavailable(RuntimeError):
    """No tensorrt package or no CUDA GPU here; the message says what to install or where to run."""


def _attribute(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def check_tensorrt_compatible(model: onnx.ModelProto, max_opset: int = TENSORRT_MAX_OPSET) -> list[str]:
    """Everything that would stop the TensorRT ONNX parser or explicit quantization; [] when none."""
    problems = []
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version > max_opset:
            problems.append(f"opset {opset.version} is above {max_opset}, the highest the target TensorRT parses")
    initializers = {t.name: t for t in model.graph.initializer}
    constants = {o: n for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    unsupported: dict[str, int] = {}
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            unsupported[f"{node.domain}.{node.op_type}"] = unsupported.get(f"{node.domain}.{node.op_type}", 0) + 1
            continue
        if node.op_type not in TENSORRT_OPS:
            unsupported[node.op_type] = unsupported.get(node.op_type, 0) + 1
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            problems += _check_qdq(node, initializers, constants)
        if node.op_type == "LSTM":
            problems += _check_lstm(node, dequantized)
    problems += [f"operator {op} ({count} node(s)) is not supported by the TensorRT ONNX parser" for op, count in sorted(unsupported.items())]
    return problems


def _check_qdq(node: onnx.NodeProto, initializers: dict, constants: dict) -> list[str]:
    if len(node.input) < 3 or not node.input[2]:
        # without a zero point ONNX quantizes to uint8; a DequantizeLinear takes its input's type
        return [f"{node.name}: no zero point, so uint8; TensorRT takes int8 with zero point 0"] if node.op_type == "QuantizeLinear" else []
    name = node.input[2]
    if name in initializers:
        zero_point = onnx.numpy_helper.to_array(initializers[name])
        dtype = initializers[name].data_type
    elif name in constants:
        tensor = _attribute(constants[name], "value")
        zero_point, dtype = onnx.numpy_helper.to_array(tensor), tensor.data_type
    else:
        return [f"{node.name}: zero point {name!r} is computed at run time; TensorRT needs a constant 0"]
    problems = []
    if dtype != onnx.TensorProto.INT8:
        problems.append(f"{node.name}: {onnx.TensorProto.DataType.Name(dtype)} quantization; TensorRT explicit quantization takes int8")
    if zero_point.any():
        problems.append(f"{node.name}: zero point {zero_point.ravel()[:4].tolist()} is not 0; TensorRT quantization is symmetric")
    return problems


def _check_lstm(node: onnx.NodeProto, dequantized: set[str]) -> list[str]:
    problems = []
    direction = _attribute(node, "direction", b"forward")
    activations = [a.decode() if isinstance(a, bytes) else a for a in _attribute(node, "activations", [])]
    if activations and direction in (b"bidirectional", "bidirectional") and activations[:3] != activations[3:6]:
        problems.append(f"{node.name}: a bidirectional LSTM needs the same activations in both directions, got {activations}")
    if activations and activations[:3] != _LSTM_ACTIVATIONS:
        problems.append(f"{node.name}: LSTM activations {activations[:3]} are not the default {_LSTM_ACTIVATIONS}")
    if _attribute(node, "input_forget", 0) != 0:
        problems.append(f"{node.name}: LSTM input_forget=1 is not supported")
    if _attribute(node, "layout", 0) != 0:
        problems.append(f"{node.name}: LSTM layout=1 (batch first) is not supported; export with layout 0")
    if len(node.input) > 4 and node.input[4]:
        problems.append(f"{node.name}: LSTM sequence_lens: variable lengths in one batch are not supported (fixed-length crops expected)")
    if any(i in dequantized for i in node.input[1:3]):
        problems.append(f"{node.name}: LSTM weights are quantized; TensorRT runs LSTM in float only (FP32/FP16/BF16)")
    return problems


def require_tensorrt():
    """The tensorrt module; TensorRTUnavailable (saying why) without it or without a CUDA GPU."""
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTUnavailable("the tensorrt Python package is not installed (pip install -e '.[trt]', or on Jetson "
                                  "use the JetPack python3-libnvinfer); build the engine on the machine that will run it") from None
    try:
        import torch

        gpu = torch.cuda.is_available()
    except ImportError:
        gpu = False
    if not gpu:
        raise TensorRTUnavailable("no CUDA GPU is visible here; TensorRT engines are built on the GPU they will run on")
    return trt


def build_engine(onnx_bytes: bytes, manifest: ModelManifest, max_batch: int = 16, workspace_bytes: int = 1 << 30) -> tuple[bytes, ModelManifest]:
    """(serialized engine, sidecar manifest) for the GPU and TensorRT version here."""
    problems = check_tensorrt_compatible(onnx.load_from_string(onnx_bytes))
    if problems:
        raise ValueError("the model is not TensorRT-compatible:\n  " + "\n  ".join(problems))
    trt = require_tensorrt()
    import torch

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    flags = trt.NetworkDefinitionCreationFlag
    if hasattr(flags, "STRONGLY_TYPED"):
        network = builder.create_network(1 << int(flags.STRONGLY_TYPED))
    else:
        network = builder.create_network(1 << int(flags.EXPLICIT_BATCH))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ValueError("the TensorRT ONNX parser rejected the model:\n  " + "\n  ".join(errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if not hasattr(flags, "STRONGLY_TYPED"):
        config.set_flag(trt.BuilderFlag.INT8)  # TensorRT 8.x: Q/DQ nodes still need the INT8 flag
    if hasattr(trt.BuilderFlag, "VERSION_COMPATIBLE"):
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        rest = tuple(tensor.shape)[1:]
        profile.set_shape(tensor.name, (1, *rest), (1, *rest), (max_batch, *rest))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError("TensorRT could not build the engine; see the TensorRT log above")
    engine_bytes = bytes(engine)
    properties = torch.cuda.get_device_properties(0)
    sidecar = replace(manifest, inference={**manifest.inference, "engine": {
        "tensorrt_version": trt.__version__, "tensorrt_major": major,
        "gpu": properties.name, "compute_capability": f"{properties.major}.{properties.minor}",
        "version_compatible": hasattr(trt.BuilderFlag, "VERSION_COMPATIBLE"),
        "strongly_typed": hasattr(flags, "STRONGLY_TYPED"),
        "profile": {"batch": [1, 1, max_batch]},
        "engine_sha256": hashlib.sha256(engine_bytes).hexdigest(),
        "source": "graph_sha256 is the hash of the Q/DQ ONNX model the engine was built from",
    }})
    return engine_bytes, sidecar


def run_engine(engine_bytes: bytes, inputs: dict) -> dict:
    """Run a serialized engine on numpy inputs (CUDA buffers through torch); outputs as numpy."""
    trt = require_tensorrt()
    import torch

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    runtime.engine_host_code_allowed = True  # version-compatible engines carry their own host code
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    context = engine.create_execution_context()
    buffers = {}
    for name in INPUT_NAMES:
        buffers[name] = torch.from_numpy(inputs[name]).contiguous().cuda()
        context.set_input_shape(name, tuple(buffers[name].shape))
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
            buffers[name] = torch.empty(tuple(context.get_tensor_shape(name)), dtype=torch.float32, device="cuda")
        context.set_tensor_address(name, buffers[name].data_ptr())
    stream = torch.cuda.Stream()
    if not context.execute_async_v3(stream.cuda_stream):
        raise RuntimeError("TensorRT execution failed")
    stream.synchronize()
    return {n: b.cpu().numpy() for n, b in buffers.items() if n not in INPUT_NAMES}

