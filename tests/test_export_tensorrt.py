"""The TensorRT compatibility check (runs everywhere, CI included) accepts what the TensorRT ONNX
parser and explicit quantization take and rejects the rest with a reason; an engine is built and run
only where tensorrt and a CUDA GPU exist (skipped with the reason elsewhere)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install -e '.[export]')")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from export.tensorrt import TensorRTUnavailable, check_tensorrt_compatible  # noqa: E402


def _model(nodes, initializers=(), opset=17, domains=()):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in domains)])


def _qdq(zero_point, dtype=np.int8):
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "scale"), numpy_helper.from_array(np.array(zero_point, dtype), "zp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "scale", "zp"], ["y"], name="dq")]
    return _model(nodes, inits)


def _lstm(**attributes):
    inits = [numpy_helper.from_array(np.zeros((2, 16, 4), np.float32), "W"), numpy_helper.from_array(np.zeros((2, 16, 4), np.float32), "R")]
    node = helper.make_node("LSTM", ["x", "W", "R"], ["y"], name="lstm", hidden_size=4, direction="bidirectional", **attributes)
    return _model([node], inits)


def test_a_symmetric_int8_qdq_model_passes():
    assert check_tensorrt_compatible(_qdq(0)) == []
    assert check_tensorrt_compatible(_lstm()) == []


def test_nonzero_zero_points_and_uint8_are_rejected():
    assert any("zero point [3" in p for p in check_tensorrt_compatible(_qdq(3)))
    assert any("UINT8 quantization" in p for p in check_tensorrt_compatible(_qdq(128, np.uint8)))
    missing = _model([helper.make_node("QuantizeLinear", ["x", "s"], ["y"], name="q")],
                     [numpy_helper.from_array(np.array(0.1, np.float32), "s")])
    assert any("no zero point" in p for p in check_tensorrt_compatible(missing))


def test_runtime_only_and_unsupported_operators_are_rejected():
    ms = _model([helper.make_node("DynamicQuantizeLSTM", ["x"], ["y"], domain="com.microsoft", name="d")], domains=("com.microsoft",))
    assert check_tensorrt_compatible(ms) == ["operator com.microsoft.DynamicQuantizeLSTM (1 node(s)) is not supported by the TensorRT ONNX parser"]
    integer = _model([helper.make_node("MatMulInteger", ["x", "x"], ["y"], name="m")])
    assert any("MatMulInteger" in p for p in check_tensorrt_compatible(integer))


def test_opset_above_the_target_is_rejected():
    model = _model([helper.make_node("Relu", ["x"], ["y"])], opset=18)
    assert any("opset 18" in p for p in check_tensorrt_compatible(model))
    assert check_tensorrt_compatible(model, max_opset=18) == []


def test_lstm_constraints():
    assert any("layout=1" in p for p in check_tensorrt_compatible(_lstm(layout=1)))
    assert any("same activations" in p for p in check_tensorrt_compatible(_lstm(activations=["Sigmoid", "Tanh", "Tanh", "Sigmoid", "Relu", "Relu"])))
    varlen = _model([helper.make_node("LSTM", ["x", "W", "R", "", "lens"], ["y"], name="lstm", hidden_size=4)])
    assert any("sequence_lens" in p for p in check_tensorrt_compatible(varlen))


def _tensorrt_gpu_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "the tensorrt package is not installed (pip install -e '.[trt]' on a GPU machine)"
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU on this machine"
    return None


def test_without_tensorrt_or_a_gpu_the_build_says_why_and_exits_3(capsys):
    reason = _tensorrt_gpu_reason()
    if reason is None:
        pytest.skip("tensorrt and a GPU are present here; test_engine_builds_and_matches_onnx_runtime covers the build")
    from export.tensorrt import require_tensorrt

    with pytest.raises(TensorRTUnavailable, match="tensorrt|GPU"):
        require_tensorrt()
    from export.cli import main as pcg_export

    assert pcg_export(["no-such-run", "--out", "never.onnx", "--tensorrt"]) == 3
    assert "--tensorrt: " in capsys.readouterr().err


@pytest.mark.slow
def test_engine_builds_and_matches_onnx_runtime(tmp_path):
    reason = _tensorrt_gpu_reason()
    if reason is not None:
        pytest.skip(f"TensorRT engine test needs tensorrt and a CUDA GPU: {reason}")
    import onnxruntime as ort

    from export.data import load_real_data
    from export.manifest import build_manifest
    from export.onnx_model import export_graph, with_manifest
    from export.quantize import TENSORRT, quantize
    from export.source import load_source
    from export.tensorrt import build_engine, run_engine
    from tests.trainer_fixtures import write_circor_folder
    from trainer.crossval import main as pcg_train

    data = write_circor_folder(tmp_path / "circor", n_patients=24, seed=5)
    run = tmp_path / "run"
    assert pcg_train(["--data", str(data), "--model", "hyper", "--folds", "2", "--epochs", "2", "--out", str(run),
                      "--cache", str(tmp_path / "cache"), "--eval-crops", "2", "--quiet"]) == 0
    source = load_source(run)
    real = load_real_data(source, None, tmp_path / "cache", n_calibration=12, min_calibration=8)
    graph, variant = quantize(export_graph(source), source, real.calibration, TENSORRT, real.note)
    manifest = build_manifest(source, ("test",), variant=variant)
    qdq = with_manifest(graph, manifest)
    engine, sidecar = build_engine(qdq, manifest, max_batch=4)
    assert len(sidecar.inference["engine"]["engine_sha256"]) == 64 and sidecar.inference["engine"]["gpu"]
    inputs = {k: v[:3] for k, v in real.evaluation.inputs.items()}
    got = run_engine(engine, inputs)["outcome_probability"]
    expected = ort.InferenceSession(qdq, providers=["CPUExecutionProvider"]).run(["outcome_probability"], inputs)[0]
    np.testing.assert_allclose(got, expected, atol=0.05)
