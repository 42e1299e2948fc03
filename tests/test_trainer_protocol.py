"""The selection protocol's parts: saved fold partitions (--folds-file) and the joint outcome +
murmur model (--task both)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[train]'); training tests need it")

from trainer_fixtures import (  # noqa: E402
    fast_train_config,
    tiny_dataset,  # noqa: F401  (fixture)
    tiny_model_config,
    write_circor_folder,
)
from trainer import metrics  # noqa: E402
from trainer.crossval import main as pcg_train  # noqa: E402
from trainer.examples import DataError, FeatureCache, load_examples  # noqa: E402
from trainer.folds import k_fold  # noqa: E402
from trainer.model import ScreeningModel  # noqa: E402
from trainer.partition import folds_from_partition, main as make_partition_cli, make_partition, read_partition  # noqa: E402
from trainer.train import fit_fold  # noqa: E402


def test_a_partition_is_patient_level_stratified_and_reproducible():
    ids = [str(i) for i in range(100)]
    keys = [("CC2014" if i < 40 else "CC2015", "Abnormal" if i % 2 else "Normal", "Present" if i % 5 == 0 else "Absent") for i in range(100)]
    folds = make_partition(ids, keys, 5, seed=0)
    assert make_partition(ids, keys, 5, seed=0) == folds
    assert make_partition(ids, keys, 5, seed=1) != folds
    tests = [set(f["test"]) for f in folds]
    assert set().union(*tests) == set(ids) and sum(len(t) for t in tests) == 100  # every patient tested exactly once
    for fold, test in zip(folds, tests):
        assert not set(fold["validation"]) & test
        assert 10 <= len(fold["validation"]) <= 20
        campaign_2014 = sum(1 for p in test if int(p) < 40)
        assert campaign_2014 == 8  # 40 of 100 patients, spread evenly over the five folds


def test_pcg_train_uses_the_saved_partition_and_refuses_one_that_misses_patients(tmp_path, capsys):
    data = write_circor_folder(tmp_path / "circor", n_patients=20)
    partition = tmp_path / "p0.json"
    assert make_partition_cli(["--data", str(data), "--folds", "2", "--seed", "0", "--out", str(partition)]) == 0
    body = read_partition(partition)
    args = ["--data", str(data), "--model", "primary", "--folds-file", str(partition), "--epochs", "1", "--eval-crops", "1",
            "--cache", str(tmp_path / "cache"), "--quiet"]
    assert pcg_train(args + ["--out", str(tmp_path / "run")]) == 0
    for fold in body["folds"]:
        ids = json.loads((tmp_path / "run" / fold["name"] / "outcome.json").read_text())["test_ids"]
        assert sorted(ids) == sorted(fold["test"])
    # the same partition under another seed: the same test parts (seeds vary only initialisation and order)
    assert pcg_train(args + ["--seed", "3", "--out", str(tmp_path / "run-s3")]) == 0
    ids_s3 = json.loads((tmp_path / "run-s3" / "fold1" / "outcome.json").read_text())["test_ids"]
    assert sorted(ids_s3) == sorted(body["folds"][0]["test"])

    body["folds"][0]["test"] = body["folds"][0]["test"][1:]  # one patient of the data now in no test fold
    partition.write_text(json.dumps(body))
    assert pcg_train(args + ["--out", str(tmp_path / "bad")]) == 2
    assert "in no test fold" in capsys.readouterr().err
    partition.write_text("{not json")
    assert pcg_train(args + ["--out", str(tmp_path / "bad")]) == 2
    assert "cannot read a partition" in capsys.readouterr().err


def test_a_partition_patient_missing_from_the_data_is_noted_not_silently_dropped(tiny_dataset, tmp_path):
    from runtime.dsp.config import FrontEndConfig

    examples, _ = load_examples(tiny_dataset, FeatureCache(tmp_path / "cache", FrontEndConfig()), "outcome")
    ids = [e.patient_id for e in examples] + ["ghost"]
    keys = [(e.group, e.outcome, 0) for e in examples] + [("CC2014", 1, 0)]
    path = tmp_path / "p.json"
    from trainer.partition import write_partition

    write_partition(path, make_partition(ids, keys, 2, seed=0), tmp_path, 0, ["campaign", "outcome", "murmur"])
    folds, notes = folds_from_partition(examples, "outcome", path)
    assert len(notes) == 1 and "ghost" in notes[0]
    assert sorted(np.concatenate([f.test for f in folds]).tolist()) == list(range(len(examples)))
    with pytest.raises(DataError):
        folds_from_partition(examples, "outcome", tmp_path / "missing.json")  # no such partition file


def test_the_joint_model_gives_its_own_outcome_and_a_murmur_distribution(tiny_dataset, tmp_path):
    from runtime.dsp.config import FrontEndConfig

    examples, _ = load_examples(tiny_dataset, FeatureCache(tmp_path / "cache", FrontEndConfig()), "both")
    labels = np.array([e.label("both") for e in examples])
    assert np.array_equal(labels, [e.outcome for e in examples])  # stratified and calibrated on the outcome
    fold = k_fold(labels, np.array([e.group for e in examples]), 3, seed=0)[0]
    outcome = fit_fold(examples, fold, tiny_model_config("both", "hyper"), fast_train_config("both", epochs=6), tmp_path / "run")
    assert np.array_equal(outcome.test_labels, [examples[i].outcome for i in fold.test])
    assert np.array_equal(outcome.test_murmur_labels, [examples[i].murmur for i in fold.test])
    np.testing.assert_allclose(outcome.test_murmur.sum(axis=1), 1.0, atol=1e-5)
    assert metrics.auroc(outcome.test_labels, outcome.test_scores) >= 0.8
    # the outcome logit is the outcome head's, not a function of the murmur probabilities
    murmur_refer = outcome.test_murmur[:, 0] + outcome.test_murmur[:, 1]
    assert not np.allclose(outcome.test_logits, np.log(murmur_refer) - np.log1p(-murmur_refer), atol=1e-3)

    model = ScreeningModel(tiny_model_config("both", "hyper")).eval()
    x = torch.randn(2, 5, 48, 125)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.float32)
    outputs = model(x, mask, torch.zeros(2, 15))
    assert [tuple(o.shape) for o in outputs] == [(2,), (2,), (2, 5), (2, 3)]
    torch.testing.assert_close(outputs[0], torch.sigmoid(outputs[1]))


@pytest.fixture(scope="module")
def two_seed_runs(tmp_path_factory):
    """pcg-train on one saved partition: primary and hyper, seeds 0 and 1 (one epoch each)."""
    root = tmp_path_factory.mktemp("protocol")
    data = write_circor_folder(root / "circor", n_patients=20)
    partition = root / "p0.json"
    assert make_partition_cli(["--data", str(data), "--folds", "2", "--seed", "0", "--out", str(partition)]) == 0
    for model in ("primary", "hyper"):
        for seed in (0, 1):
            assert pcg_train(["--data", str(data), "--model", model, "--folds-file", str(partition), "--epochs", "1",
                              "--eval-crops", "2", "--cache", str(root / "cache"), "--seed", str(seed), "--quiet",
                              "--out", str(root / f"{model}-s{seed}")]) == 0
    return root, data


def test_compare_pairs_seeds_and_fold_by_fold_against_the_baseline(two_seed_runs):
    from trainer.compare import compare, main as compare_cli

    root, _ = two_seed_runs
    runs = {m: sorted(root.glob(f"{m}-s*")) for m in ("primary", "hyper")}
    result = compare(runs)
    hyper, primary = result["configurations"]["hyper"], result["configurations"]["primary"]
    for seed in (0, 1):
        expected = hyper["per_seed"][seed]["auroc"] - primary["per_seed"][seed]["auroc"]
        assert hyper["paired"]["auroc"][seed] == pytest.approx(expected)
    assert hyper["auroc"]["mean"] == pytest.approx(np.mean([hyper["per_seed"][s]["auroc"] for s in (0, 1)]))
    assert hyper["seed_ensemble"]["n_models_per_patient"] == 2
    # a configuration compared with itself gains nothing and does not clear the bar
    same = compare({"a": runs["primary"], "b": runs["primary"]})["configurations"]["b"]["paired"]
    assert same["auroc_mean"] == 0 and same["cost_mean"] == 0 and not same["clears_bar"]
    out = root / "cmp"
    assert compare_cli(["--out", str(out), f"primary={root}/primary-s*", f"hyper={root}/hyper-s*"]) == 0
    assert "clears the bar" in (out / "compare.md").read_text()
    assert compare_cli(["--out", str(out), f"none={root}/nothing-*"]) == 2


def test_the_probe_reproduces_the_run_and_measures_each_masked_field(two_seed_runs):
    from trainer.probe import main as probe_cli

    root, data = two_seed_runs
    run = root / "hyper-s0"
    assert probe_cli([str(run), "--data", str(data), "--cache", str(root / "cache")]) == 0
    result = json.loads((run / "probe.json").read_text())
    pooled = json.loads((run / "metrics.json").read_text())["summary"]["pooled"]
    assert result["variants"]["as trained"]["auroc"] == pytest.approx(pooled["auroc"], abs=1e-9)
    assert result["variants"]["as trained"]["cost"] == pytest.approx(pooled["cost_optimal"]["cost"])
    assert set(result["variants"]) == {"as trained", "age group", "sex", "height", "weight", "pregnancy", "all five"}
    assert result["hypernetwork"]["static_logit_sd"] > 0 and result["hypernetwork"]["delta_logit_sd"] > 0
    assert "Female" in result["hypernetwork"]["delta_by_sex"]


def test_extra_data_joins_training_only_with_its_share_of_the_draws(tmp_path, capsys):
    from trainer_fixtures import write_physionet_folder

    data = write_circor_folder(tmp_path / "circor", n_patients=16)
    extra = write_physionet_folder(tmp_path / "pn16", {"training-a": 6, "training-e": 6})
    out = tmp_path / "run"
    args = ["--data", str(data), "--extra-data", str(extra), "--extra-share", "0.2", "--model", "hyper", "--folds", "2",
            "--epochs", "1", "--eval-crops", "1", "--cache", str(tmp_path / "cache"), "--quiet", "--out", str(out)]
    assert pcg_train(args) == 0
    body = json.loads((out / "metrics.json").read_text())
    assert body["summary"]["pooled"]["n"] == 16  # every figure is on --data's patients
    tested = [i for f in ("fold1", "fold2") for i in json.loads((out / f / "outcome.json").read_text())["test_ids"]]
    assert not any(i.startswith("extra:") for i in tested)
    weights = body["settings"]["train"]["group_weights"]
    assert set(weights) == {"extra:training-a", "extra:training-e"}
    # two CirCor campaigns and two extra databases: each extra one weighs w, 2w / (2 + 2w) = 0.2
    assert 2 * weights["extra:training-a"] / (2 + 2 * weights["extra:training-a"]) == pytest.approx(0.2)
    assert any("--extra-data" in n for n in body["data"]["notes"])
    assert pcg_train(args[:-2] + ["--task", "murmur", "--out", str(tmp_path / "bad")]) == 2
    assert "needs --task outcome" in capsys.readouterr().err


def test_pcg_train_never_mixes_two_runs_in_one_folder(tmp_path, capsys):
    data = write_circor_folder(tmp_path / "circor", n_patients=18)
    out = tmp_path / "run"
    common = ["--data", str(data), "--model", "primary", "--epochs", "1", "--eval-crops", "1", "--cache", str(tmp_path / "cache"),
              "--quiet", "--out", str(out)]
    assert pcg_train(common + ["--folds", "3"]) == 0
    # fewer folds into the same folder would leave fold3 behind, to be exported with the new run's metrics
    assert pcg_train(common + ["--folds", "2"]) == 2
    assert "never mixes two runs" in capsys.readouterr().err
    assert pcg_train(common + ["--folds", "2", "--resume"]) == 2
    assert "other folds" in capsys.readouterr().err
    assert pcg_train(common + ["--folds", "3", "--resume", "--model", "hyper"]) == 2
    assert "other model" in capsys.readouterr().err
    assert pcg_train(common + ["--folds", "3", "--resume", "--epochs", "2"]) == 0  # the same run, trained further
    assert sorted(p.name for p in out.glob("fold*")) == ["fold1", "fold2", "fold3"]
