"""The exported inference graph reproduces what cross-validation evaluated, in torch and ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[train]'); inference tests need it")

from runtime.dsp.config import FrontEndConfig  # noqa: E402
from runtime.metadata import MetadataStats, encode_batch  # noqa: E402
from trainer_fixtures import write_circor_folder  # noqa: E402
from trainer.crops import evaluation_crops  # noqa: E402
from trainer.crossval import load_labelled  # noqa: E402
from trainer.crossval import main as pcg_train  # noqa: E402
from trainer.inference import ensemble_thresholds, export_onnx, load_checkpoint, load_ensemble  # noqa: E402
from trainer.summary import FoldOutcome  # noqa: E402

CROPS = 2


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("inference")
    data = write_circor_folder(root / "circor", n_patients=16, seed=3)
    assert pcg_train(["--data", str(data), "--model", "hyperfusion", "--folds", "2", "--epochs", "2", "--out", str(root / "run"),
                      "--cache", str(root / "cache"), "--eval-crops", str(CROPS), "--quiet"]) == 0
    examples, _, _ = load_labelled(data, "outcome", root / "cache", FrontEndConfig())
    return root / "run", {e.patient_id: e for e in examples}


def patient_inputs(examples, ids, stats: MetadataStats):
    frontend = FrontEndConfig()
    crops = [evaluation_crops(examples[i].longest(), frontend.clip_frames, CROPS, frontend.n_freq) for i in ids]
    x = torch.from_numpy(np.stack([c[0] for c in crops]))
    mask = torch.from_numpy(np.stack([c[1] for c in crops]))
    metadata = torch.from_numpy(encode_batch([examples[i].demographics for i in ids], stats))
    return x, mask, metadata


def test_one_fold_graph_reproduces_the_cross_validated_test_probabilities(trained_run):
    run, examples = trained_run
    from trainer.inference import EnsembleGraph

    model, checkpoint = load_checkpoint(run / "fold1" / "model.pt")
    graph = EnsembleGraph([model], [(checkpoint["platt"]["a"], checkpoint["platt"]["b"])])
    outcome = FoldOutcome.load(run / "fold1")
    inputs = patient_inputs(examples, outcome.test_ids, MetadataStats.from_dict(checkpoint["metadata_stats"]))
    with torch.no_grad():
        probability = graph(*inputs)[0].numpy()
    np.testing.assert_allclose(probability, outcome.test_probabilities, atol=1e-5)


def test_the_fold_ensemble_exports_to_onnx_and_matches_torch(trained_run):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime runs the exported graph")
    run, examples = trained_run
    graph, checkpoints = load_ensemble(run)
    assert len(graph.models) == 2
    ids = sorted(examples)[:3]
    inputs = patient_inputs(examples, ids, MetadataStats.from_dict(checkpoints[0]["metadata_stats"]))
    session = ort.InferenceSession(export_onnx(graph, inputs), providers=["CPUExecutionProvider"])
    other = patient_inputs(examples, sorted(examples)[3:8], MetadataStats.from_dict(checkpoints[0]["metadata_stats"]))
    with torch.no_grad():
        expected = graph(*other)
    got = session.run(None, {"x": other[0].numpy(), "site_mask": other[1].numpy(), "metadata": other[2].numpy()})
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b.numpy(), atol=1e-4)
    thresholds = ensemble_thresholds(checkpoints)
    for name, value in thresholds.items():
        folds = [c["thresholds"][name] for c in checkpoints]
        assert min(folds) - 1e-9 <= value <= max(folds) + 1e-9
    # a sensitivity floor takes the lowest fold threshold: no fold model loses its validation sensitivity
    assert thresholds["high_sensitivity"] == pytest.approx(min(c["thresholds"]["high_sensitivity"] for c in checkpoints))
