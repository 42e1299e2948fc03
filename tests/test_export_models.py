"""pcg-export on tiny runs trained in seconds: every model type exports to one checked ONNX file whose
manifest is filled from the run and whose outputs match torch; the int8 variants keep the dynamic
layer in float, carry what TensorRT needs, and stay close to float."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[export]'); export needs it")
onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install -e '.[export]')")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")

from export.cli import main as pcg_export  # noqa: E402
from export.data import load_real_data  # noqa: E402
from export.onnx_model import export_graph  # noqa: E402
from export.parity import int8_report  # noqa: E402
from export.quantize import CPU, CPU_LSTM, TENSORRT, float_only_prefixes, quantize  # noqa: E402
from export.source import load_source  # noqa: E402
from trainer.inference import Restandardized  # noqa: E402
from export.tensorrt import check_tensorrt_compatible  # noqa: E402
from runtime.dsp.config import FrontEndConfig  # noqa: E402
from runtime.manifest import ManifestError, graph_sha256, verify_model_file  # noqa: E402
from runtime.metadata import METADATA_FEATURES, MetadataStats  # noqa: E402
from tests.trainer_fixtures import write_circor_folder  # noqa: E402
from trainer.crossval import main as pcg_train  # noqa: E402
from trainer.inference import ensemble_thresholds  # noqa: E402

KINDS = [("outcome", "primary"), ("outcome", "mlp"), ("outcome", "hyper"), ("outcome", "hyperfusion"), ("murmur", "hyper")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One 2-fold, 2-epoch pcg-train run per model type on 24 synthetic CirCor patients."""
    root = tmp_path_factory.mktemp("export")
    data = write_circor_folder(root / "circor", n_patients=24, seed=3)
    made = {}
    for task, model in KINDS:
        out = root / f"{task}-{model}"
        assert pcg_train(["--data", str(data), "--task", task, "--model", model, "--folds", "2", "--epochs", "2", "--out", str(out),
                          "--cache", str(root / "cache"), "--eval-crops", "2", "--quiet"]) == 0
        made[(task, model)] = out
    return root, made


@pytest.fixture(scope="module")
def exported(runs):
    """pcg-export (float) of each run: {kind: (exit status, out path)}."""
    root, made = runs
    result = {}
    for kind, run in made.items():
        out = root / "exported" / f"{kind[0]}-{kind[1]}.onnx"
        result[kind] = (pcg_export([str(run), "--out", str(out), "--cache", str(root / "cache"), "--allow-weak-model"]), out)
    return result


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: f"{k[0]}-{k[1]}")
def test_each_model_type_exports_one_checked_file_matching_torch(exported, runs, kind):
    status, out = exported[kind]
    assert status == 0
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    manifest = verify_model_file(out)
    assert (manifest.task, manifest.architecture) == kind
    assert {o.name for o in model.graph.output} == set(manifest.outputs)
    assert ("murmur_probabilities" in manifest.outputs) == (kind[0] == "murmur")
    parity = json.loads(out.with_name(out.stem + ".parity.json").read_text())
    assert parity["passed"] and parity["max_abs_difference"]["outcome_probability"] <= 1e-4 and parity["patients"] >= 5

    source = load_source(runs[1][kind])
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (1, 3):  # the batch axis is dynamic
        x, mask, meta = source.input_example(batch)
        got = session.run(None, {"x": x.numpy(), "site_mask": mask.numpy(), "metadata": meta.numpy()})
        with torch.no_grad():
            expected = source.graph(x, mask, meta)
        assert got[0].shape == (batch,)
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a, b.numpy(), atol=1e-4)


def test_manifest_is_filled_from_the_run(exported, runs):
    _, made = runs
    hyper, primary = verify_model_file(exported[("outcome", "hyper")][1]), verify_model_file(exported[("outcome", "primary")][1])
    assert hyper.frontend_hash == FrontEndConfig().config_hash() and hyper.frontend == FrontEndConfig().to_dict()
    assert hyper.metadata_features == METADATA_FEATURES and primary.metadata_features == () and primary.metadata_stats == {}
    assert set(hyper.metadata_stats) == {"height_mean", "height_std", "weight_mean", "weight_std"}
    assert hyper.sites_trained == ("AV", "MV")
    assert hyper.class_names == {"outcome": ["Abnormal", "Normal"]}
    assert verify_model_file(exported[("murmur", "hyper")][1]).class_names["murmur"] == ["Present", "Unknown", "Absent"]
    source = load_source(made[("outcome", "hyper")])
    oof = [np.load(d / "outcome.npz") for d in source.fold_dirs]
    p, y = np.concatenate([o["test_probabilities"] for o in oof]), np.concatenate([o["test_labels"] for o in oof])
    for name, threshold in ensemble_thresholds(source.checkpoints).items():
        point = hyper.operating_points[name]
        assert point.threshold == pytest.approx(threshold)
        # the figures are the ensemble threshold's on the pooled out-of-fold predictions
        assert point.sensitivity == pytest.approx(float((p[y == 1] >= threshold).mean()))
        assert point.specificity == pytest.approx(float((p[y == 0] < threshold).mean()))
    assert hyper.inference["n_crops"] == 2 and hyper.inference["ensemble"]["folds"] == ["fold1", "fold2"]
    assert len(hyper.inference["calibration"]["a_b"]) == 2
    assert hyper.metrics["measured_as"].startswith("out-of-fold (2-fold")
    assert hyper.metrics["pooled"]["auroc"] == pytest.approx(source.run["summary"]["pooled"]["auroc"])
    assert hyper.training_data["patients"] == 24
    assert any(c.startswith("pcg-export ") for c in hyper.commands) and source.run["settings"]["command"] in hyper.commands
    assert hyper.code_version and hyper.created_utc.endswith("Z")


