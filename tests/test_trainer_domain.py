"""Options aimed at stethoscopes the model never heard (leave-one-database-out): a band limit
inside the graph (--freq-rows), mixup across the batch (--mixup), frequency and time masks
(--augment masked), prevalence-free calibration (--calibration balanced), early stopping on
within-database AUROC (--selection group), instance normalisation (--norm instance) and a
database's share of the draws (--group-weight)."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[train]'); training tests need it")

from trainer_fixtures import (  # noqa: E402
    fast_train_config,
    tiny_dataset,  # noqa: F401  (fixture)
    tiny_examples,  # noqa: F401  (fixture)
    tiny_model_config,
    write_physionet_folder,
)
from trainer import metrics  # noqa: E402
from trainer.augment import MASKED_AUGMENTATION, NO_AUGMENTATION, augment_crop  # noqa: E402
from trainer.crossval import main as pcg_train  # noqa: E402
from trainer.folds import k_fold  # noqa: E402
from trainer.model import ModelConfig, ScreeningModel  # noqa: E402
from trainer.train import fit_fold, mix_batch, sampling_weights, selection_score  # noqa: E402


def band_limited_model() -> ScreeningModel:
    torch.manual_seed(0)
    return ScreeningModel(ModelConfig(n_frames=64, freq_rows=16)).eval()


def test_a_band_limited_model_ignores_the_rows_above_its_band_and_exports_to_onnx():
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is needed to run the exported graph")
    m = band_limited_model()
    x = torch.randn(2, 5, 48, 64)
    mask = torch.tensor([[1, 0, 0, 1, 0], [0, 0, 0, 0, 1]], dtype=torch.float32)
    metadata = torch.zeros(2, 15)
    garbage = x.clone()
    garbage[:, :, 16:] = 100.0 * torch.randn_like(garbage[:, :, 16:])
    with torch.no_grad():
        expected = m(x, mask, metadata)
        assert torch.equal(m(garbage, mask, metadata)[1], expected[1])
    buffer = io.BytesIO()
    torch.onnx.export(m, (x, mask, metadata), buffer, dynamo=False, opset_version=17, input_names=["x", "site_mask", "metadata"],
                      output_names=list(m.config.output_names), dynamic_axes={"x": {0: "batch"}, "site_mask": {0: "batch"}, "metadata": {0: "batch"}})
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[2] == 48  # the input keeps every front-end row
    got = session.run(None, {"x": garbage.numpy(), "site_mask": mask.numpy(), "metadata": metadata.numpy()})
    np.testing.assert_allclose(got[1], expected[1].numpy(), atol=1e-4)


def test_freq_rows_must_be_a_multiple_of_8_inside_the_band():
    for rows in (12, 0, 56):
        with pytest.raises(ValueError, match="freq_rows"):
            ModelConfig(freq_rows=rows)


def test_mixup_weighs_the_first_patient_most_and_keeps_every_present_site():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 5, 8, 10)).astype(np.float32)
    site_mask = np.zeros((6, 5), dtype=np.float32)
    site_mask[np.arange(6), np.arange(6) % 5] = 1.0
    x *= site_mask[:, :, None, None]  # absent sites hold zeros, as training_batch leaves them
    mixed, mask, weight, partner = mix_batch(x, site_mask, 0.4, np.random.default_rng(1))
    assert 0.5 <= weight <= 1.0
    np.testing.assert_array_equal(mask, np.maximum(site_mask, site_mask[partner]))
    for b in range(6):
        for s in np.flatnonzero(mask[b]):
            if site_mask[b, s] and site_mask[partner[b], s]:
                expected = weight * x[b, s] + (1 - weight) * x[partner[b], s]
            else:
                expected = x[b, s] if site_mask[b, s] else x[partner[b], s]  # never mixed with an absent site's zeros
            np.testing.assert_allclose(mixed[b, s], expected, rtol=1e-6)


def test_a_tiny_model_still_learns_with_mixup_and_masks(tiny_examples, tmp_path):
    labels = np.array([e.outcome for e in tiny_examples])
    groups = np.array([e.group for e in tiny_examples])
    fold = k_fold(labels, groups, 3, seed=0)[0]
    config = fast_train_config(epochs=8, mixup=0.4, augment=MASKED_AUGMENTATION)
    outcome = fit_fold(tiny_examples, fold, tiny_model_config(), config, tmp_path)
    assert metrics.auroc(outcome.test_labels, outcome.test_probabilities) >= 0.8


def test_masks_set_one_band_and_one_stretch_to_the_row_means():
    x = np.random.default_rng(2).normal(size=(48, 100)).astype(np.float32)
    np.testing.assert_array_equal(augment_crop(x, np.random.default_rng(3), NO_AUGMENTATION), x)
    only_masks = dataclasses.replace(NO_AUGMENTATION, freq_mask_rows=8, time_mask_frames=20)
    y = augment_crop(x, np.random.default_rng(3), only_masks)
    row_means = x.mean(axis=1)
    band = np.flatnonzero(np.any(y != x, axis=1) & np.all(y == row_means[:, None], axis=1))
    assert 1 <= len(band) <= 8 and np.all(np.diff(band) == 1)
    others = np.setdiff1d(np.arange(48), band)
    stretch = np.flatnonzero(np.any(y[others] != x[others], axis=0))
    assert 1 <= len(stretch) <= 20 and np.all(np.diff(stretch) == 1)
    np.testing.assert_allclose(y[:, stretch], np.repeat(row_means[:, None], len(stretch), axis=1), rtol=1e-6)
    untouched = np.setdiff1d(np.arange(100), stretch)
    np.testing.assert_array_equal(y[np.ix_(others, untouched)], x[np.ix_(others, untouched)])


def test_balanced_calibration_does_not_carry_the_calibration_sets_prevalence():
    rng = np.random.default_rng(4)
    positives, negatives = rng.normal(1.0, 1.0, 60), rng.normal(-1.0, 1.0, 60)
    logits = np.concatenate([positives, negatives])
    labels = np.array([1] * 60 + [0] * 60)
    skewed_logits = np.concatenate([positives, positives, positives, negatives])  # 75 % positive
    skewed_labels = np.array([1] * 180 + [0] * 60)
    even = metrics.fit_platt(logits, labels, balanced=True)
    skewed = metrics.fit_platt(skewed_logits, skewed_labels, balanced=True)
    assert skewed[1] == pytest.approx(even[1], abs=0.1)  # the intercept: no prior in it
    assert skewed[0] == pytest.approx(even[0], rel=0.1)  # the slope (the ridge weighs a little more on fewer examples)
    natural = metrics.fit_platt(skewed_logits, skewed_labels)
    assert natural[1] - skewed[1] == pytest.approx(np.log(3.0), abs=0.3)  # the prior's log odds, only without balancing
    assert metrics.fit_platt(logits, labels, balanced=True) == pytest.approx(metrics.fit_platt(logits, labels), abs=1e-6)


def test_pcg_train_takes_the_domain_options_and_records_them(tmp_path):
    data = write_physionet_folder(tmp_path / "pn", {"training-a": 8, "training-b": 8})
    out = tmp_path / "run"
    assert pcg_train(["--data", str(data), "--model", "primary", "--folds", "lodo", "--epochs", "1", "--out", str(out),
                      "--cache", str(tmp_path / "cache"), "--eval-crops", "1", "--quiet", "--freq-rows", "32", "--mixup", "0.4",
                      "--augment", "masked", "--calibration", "balanced", "--dropout", "0.3", "--weight-decay", "1e-3"]) == 0
    settings = json.loads((out / "metrics.json").read_text())["settings"]
    assert settings["model"]["freq_rows"] == 32 and settings["model"]["dropout"] == 0.3
    train = settings["train"]
    assert train["mixup"] == 0.4 and train["calibration"] == "balanced" and train["weight_decay"] == 1e-3
    assert train["augment"]["freq_mask_rows"] == 8 and train["augment"]["time_mask_frames"] == 31
    checkpoint = torch.load(out / "training-a" / "model.pt", weights_only=False)
    assert ScreeningModel(ModelConfig(**checkpoint["model_config"])).encoder.n_freq == 32  # rebuilt as trained


def test_group_selection_counts_only_pairs_within_one_database():
    # database A: 80 % abnormal, scores high; database B: 20 % abnormal, scores low; inside each
    # database the scores are noise. Pooled, telling A from B looks like skill; within, it is 0.5.
    rng = np.random.default_rng(5)
    groups = np.array(["A"] * 200 + ["B"] * 200)
    labels = np.concatenate([(rng.random(200) < 0.8), (rng.random(200) < 0.2)]).astype(np.int64)
    logits = np.where(groups == "A", 2.0, -2.0) + rng.normal(0.0, 0.5, 400)
    prediction = {"logits": logits}
    assert selection_score("outcome", labels, prediction) > 0.75
    assert selection_score("outcome", labels, prediction, groups) == pytest.approx(0.5, abs=0.08)
    # inside each database a real signal: the within figure is the pair-weighted mean of the two
    logits = logits + 3.0 * labels
    a, b = groups == "A", groups == "B"
    within = [metrics.auroc(labels[m], logits[m]) for m in (a, b)]
    pairs = [labels[m].sum() * (1 - labels[m]).sum() for m in (a, b)]
    assert selection_score("outcome", labels, {"logits": logits}, groups) == pytest.approx(np.average(within, weights=pairs))
    # a database with one class only is left out rather than making the figure nan
    one_class = np.where(groups == "B", "C", groups)
    one_class_labels = np.where(groups == "B", 0, labels)
    assert selection_score("outcome", one_class_labels, {"logits": logits}, one_class) == pytest.approx(within[0])


def test_group_weights_scale_a_databases_share_of_the_draws():
    labels = np.array([1, 0] * 10 + [1, 0] * 40)
    groups = np.array(["a"] * 20 + ["e"] * 80)
    even = sampling_weights(labels, groups, "group_class")
    assert even[groups == "e"].sum() == pytest.approx(0.5)
    halved = sampling_weights(labels, groups, "group_class", {"e": 0.5})
    assert halved[groups == "e"].sum() == pytest.approx(1 / 3)
    assert halved[(groups == "e") & (labels == 1)].sum() == pytest.approx(1 / 6)  # classes stay balanced inside e
    assert sampling_weights(labels, groups, "group_class", {"e": 0.0})[groups == "e"].sum() == 0.0
    with pytest.raises(ValueError, match="nothing to draw"):
        sampling_weights(labels, groups, "group_class", {"a": 0.0, "e": 0.0})


def test_an_instance_normalised_model_ignores_its_batch_and_exports_to_onnx():
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is needed to run the exported graph")
    torch.manual_seed(1)
    m = ScreeningModel(ModelConfig(n_frames=64, norm="instance")).eval()
    assert not any(isinstance(layer, torch.nn.BatchNorm2d) for layer in m.modules())
    x = torch.randn(3, 5, 48, 64)
    mask = torch.tensor([[1, 0, 0, 1, 0], [0, 0, 0, 0, 1], [1, 1, 1, 1, 0]], dtype=torch.float32)
    metadata = torch.zeros(3, 15)
    with torch.no_grad():
        expected = m(x, mask, metadata)
        alone = m(x[1:2], mask[1:2], metadata[1:2])
    torch.testing.assert_close(alone[1], expected[1][1:2], atol=1e-5, rtol=0)
    buffer = io.BytesIO()
    torch.onnx.export(m, (x, mask, metadata), buffer, dynamo=False, opset_version=17, input_names=["x", "site_mask", "metadata"],
                      output_names=list(m.config.output_names), dynamic_axes={"x": {0: "batch"}, "site_mask": {0: "batch"}, "metadata": {0: "batch"}})
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x.numpy()[:2], "site_mask": mask.numpy()[:2], "metadata": metadata.numpy()[:2]})
    np.testing.assert_allclose(got[1], expected[1][:2].numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="norm"):
        ModelConfig(norm="layer")


def test_pcg_train_takes_selection_norm_and_group_weights_and_refuses_bad_weights(tmp_path, capsys):
    data = write_physionet_folder(tmp_path / "pn", {"training-a": 8, "training-b": 8, "training-c": 8})
    common = ["--data", str(data), "--model", "primary", "--epochs", "1", "--cache", str(tmp_path / "cache"), "--eval-crops", "1", "--quiet"]
    out = tmp_path / "run"
    assert pcg_train(common + ["--folds", "lodo", "--out", str(out), "--selection", "group", "--norm", "instance",
                               "--group-weight", "training-b=0.5", "--domain-batches"]) == 0
    settings = json.loads((out / "metrics.json").read_text())["settings"]
    assert settings["train"]["selection"] == "group" and settings["train"]["group_weights"] == {"training-b": 0.5}
    assert settings["train"]["domain_batches"] is True
    assert settings["model"]["norm"] == "instance"
    checkpoint = torch.load(out / "training-a" / "model.pt", weights_only=False)
    rebuilt = ScreeningModel(ModelConfig(**checkpoint["model_config"]))
    rebuilt.load_state_dict(checkpoint["model"])  # rebuilt as trained: instance norm layers, no running statistics
    for bad, message in (("training-b", "DATABASE=WEIGHT"), ("training-b=-1", "DATABASE=WEIGHT"), ("=2", "DATABASE=WEIGHT"),
                         ("training-x=0.5", "names no database")):
        assert pcg_train(common + ["--folds", "lodo", "--out", str(tmp_path / "bad"), "--group-weight", bad]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad" / "metrics.json").exists()


def test_batchnorm_adaptation_takes_the_new_recordings_statistics_and_leaves_the_model_alone():
    from trainer.adapt import AdaptationError, adapt_batchnorm

    torch.manual_seed(2)
    model = ScreeningModel(ModelConfig(n_frames=64)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(6)
    recordings = [rng.normal(size=(48, int(rng.integers(40, 200)))).astype(np.float32) * 3.0 + 1.0 for _ in range(10)]
    adapted = adapt_batchnorm(model, recordings, clip_frames=64, n_crops=3, batch=1000)  # one batch: exact statistics
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])  # the original keeps its training statistics
    # the first batch-norm layer's statistics are those of the first convolution over every crop
    from trainer.crops import crop, window_starts
    crops = np.stack([crop(f, int(s), 64) for f in recordings for s in window_starts(f.shape[1], 64, 3)])
    from trainer.encoder import normalize_per_frequency
    with torch.no_grad():
        conv = model.encoder.cnn[0][0](normalize_per_frequency(torch.from_numpy(crops)).unsqueeze(1))
    bn = adapted.encoder.cnn[0][1]
    torch.testing.assert_close(bn.running_mean, conv.mean(dim=(0, 2, 3)), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(bn.running_var, conv.var(dim=(0, 2, 3), unbiased=True), atol=1e-4, rtol=1e-3)
    assert not adapted.training and not torch.equal(bn.running_mean, model.encoder.cnn[0][1].running_mean)
    # everything but the statistics is the model's own
    learned = {k for k in before if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert all(torch.equal(adapted.state_dict()[k], before[k]) for k in learned)
    with pytest.raises(AdaptationError, match="at least 3"):
        adapt_batchnorm(model, recordings[:2], clip_frames=64, n_crops=3)
    with pytest.raises(AdaptationError, match="no batch normalisation"):
        adapt_batchnorm(ScreeningModel(ModelConfig(n_frames=64, norm="instance")), recordings, clip_frames=64, n_crops=3)


def test_adaptation_parts_never_adapt_on_the_recordings_they_score():
    from trainer.adapt import ADAPTATION_PARTS, adaptation_parts, adaptation_size

    labels = np.array([0] * 7 + [1] * 24)
    for mode in ("unlabelled", "healthy"):
        parts = adaptation_parts(labels, mode, seed=3)
        assert len(parts) == ADAPTATION_PARTS
        scored = np.concatenate([s for s, _ in parts])
        assert sorted(scored.tolist()) == list(range(len(labels)))  # every patient scored once
        for s, adapting in parts:
            assert not set(s.tolist()) & set(adapting.tolist())
            assert len(adapting) >= adaptation_size(labels, mode)
            if mode == "healthy":
                assert np.all(labels[adapting] == 0) and len(adapting) == 7 - np.sum(labels[s] == 0)
            else:
                assert len(adapting) == len(labels) - len(s)
    assert adaptation_size(labels, "healthy") == 5 and adaptation_size(labels, "unlabelled") == 24


@pytest.mark.parametrize("mode", ["unlabelled", "healthy"])
def test_adapted_predictions_score_each_part_with_statistics_from_outside_it(tiny_examples, mode):
    import dataclasses as dc

    from trainer.adapt import adapt_batchnorm, adaptation_parts
    from trainer.train import adapted_predictions, predict

    torch.manual_seed(3)
    model = ScreeningModel(tiny_model_config()).eval()
    config = dc.replace(fast_train_config(seed=4), adapt_bn=mode)
    metadata = np.zeros((len(tiny_examples), 15), dtype=np.float32)
    got = adapted_predictions(model, tiny_examples, metadata, config, torch.device("cpu"))
    outcome = np.array([e.outcome for e in tiny_examples])
    for scored, adapting in adaptation_parts(outcome, mode, 4):
        adapted = adapt_batchnorm(model, [f for i in adapting for f in tiny_examples[i].longest() if f is not None],
                                  config.clip_frames, config.eval_crops)
        expected = predict(adapted, [tiny_examples[i] for i in scored], metadata[scored], config, torch.device("cpu"))
        np.testing.assert_allclose(got["logits"][scored], expected["logits"], rtol=1e-5, atol=1e-6)
    plain = predict(model, tiny_examples, metadata, config, torch.device("cpu"))
    assert not np.allclose(got["logits"], plain["logits"])


def test_reference_adapted_predictions_adapt_each_database_on_its_own_references(tiny_examples):
    import dataclasses as dc

    from trainer.adapt import adapt_batchnorm
    from trainer.train import adapted_predictions, predict, reference_adapted_predictions

    torch.manual_seed(5)
    model = ScreeningModel(tiny_model_config()).eval()
    config = dc.replace(fast_train_config(seed=2), adapt_bn="unlabelled")  # (the tiny data's databases are one class each)
    metadata = np.zeros((len(tiny_examples), 15), dtype=np.float32)
    groups = np.array([e.group for e in tiny_examples])
    first, second = sorted(set(groups.tolist()))
    a_rows, b_rows = np.flatnonzero(groups == first), np.flatnonzero(groups == second)
    references = a_rows[: len(a_rows) // 2]  # half of database A is "heard in training"; B has no references
    scored = np.concatenate([a_rows[len(a_rows) // 2 :], b_rows])
    got = reference_adapted_predictions(model, tiny_examples, metadata, scored, references, config, torch.device("cpu"))
    adapted = adapt_batchnorm(model, [f for i in references for f in tiny_examples[i].longest() if f is not None], config.clip_frames, config.eval_crops)
    in_a = scored[groups[scored] == first]
    expected_a = predict(adapted, [tiny_examples[i] for i in in_a], metadata[in_a], config, torch.device("cpu"))["logits"]
    np.testing.assert_allclose(got["logits"][: len(in_a)], expected_a, rtol=1e-5, atol=1e-6)
    expected_b = adapted_predictions(model, [tiny_examples[i] for i in b_rows], metadata[b_rows], config, torch.device("cpu"))["logits"]
    np.testing.assert_allclose(got["logits"][len(in_a):], expected_b, rtol=1e-5, atol=1e-6)


def test_adaptation_shortfalls_name_the_fold_and_database_without_enough_references():
    from trainer.adapt import adaptation_shortfalls
    from trainer.folds import Fold

    outcome = np.array([0] * 10 + [1] * 10 + [0] * 2 + [1] * 8)
    groups = np.array(["a"] * 20 + ["b"] * 10)
    a, b = np.arange(20), np.arange(20, 30)
    fold = Fold("held-out-b", train=a[:16], validation=a[16:], test=b)  # b: 2 normals, cross-fitted within itself
    assert adaptation_shortfalls(outcome, groups, [fold], "unlabelled") == []
    assert adaptation_shortfalls(outcome, groups, [fold], "healthy") == ["held-out-b test b: 1"]
    fold = Fold("mixed", train=np.array([0, 1, 10, 11, 20, 21, 22]), validation=np.array([2, 12]), test=np.array([3, 13, 23]))
    # validation a: normals 0, 1 in training; test a: 0, 1, 2 (validation counts as heard); test b: 20, 21
    assert adaptation_shortfalls(outcome, groups, [fold], "healthy") == ["mixed validation a: 2", "mixed test b: 2"]


def test_pcg_train_adapt_bn_reports_adapted_and_unadapted_figures_and_refuses_what_it_cannot_adapt(tmp_path, capsys):
    data = write_physionet_folder(tmp_path / "pn", {"training-a": 16, "training-b": 16})
    common = ["--data", str(data), "--model", "primary", "--epochs", "1", "--cache", str(tmp_path / "cache"), "--eval-crops", "1", "--quiet"]
    out = tmp_path / "run"
    assert pcg_train(common + ["--folds", "lodo", "--out", str(out), "--adapt-bn", "healthy"]) == 0
    assert "unadapted" in capsys.readouterr().out
    summary = json.loads((out / "metrics.json").read_text())["summary"]
    assert 0.0 <= summary["unadapted"]["auroc"] <= 1.0 and set(summary["unadapted"]["by_group"]) == {"training-a", "training-b"}
    assert "## Device adaptation (--adapt-bn)" in (out / "report.md").read_text()
    saved = np.load(out / "training-a" / "outcome.npz")
    assert saved["test_logits_unadapted"].shape == saved["test_logits"].shape
    assert not np.allclose(saved["test_logits_unadapted"], saved["test_logits"])
    assert len(json.loads((out / "training-a" / "outcome.json").read_text())["platt_unadapted"]) == 2
    assert json.loads((out / "metrics.json").read_text())["settings"]["train"]["adapt_bn"] == "healthy"
    # k-fold: each test database adapts on its references in the training part
    assert pcg_train(common + ["--folds", "2", "--out", str(tmp_path / "kfold"), "--adapt-bn", "unlabelled"]) == 0
    small = write_physionet_folder(tmp_path / "small", {"training-a": 16, "training-b": 6})  # b: 3 normal, 2 outside a part
    for argv, mode, message in ((common + ["--folds", "lodo", "--norm", "instance"], "unlabelled", "needs --norm batch"),
                                (["--data", str(small)] + common[2:] + ["--folds", "lodo"], "healthy", "training-b test training-b: 2")):
        assert pcg_train(argv + ["--out", str(tmp_path / "bad"), "--adapt-bn", mode]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad" / "metrics.json").exists()


def test_domain_batches_come_from_one_database_each_and_keep_the_draw_within_it():
    from trainer.train import domain_batch_order

    labels = np.array([1, 0] * 10 + [1, 0] * 40 + [1, 0] * 5)
    groups = np.array(["a"] * 20 + ["e"] * 80 + ["c"] * 10)
    rows = np.arange(1000, 1110)  # example indices need not start at 0
    draw = sampling_weights(labels, groups, "group_class")
    order = domain_batch_order(rows, groups, draw, 8, np.random.default_rng(0))
    assert len(order) == len(rows) and set(order.tolist()) <= set(rows.tolist())
    for start in range(0, len(order), 8):
        assert len(set(groups[order[start : start + 8] - 1000].tolist())) == 1
    many = np.concatenate([domain_batch_order(rows, groups, draw, 8, np.random.default_rng(k)) for k in range(200)]) - 1000
    for g in ("a", "e", "c"):  # databases drawn equally often, classes balanced inside each
        inside = groups[many] == g
        assert inside.mean() == pytest.approx(1 / 3, abs=0.04)
        assert labels[many][inside].mean() == pytest.approx(0.5, abs=0.04)
