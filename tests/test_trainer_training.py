"""Training on tiny synthetic data: it learns, it is deterministic, it resumes, the CLI writes its
report, and bad input ends in a clear message rather than inside torch."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[train]'); training tests need it")

from trainer_fixtures import (  # noqa: E402
    fast_train_config,
    tiny_dataset,  # noqa: F401  (fixture)
    tiny_examples,  # noqa: F401  (fixture)
    tiny_model_config,
    write_circor_folder,
    write_physionet_folder,
)
from trainer import metrics  # noqa: E402
from trainer.crossval import main as pcg_train  # noqa: E402
from trainer.examples import FeatureCache, load_examples  # noqa: E402
from trainer.folds import k_fold  # noqa: E402
from trainer.train import fit_fold, sampling_weights  # noqa: E402


def first_fold(examples, task="outcome"):
    labels = np.array([e.label(task) for e in examples])
    groups = np.array([e.group for e in examples])
    return k_fold(labels, groups, 3, seed=0)[0]


def test_a_tiny_model_learns_the_synthetic_murmur_and_stores_its_operating_points(tiny_examples, tmp_path):
    outcome = fit_fold(tiny_examples, first_fold(tiny_examples), tiny_model_config(path="hyper"), fast_train_config(), tmp_path)
    assert metrics.auroc(outcome.test_labels, outcome.test_probabilities) >= 0.8
    checkpoint = torch.load(tmp_path / "model.pt", weights_only=False)
    assert set(checkpoint["thresholds"]) == {"cost_optimal", "high_sensitivity"}
    assert checkpoint["metadata_stats"]["height_mean"] > 50  # fitted on the training fold's heights
    high = metrics.threshold_metrics(outcome.validation_labels, outcome.validation_probabilities, outcome.thresholds["high_sensitivity"])
    assert high["sensitivity"] >= 0.95


def test_training_is_reproducible_and_resumes_exactly_where_it_stopped(tiny_examples, tmp_path):
    fold = first_fold(tiny_examples)
    straight = fit_fold(tiny_examples, fold, tiny_model_config(), fast_train_config(epochs=3, deterministic=True), tmp_path / "straight")
    again = fit_fold(tiny_examples, fold, tiny_model_config(), fast_train_config(epochs=3, deterministic=True), tmp_path / "again")
    assert np.array_equal(straight.test_logits, again.test_logits)
    stopped = fit_fold(tiny_examples, fold, tiny_model_config(), fast_train_config(epochs=2, deterministic=True), tmp_path / "resumed")
    resumed = fit_fold(tiny_examples, fold, tiny_model_config(), fast_train_config(epochs=3, deterministic=True), tmp_path / "resumed", resume=True)
    assert resumed.history[:2] == stopped.history  # epochs 1-2 come from the checkpoint, not retrained
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    np.testing.assert_allclose(resumed.test_logits, straight.test_logits, atol=1e-6)


def test_the_murmur_head_trains_and_reports_three_class_probabilities(tiny_dataset, tmp_path):
    from runtime.dsp.config import FrontEndConfig

    examples, _ = load_examples(tiny_dataset, FeatureCache(tmp_path / "cache", FrontEndConfig()), "murmur")
    fold = first_fold(examples, "murmur")
    outcome = fit_fold(examples, fold, tiny_model_config("murmur", "mlp"), fast_train_config("murmur", epochs=6), tmp_path / "run")
    assert outcome.test_murmur.shape == (len(fold.test), 3)
    np.testing.assert_allclose(outcome.test_murmur.sum(axis=1), 1.0, atol=1e-5)
    scores = metrics.murmur_metrics(outcome.test_murmur_labels, outcome.test_murmur)
    assert scores["auroc"] > 0.6  # Present vs the rest is learnable here
    assert np.array_equal(outcome.test_labels, (outcome.test_murmur_labels <= 1).astype(int))


def test_sampling_weights_balance_databases_and_classes():
    labels = np.array([1] * 10 + [0] * 90 + [1] * 5 + [0] * 5)
    groups = np.array(["a"] * 100 + ["b"] * 10)
    w = sampling_weights(labels, groups, "group_class")
    for g in ("a", "b"):
        for y in (0, 1):
            assert w[(groups == g) & (labels == y)].sum() == pytest.approx(0.25)
    assert w[labels == 1].sum() == pytest.approx(0.5)
    assert sampling_weights(labels, groups, "none")[0] == pytest.approx(1 / 110)


def test_pcg_train_writes_metrics_report_plots_and_checkpoints(tmp_path, capsys):
    data = write_circor_folder(tmp_path / "circor", n_patients=16)
    out = tmp_path / "run"
    args = ["--data", str(data), "--model", "hyper", "--folds", "2", "--epochs", "2", "--out", str(out),
            "--cache", str(tmp_path / "cache"), "--eval-crops", "1", "--quiet"]
    assert pcg_train(args) == 0
    for name in ("metrics.json", "report.md", "roc.png", "cost.png", "calibration.png", "confusion.png", "fold1/model.pt", "fold2/outcome.npz"):
        assert (out / name).is_file(), name
    body = json.loads((out / "metrics.json").read_text())
    assert set(body["summary"]["folds"]) == {"fold1", "fold2"}
    assert body["summary"]["pooled"]["n"] == 16
    assert 0 < body["settings"]["parameters"] <= 1_000_000
    assert "auroc" in body["summary"]["mean_sd"] and "CC2014" in body["summary"]["by_group"]
    # --resume finds both folds finished and rebuilds the same report without training
    (out / "fold1" / "model.pt").unlink()
    assert pcg_train(args + ["--resume"]) == 0
    assert not (out / "fold1" / "model.pt").exists()
    assert json.loads((out / "metrics.json").read_text())["summary"]["pooled"]["auroc"] == body["summary"]["pooled"]["auroc"]


def test_pcg_train_reads_physionet_2016_and_runs_leave_one_database_out(tmp_path):
    data = write_physionet_folder(tmp_path / "pn", {"training-a": 8, "training-b": 8})
    out = tmp_path / "lodo"
    assert pcg_train(["--data", str(data), "--model", "primary", "--folds", "lodo", "--epochs", "1", "--out", str(out),
                      "--cache", str(tmp_path / "cache"), "--eval-crops", "1", "--quiet"]) == 0
    body = json.loads((out / "metrics.json").read_text())
    assert set(body["summary"]["folds"]) == {"training-a", "training-b"}
    assert "constant input" in body["settings"]["metadata"]  # no demographics in PhysioNet 2016


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: root.mkdir(), "no dataset recognised"),
        (lambda root: write_circor_folder(root, n_patients=6, hidden=True), "no usable labelled patient"),
        (lambda root: write_physionet_folder(root, {"training-a": 4}), "4 folds need at least 4 patients of every class"),
    ],
)
def test_pcg_train_explains_bad_input_and_exits_2(tmp_path, capsys, make, message):
    make(tmp_path / "data")
    code = pcg_train(["--data", str(tmp_path / "data"), "--folds", "4", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "c"), "--quiet"])
    assert code == 2
    assert message in capsys.readouterr().err