def test_graph_hash_is_checked_and_a_changed_graph_is_refused(exported, tmp_path):
    out = exported[("outcome", "primary")][1]
    data = out.read_bytes()
    assert verify_model_file(out).graph_sha256 == graph_sha256(data)
    model = onnx.load_from_string(data)
    model.graph.node[-1].name += "_changed"
    tampered = tmp_path / "tampered.onnx"
    tampered.write_bytes(model.SerializeToString())
    with pytest.raises(ManifestError, match="does not match its manifest"):
        verify_model_file(tampered)


def test_a_single_fold_checkpoint_exports_with_its_own_test_patients(runs, tmp_path):
    root, made = runs
    out = tmp_path / "fold2.onnx"
    assert pcg_export([str(made[("outcome", "mlp")] / "fold2" / "model.pt"), "--out", str(out), "--cache", str(root / "cache"),
                       "--allow-weak-model"]) == 0
    manifest = verify_model_file(out)
    assert manifest.inference["ensemble"]["folds"] == ["fold2"] and manifest.model_name.endswith("/fold2")
    assert "fold2" in json.loads(out.with_name("fold2.parity.json").read_text())["data"]["note"]


def test_bad_input_exits_2_with_a_message(runs, tmp_path, capsys):
    root, made = runs
    assert pcg_export([str(tmp_path / "nothing"), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert pcg_export([str(made[("outcome", "primary")]), "--out", str(tmp_path / "m.onnx"), "--opset", "19"]) == 2
    assert "--opset 19 is not supported" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_folds_with_different_metadata_statistics_each_see_their_own_encoding():
    seen = []

    class Capture(torch.nn.Module):
        config = None

        def forward(self, x, site_mask, metadata):
            seen.append(metadata.clone())
            return metadata

    given, own = MetadataStats(120.0, 20.0, 30.0, 10.0), MetadataStats(110.0, 25.0, 28.0, 8.0)
    from runtime.metadata import encode_batch
    from runtime.records import Demographics

    people = [Demographics(age_group="Child", sex="Male", height_cm=130.0, weight_kg=35.0, pregnant=False),
              Demographics(age_group=None, sex=None, height_cm=None, weight_kg=None, pregnant=None)]
    Restandardized(Capture(), given, own)(None, None, torch.from_numpy(encode_batch(people, given)))
    np.testing.assert_allclose(seen[0].numpy(), encode_batch(people, own), atol=1e-5)


@pytest.fixture(scope="module")
def quantized(runs):
    """The hyperfusion run's float graph and its three int8 variants, calibrated on the run's patients."""
    root, made = runs
    source = load_source(made[("outcome", "hyperfusion")])
    data = load_real_data(source, None, root / "cache", n_calibration=12, min_calibration=8)
    float_graph = export_graph(source)
    return source, data, float_graph, {v: quantize(float_graph, source, data.calibration, v, data.note)[0] for v in (CPU, CPU_LSTM, TENSORRT)}


def _quantized_node_names(model):
    """Names of nodes that consume a DequantizeLinear output (i.e. run on int8-quantized tensors)."""
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [n.name for n in model.graph.node if n.op_type != "QuantizeLinear" and any(i in dequantized for i in n.input)]


def test_int8_keeps_the_hypernetwork_and_per_sample_matmul_in_float(quantized):
    source, _, _, models = quantized
    prefixes = float_only_prefixes(source)
    assert any("/final/" in p for p in prefixes) and any("/site_projection/" in p for p in prefixes)
    for variant, model_bytes in models.items():
        model = onnx.load_from_string(model_bytes)
        names = [n.name for n in model.graph.node]
        assert all(any(name.startswith(p) for name in names) for p in prefixes), "a float-only scope matches no node"
        quantized_nodes = _quantized_node_names(model)
        assert any("/encoder/" in n for n in quantized_nodes), f"{variant.name}: nothing was quantized"
        assert not [n for n in quantized_nodes if any(n.startswith(p) for p in prefixes)]


def test_the_tensorrt_model_has_only_standard_ops_and_zero_points_0(quantized):
    _, _, _, models = quantized
    trt_model = onnx.load_from_string(models[TENSORRT])
    assert check_tensorrt_compatible(trt_model) == []
    assert {n.domain for n in trt_model.graph.node} <= {"", "ai.onnx"}
    zero_points = [i for n in trt_model.graph.node if n.op_type == "QuantizeLinear" for i in n.input[2:3]]
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in trt_model.graph.initializer}
    assert zero_points and all(inits[z].dtype == np.int8 and not inits[z].any() for z in zero_points)
    cpu_problems = check_tensorrt_compatible(onnx.load_from_string(models[CPU]))
    assert any("UINT8" in p for p in cpu_problems)
    lstm_problems = check_tensorrt_compatible(onnx.load_from_string(models[CPU_LSTM]))
    assert any("com.microsoft.DynamicQuantizeLSTM" in p for p in lstm_problems)


def test_int8_parity_report_compares_with_float_on_held_out_patients(quantized):
    source, data, float_graph, models = quantized
    report = int8_report(float_graph, models[TENSORRT], data, ensemble_thresholds(source.checkpoints), repeats=3)
    assert report["data"]["patients"] == len(data.evaluation.ids) > 0
    assert not set(data.evaluation.ids) & set(data.calibration.ids)
    assert report["max_abs_probability_difference"] < 0.1
    assert abs(report["auroc_difference"]) < 0.2
    assert set(report["operating_points"]) == {"cost_optimal", "high_sensitivity"}
    assert all(0.0 <= p["triage_agreement"] <= 1.0 for p in report["operating_points"].values())
    assert 0.1 < report["size_ratio"] < 1.0 and report["latency_ratio"] > 0


@pytest.mark.slow
def test_cli_int8_writes_both_models_with_manifests_and_reports(tmp_path):
    data = write_circor_folder(tmp_path / "circor", n_patients=130, seed=7, sites=("MV",))
    run, cache = tmp_path / "run", tmp_path / "cache"
    assert pcg_train(["--data", str(data), "--model", "hyper", "--folds", "5", "--epochs", "1", "--out", str(run),
                      "--cache", str(cache), "--eval-crops", "2", "--quiet"]) == 0
    out = tmp_path / "m.onnx"
    assert pcg_export([str(run), "--out", str(out), "--cache", str(cache), "--int8", "--allow-weak-model"]) in (0, 1)  # 1: a parity target missed
    summary = json.loads((tmp_path / "m.export.json").read_text())
    assert set(summary["written"]) == {"float", "int8_cpu", "int8_tensorrt"}
    assert summary["cpu_model"] in ("m.onnx", "m.int8-cpu.onnx")
    for name in ("m.int8-cpu", "m.int8-tensorrt"):
        report = json.loads((tmp_path / f"{name}.parity.json").read_text())
        assert report["data"]["patients"] == 26 and report["size_ratio"] < 1.0
        if not report["passed"]:  # a model that failed its parity check is not left on disk to be loaded
            assert not (tmp_path / f"{name}.onnx").exists() and report["use"].startswith("not written")
            continue
        manifest = verify_model_file(tmp_path / f"{name}.onnx")
        assert manifest.inference["variant"]["precision"] == "int8"
    if (tmp_path / "m.int8-tensorrt.onnx").exists():
        assert check_tensorrt_compatible(onnx.load(str(tmp_path / "m.int8-tensorrt.onnx"))) == []
    assert "alternative_not_kept" in json.loads((tmp_path / "m.int8-cpu.parity.json").read_text())


def test_the_runtime_runs_an_int8_model_s_maxpool_in_float(quantized, tmp_path):
    """ONNX Runtime's QDQ propagation would turn MaxPool into its slow int8 MaxPool; the runtime's
    sessions switch it off (runtime.inference.DISABLED_OPTIMIZERS), so the optimized graph keeps
    every MaxPool on float tensors while the convolutions run in int8."""
    import onnxruntime as ort

    from runtime.inference import DISABLED_OPTIMIZERS, session_options

    _, _, _, models = quantized

    def optimized(disabled):
        options = session_options()
        options.optimized_model_filepath = str(tmp_path / f"optimized-{len(disabled)}.onnx")
        ort.InferenceSession(models[CPU], options, providers=["CPUExecutionProvider"], disabled_optimizers=list(disabled))
        return onnx.load(options.optimized_model_filepath)

    def maxpool_inputs_made_by(model):  # an int8 MaxPool reads a QuantizeLinear's or QLinearConv's output
        producer = {o: n.op_type for n in model.graph.node for o in n.output}
        return {producer.get(n.input[0]) for n in model.graph.node if n.op_type == "MaxPool"}

    kept = optimized(DISABLED_OPTIMIZERS)
    assert maxpool_inputs_made_by(kept) and not maxpool_inputs_made_by(kept) & {"QuantizeLinear", "QLinearConv"}
    assert any(n.op_type == "QLinearConv" for n in kept.graph.node)  # the convolutions are still int8
    assert maxpool_inputs_made_by(optimized(())) & {"QuantizeLinear", "QLinearConv"}  # what it prevents
