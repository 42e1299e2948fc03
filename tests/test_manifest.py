import dataclasses
import hashlib
import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the onnx package builds the test model (pip install -e .[dev])")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is a core dependency")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from runtime.manifest import (  # noqa: E402
    MANIFEST_KEY,
    ManifestError,
    ModelManifest,
    OperatingPoint,
    embed_manifest,
    graph_sha256,
    verify_model_file,
)
from runtime.metadata import METADATA_FEATURES, MetadataStats  # noqa: E402
from runtime.sites import SITES  # noqa: E402


def tiny_model_bytes(weight: float = 0.5) -> bytes:
    """probability = sigmoid(x @ w), x [batch, 3]: small but a real ONNX graph with an initializer."""
    w = numpy_helper.from_array(np.full((3, 1), weight, dtype=np.float32), name="w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["logit"]), helper.make_node("Sigmoid", ["logit"], ["probability"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch", 1])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="test")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def make_manifest(**changes) -> ModelManifest:
    base = ModelManifest(
        model_name="tiny",
        task="outcome",
        architecture="hyper",
        frontend={"target_rate_hz": 1000},
        frontend_hash="0" * 64,
        inputs={"x": {"shape": ["batch", 3], "dtype": "float32"}},
        outputs={"probability": {"shape": ["batch", 1], "meaning": "calibrated P(Abnormal)"}},
        class_names={"outcome": ["Abnormal", "Normal"]},
        operating_points={
            "cost_optimal": OperatingPoint(0.42, "challenge cost minimum on validation folds", 0.8, 0.6),
            "high_sensitivity": OperatingPoint(0.2, "sensitivity >= 0.95 on validation folds", 0.95, 0.3),
        },
        default_operating_point="cost_optimal",
        inference={"crop_frames": 250, "aggregation": "mean probability over crops"},
        training_data={"dataset": "synthetic", "patients": 10},
        metrics={"cross_validated_5_fold": {"auroc": 0.7}},
        created_utc="2026-11-25T00:00:00Z",
        code_version="test",
        metadata_features=METADATA_FEATURES,
        metadata_stats=MetadataStats().to_dict(),
        graph_sha256="f" * 64,
        commands=("pcg-train ...", "pcg-export ..."),
    )
    return dataclasses.replace(base, **changes)


def test_json_round_trip_keeps_every_field():
    manifest = make_manifest()
    again = ModelManifest.from_json(manifest.to_json())
    assert again == manifest
    assert again.operating_points["cost_optimal"].threshold == 0.42
    assert again.site_order == SITES


def test_graph_hash_equals_sha256_of_the_onnx_graph_proto():
    data = tiny_model_bytes()
    expected = hashlib.sha256(onnx.load_from_string(data).graph.SerializeToString()).hexdigest()
    assert graph_sha256(data) == expected
    assert graph_sha256(tiny_model_bytes(0.6)) != expected


def test_embedded_manifest_is_read_through_onnx_runtime(tmp_path):
    data = embed_manifest(tiny_model_bytes(), make_manifest())
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    manifest = verify_model_file(path, session)
    assert manifest.graph_sha256 == graph_sha256(data)
    assert manifest.model_name == "tiny" and manifest.uses_metadata
    # the graph still runs and the manifest did not change it
    out = session.run(None, {"x": np.ones((2, 3), dtype=np.float32)})[0]
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-1.5)), rtol=1e-6)
    onnx.checker.check_model(onnx.load(str(path)))


def test_embedding_twice_replaces_the_manifest():
    once = embed_manifest(tiny_model_bytes(), make_manifest(model_name="first"))
    twice = embed_manifest(once, make_manifest(model_name="second"))
    props = {p.key: p.value for p in onnx.load_from_string(twice).metadata_props}
    assert list(props) == [MANIFEST_KEY]
    assert json.loads(props[MANIFEST_KEY])["model_name"] == "second"


def test_tampered_weights_are_refused(tmp_path):
    data = embed_manifest(tiny_model_bytes(), make_manifest())
    model = onnx.load_from_string(data)
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.full((3, 1), 9.0, dtype=np.float32), name="w"))
    path = tmp_path / "tampered.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ManifestError, match="does not match its manifest"):
        verify_model_file(path)


def test_model_without_manifest_is_refused(tmp_path):
    path = tmp_path / "bare.onnx"
    path.write_bytes(tiny_model_bytes())
    with pytest.raises(ManifestError, match="no 'pcg_manifest' metadata"):
        verify_model_file(path)


def test_garbage_file_is_refused_with_its_name(tmp_path):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"\x00\xffnot a model" * 10)
    with pytest.raises(ManifestError, match="garbage.onnx"):
        verify_model_file(path)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"site_order": ("MV", "TV", "PV", "AV", "Phc")}, "site order"),
        ({"metadata_features": ("age", "sex")}, "metadata encoding"),
        ({"default_operating_point": "nope"}, "default operating point"),
        ({"operating_points": {"cost_optimal": OperatingPoint(1.5)}}, "outside"),
        ({"graph_sha256": ""}, "graph_sha256"),
    ],
)
def test_manifest_the_runtime_cannot_honour_is_refused(changes, message):
    text = make_manifest(**changes).to_json()
    with pytest.raises(ManifestError, match=message):
        ModelManifest.from_json(text)


def test_wrong_schema_version_and_malformed_json_are_refused():
    data = json.loads(make_manifest().to_json())
    data["schema_version"] = 99
    with pytest.raises(ManifestError, match="schema version 99"):
        ModelManifest.from_json(json.dumps(data))
    with pytest.raises(ManifestError, match="not valid JSON"):
        ModelManifest.from_json("{")
    data["schema_version"] = 1
    del data["task"]
    data["surprise"] = 1
    with pytest.raises(ManifestError, match=r"missing \['task'\], unknown \['surprise'\]"):
        ModelManifest.from_json(json.dumps(data))
