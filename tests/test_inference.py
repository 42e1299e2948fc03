"""runtime.inference: the field model wrapper refuses files it cannot trust, feeds the graph exactly as
the manifest says, and picks (and reports) its execution provider honestly.

The model here is a tiny hand-built ONNX graph with the real inputs and outputs, so these tests need
neither torch nor the bundled model: outcome_logit = mean of x + metadata @ w, site_weights =
site_mask / its sum.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install -e '.[dev]'); it builds the test model")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from runtime import inference  # noqa: E402
from runtime.dsp import FrontEndConfig, assemble_patient  # noqa: E402
from runtime.inference import (  # noqa: E402
    CPU, CUDA, TENSORRT, Model, ModelError, engine_cache_path, patient_crops, provider_plan,
)
from runtime.manifest import MANIFEST_KEY, ModelManifest, OperatingPoint, embed_manifest  # noqa: E402
from runtime.metadata import METADATA_DIM, METADATA_FEATURES, MetadataStats, encode_metadata  # noqa: E402
from runtime.records import Demographics  # noqa: E402
from runtime.sites import SITES  # noqa: E402
from trainer.crops import patient_tensor_crops  # noqa: E402  (numpy only: the trainer's rule, for comparison)

CONFIG = FrontEndConfig()
N_CROPS = 3
STATS = MetadataStats(height_mean=120.0, height_std=30.0, weight_mean=30.0, weight_std=15.0)
WEIGHTS = np.linspace(-0.5, 0.5, METADATA_DIM).astype(np.float32)


def tiny_graph() -> bytes:
    shape_x = ["batch", N_CROPS, len(SITES), CONFIG.n_freq, CONFIG.clip_frames]
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["x_mean"], axes=[1, 2, 3, 4], keepdims=0),
        helper.make_node("MatMul", ["metadata", "w"], ["meta_term"]),
        helper.make_node("Add", ["x_mean", "meta_term"], ["outcome_logit"]),
        helper.make_node("Sigmoid", ["outcome_logit"], ["outcome_probability"]),
        helper.make_node("ReduceSum", ["site_mask", "sum_axes"], ["mask_sum"], keepdims=1),
        helper.make_node("Div", ["site_mask", "mask_sum"], ["site_weights"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape_x),
         helper.make_tensor_value_info("site_mask", TensorProto.FLOAT, ["batch", len(SITES)]),
         helper.make_tensor_value_info("metadata", TensorProto.FLOAT, ["batch", METADATA_DIM])],
        [helper.make_tensor_value_info("outcome_probability", TensorProto.FLOAT, ["batch"]),
         helper.make_tensor_value_info("outcome_logit", TensorProto.FLOAT, ["batch"]),
         helper.make_tensor_value_info("site_weights", TensorProto.FLOAT, ["batch", len(SITES)])],
        [numpy_helper.from_array(WEIGHTS, "w"), numpy_helper.from_array(np.array([1], dtype=np.int64), "sum_axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def tiny_manifest(**changes) -> ModelManifest:
    manifest = ModelManifest(
        model_name="tiny", task="outcome", architecture="mlp",
        frontend=CONFIG.to_dict(), frontend_hash=CONFIG.config_hash(),
        inputs={}, outputs={}, class_names={"outcome": ["Abnormal", "Normal"]},
        operating_points={"cost_optimal": OperatingPoint(0.5)}, default_operating_point="cost_optimal",
        inference={"n_crops": N_CROPS, "clip_frames": CONFIG.clip_frames}, training_data={}, metrics={},
        created_utc="2026-01-01T00:00:00Z", code_version="test",
        metadata_features=METADATA_FEATURES, metadata_stats=STATS.to_dict(), graph_sha256="0" * 64,
    )
    return replace(manifest, **changes)


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "tiny.onnx"
    path.write_bytes(embed_manifest(tiny_graph(), tiny_manifest()))
    return path


def random_patient(rng, lengths: dict[str, int]):
    """A PatientTensor with the given frame count per site (absent sites left out)."""
    return assemble_patient(
        [(site, 0, rng.normal(size=(CONFIG.n_freq, t)).astype(np.float32)) for site, t in lengths.items()], CONFIG)


def expected_logit(tensor, demographics: Demographics | None) -> float:
    crops, _ = patient_crops(tensor, CONFIG.clip_frames, N_CROPS)
    return float(crops.astype(np.float64).mean() + encode_metadata(demographics or Demographics(), STATS) @ WEIGHTS)


@pytest.mark.parametrize("lengths", [
    {"Phc": 30},  # far shorter than a crop: tiled
    {"AV": 246},  # exactly one crop
    {"MV": 247},  # one frame more: windows start at 0 and 1
    {"AV": 1000, "TV": 120, "Phc": 5000},  # several sites of different lengths: padding in the tensor
    {"PV": 1},  # a single frame
], ids=lambda d: "-".join(f"{k}{v}" for k, v in d.items()))
@pytest.mark.parametrize("n_crops", [1, 5])
def test_runtime_crops_equal_the_trainers_crops(lengths, n_crops):
    tensor = random_patient(np.random.default_rng(len(lengths) + n_crops), lengths)
    x, mask = patient_crops(tensor, CONFIG.clip_frames, n_crops)
    x_ref, mask_ref = patient_tensor_crops(tensor.x, tensor.site_mask, tensor.time_mask, CONFIG.clip_frames, n_crops)
    assert x.dtype == np.float32 and x.shape == (n_crops, len(SITES), CONFIG.n_freq, CONFIG.clip_frames)
    np.testing.assert_array_equal(x, x_ref)
    np.testing.assert_array_equal(mask, mask_ref)


def test_crops_never_contain_padding():
    tensor = random_patient(np.random.default_rng(0), {"AV": 3000, "PV": 100})
    x, _ = patient_crops(tensor, CONFIG.clip_frames, 4)
    assert not np.any(np.all(x[:, 1] == 0.0, axis=1))  # PV (100 real frames, padded to 3000) is tiled, never zero


def test_prediction_follows_the_graph_and_the_manifest(model_path):
    model = Model.load(model_path)
    assert (model.provider, model.path, model.uses_metadata, model.sites_trained) == (CPU, model_path, True, SITES)
    rng = np.random.default_rng(1)
    tensor = random_patient(rng, {"AV": 400, "MV": 90})
    demo = Demographics(age_group="Child", sex="Female", height_cm=130.0, weight_kg=28.0)
    prediction = model.predict(tensor, demo)
    logit = expected_logit(tensor, demo)
    assert prediction.logit == pytest.approx(logit, abs=1e-5)
    assert prediction.probability == pytest.approx(1.0 / (1.0 + np.exp(-logit)), abs=1e-6)
    assert prediction.site_contributions == {"AV": pytest.approx(0.5), "MV": pytest.approx(0.5)}
    assert prediction.murmur is None
    assert model.predict(tensor).logit == pytest.approx(expected_logit(tensor, None), abs=1e-5)  # unknown demographics


def test_batch_predictions_equal_single_ones_in_order_across_chunks(model_path):
    model = Model.load(model_path)
    rng = np.random.default_rng(2)
    tensors = [random_patient(rng, {SITES[i % 5]: 50 + 37 * i}) for i in range(inference.MAX_BATCH + 3)]
    demos = [Demographics(height_cm=100.0 + i) if i % 2 else None for i in range(len(tensors))]
    batch = model.predict_batch(tensors, demos)
    assert len(batch) == len(tensors)
    for tensor, demo, got in zip(tensors, demos, batch):
        assert got.logit == pytest.approx(model.predict(tensor, demo).logit, abs=1e-5)
    with pytest.raises(ValueError, match="2 patient tensors but 1 demographics"):
        model.predict_batch(tensors[:2], demos[:1])


def test_a_tensor_from_another_front_end_is_rejected(model_path):
    model = Model.load(model_path)
    other = FrontEndConfig(band_hz=(25.0, 200.0))
    tensor = assemble_patient([("AV", 0, np.zeros((other.n_freq, 300), dtype=np.float32))], other)
    with pytest.raises(ValueError, match=r"this model takes \[5, 48, frames\]"):
        model.predict(tensor)


def test_session_runs_one_thread_sequentially_without_spinning(model_path):
    options = Model.load(model_path).session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"


def test_tampered_weights_are_refused_naming_the_hash(tmp_path, model_path):
    model = onnx.load_from_string(model_path.read_bytes())
    for init in model.graph.initializer:
        if init.name == "w":
            init.CopyFrom(numpy_helper.from_array(WEIGHTS * 1.01, "w"))
    tampered = tmp_path / "tampered.onnx"
    tampered.write_bytes(model.SerializeToString())  # the old manifest (and its hash) stays in metadata_props
    with pytest.raises(ModelError, match=r"graph SHA-256 .* manifest says .*modified after export"):
        Model.load(tampered)


def test_a_file_without_manifest_is_refused(tmp_path):
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(tiny_graph())
    with pytest.raises(ModelError, match=f"no '{MANIFEST_KEY}' metadata; only models made by pcg-export"):
        Model.load(bare)


def test_an_unsupported_manifest_schema_is_refused(tmp_path):
    path = tmp_path / "future.onnx"
    path.write_bytes(embed_manifest(tiny_graph(), tiny_manifest(schema_version=99)))
    with pytest.raises(ModelError, match="schema version 99 is not supported"):
        Model.load(path)


def test_a_front_end_hash_other_than_the_runtimes_is_refused(tmp_path):
    path = tmp_path / "other-frontend.onnx"
    path.write_bytes(embed_manifest(tiny_graph(), tiny_manifest(frontend_hash="ab" * 32)))
    with pytest.raises(ModelError, match="front-end config hash mismatch: the model was trained on features with hash abababab"):
        Model.load(path)


def test_crops_that_do_not_fit_the_graph_are_refused(tmp_path):
    path = tmp_path / "crops.onnx"
    path.write_bytes(embed_manifest(tiny_graph(), tiny_manifest(inference={"n_crops": N_CROPS + 1, "clip_frames": CONFIG.clip_frames})))
    with pytest.raises(ModelError, match="inputs .* are not x"):
        Model.load(path)


def test_missing_or_unreadable_files_are_refused(tmp_path):
    with pytest.raises(ModelError, match="no such model file"):
        Model.load(tmp_path / "absent.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="ONNX Runtime cannot load the model"):
        Model.load(junk)


def test_provider_plan_prefers_tensorrt_then_cuda_then_cpu(tmp_path):
    cache = tmp_path / "engines"
    plan = provider_plan("auto", [TENSORRT, CUDA, CPU], cache)
    assert [p if isinstance(p, str) else p[0] for p in plan] == [TENSORRT, CUDA, CPU]
    assert plan[0][1]["trt_engine_cache_enable"] == "True" and plan[0][1]["trt_engine_cache_path"] == str(cache)
    assert provider_plan("auto", [CUDA, CPU], None) == [CUDA, CPU]
    assert provider_plan("auto", ["AzureExecutionProvider", CPU], None) == [CPU]
    assert provider_plan("cpu", [TENSORRT, CUDA, CPU], cache) == [CPU]
    with pytest.raises(ModelError, match="backend 'tensorrt': this onnxruntime has no TensorrtExecutionProvider"):
        provider_plan("tensorrt", [CUDA, CPU], None)
    with pytest.raises(ModelError, match="backend 'gpu' is not one of auto, cpu, tensorrt"):
        provider_plan("gpu", [CPU], None)


def test_engine_cache_is_keyed_by_gpu_tensorrt_version_and_model_hash(tmp_path):
    sha = "0123456789abcdef" + "f" * 48
    path = engine_cache_path(tmp_path, "NVIDIA Jetson Orin Nano (8GB)", "10.3.0", sha)
    assert path == tmp_path / "NVIDIA-Jetson-Orin-Nano-8GB-10.3.0-0123456789abcdef"
    others = {engine_cache_path(tmp_path, "NVIDIA H100 80GB HBM3", "10.3.0", sha),
              engine_cache_path(tmp_path, "NVIDIA Jetson Orin Nano (8GB)", "8.6.2", sha),
              engine_cache_path(tmp_path, "NVIDIA Jetson Orin Nano (8GB)", "10.3.0", "f" * 64)}
    assert path not in others and len(others) == 3


def test_without_a_gpu_auto_falls_back_to_the_cpu_and_tensorrt_is_refused(model_path, tmp_path):
    available = ort.get_available_providers()
    if TENSORRT in available or CUDA in available:
        pytest.skip(f"this onnxruntime offers GPU providers ({available}); the GPU test covers it")
    cache = tmp_path / "engines"
    assert Model.load(model_path, backend="auto", cache_dir=cache).provider == CPU
    with pytest.raises(ModelError, match="this onnxruntime has no TensorrtExecutionProvider"):
        Model.load(model_path, backend="tensorrt", cache_dir=cache)
    assert not cache.exists()  # no engine cache folder made where no engine can be built


def test_tensorrt_builds_and_caches_an_engine_that_agrees_with_the_cpu(model_path, tmp_path):
    available = ort.get_available_providers()
    if TENSORRT not in available:
        reason = f"no GPU with TensorRT here: onnxruntime offers {available}, not {TENSORRT}"
        print(reason)
        pytest.skip(reason)
    cache = tmp_path / "engines"
    model = Model.load(model_path, backend="tensorrt", cache_dir=cache)
    assert model.provider == TENSORRT
    tensor = random_patient(np.random.default_rng(3), {"AV": 500})
    assert model.predict(tensor).probability == pytest.approx(Model.load(model_path, backend="cpu").predict(tensor).probability, abs=1e-3)
    (folder,) = cache.iterdir()
    assert folder.name.endswith(model.manifest.graph_sha256[:16])
    assert any(folder.iterdir())  # the engine (and timing cache) were written
