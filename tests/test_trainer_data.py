"""Trainer data handling without torch: examples, bad input, folds, crops, augmentation, sampling."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from runtime.dsp.config import FrontEndConfig
from runtime.formats import write_wav
from runtime.records import Audio, Dataset, Demographics, Patient, Recording
from trainer_fixtures import make_dataset, tiny_dataset, tiny_examples  # noqa: F401  (fixtures)
from trainer.augment import AugmentConfig, augment_crop, drop_sites
from trainer.crops import crop, evaluation_crops, window_starts
from trainer.examples import DataError, FeatureCache, load_examples
from trainer.folds import k_fold, leave_one_group_out


def test_features_are_cached_per_config_and_reused(tiny_dataset, tmp_path):
    config = FrontEndConfig()
    cache = FeatureCache(tmp_path, config)
    recording = tiny_dataset.patients[0].recordings[0]
    first = cache.features(recording)
    files = list((tmp_path / config.config_hash()[:16]).glob("*.npz"))
    assert len(files) == 1
    assert np.array_equal(cache.features(recording), first)
    other = FeatureCache(tmp_path, dataclasses.replace(config, clip_seconds=4.0))
    other.features(recording)
    assert len(list(tmp_path.iterdir())) == 2  # a different front-end config gets its own folder


def test_a_damaged_cache_entry_is_recomputed_and_processes_filling_one_cache_do_not_collide(tiny_dataset, tmp_path):
    import subprocess
    import sys

    config = FrontEndConfig()
    recordings = [r for p in tiny_dataset.patients for r in p.recordings]
    expected = [FeatureCache(None, config).features(r) for r in recordings]
    script = (
        "import pickle, sys\n"
        "from trainer.examples import FeatureCache\n"
        "from runtime.dsp.config import FrontEndConfig\n"
        "recordings = pickle.loads(sys.stdin.buffer.read())\n"
        f"cache = FeatureCache(__import__('pathlib').Path({str(tmp_path)!r}), FrontEndConfig())\n"
        "for _ in range(3):\n"
        "    [cache.features(r) for r in recordings]\n"
    )
    import pickle

    children = [subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE) for _ in range(2)]
    for child in children:
        child.communicate(pickle.dumps(recordings), timeout=120)
        assert child.returncode == 0
    folder = tmp_path / config.config_hash()[:16]
    assert not list(folder.glob(".*tmp*"))  # no temporary file left behind
    cache = FeatureCache(tmp_path, config)
    assert all(np.array_equal(cache.features(r), e) for r, e in zip(recordings, expected))
    damaged = sorted(folder.glob("*.npz"))[0]
    damaged.write_bytes(damaged.read_bytes()[:40])  # cut short, as by a full disk
    assert all(np.array_equal(cache.features(r), e) for r, e in zip(recordings, expected))


def test_empty_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no patients found"):
        load_examples(Dataset(tmp_path, "circor", []), FeatureCache(None, FrontEndConfig()), "outcome")


def test_unlabelled_dataset_is_a_clear_error(tiny_dataset):
    unlabelled = [dataclasses.replace(p, outcome=None, murmur=None) for p in tiny_dataset.patients]
    with pytest.raises(DataError, match="no usable labelled patient for the outcome task.*24 without a outcome label"):
        load_examples(Dataset(tiny_dataset.root, "circor", unlabelled), FeatureCache(None, FrontEndConfig()), "outcome")


def test_a_single_class_is_a_clear_error_and_a_missing_murmur_class_a_warning(tiny_dataset):
    normal_only = [p for p in tiny_dataset.patients if p.outcome == "Normal"]
    with pytest.raises(DataError, match="every usable patient is Normal"):
        load_examples(Dataset(tiny_dataset.root, "circor", normal_only), FeatureCache(None, FrontEndConfig()), "outcome")
    no_unknown = [p for p in tiny_dataset.patients if p.murmur != "Unknown"]
    _, report = load_examples(Dataset(tiny_dataset.root, "circor", no_unknown), FeatureCache(None, FrontEndConfig()), "murmur")
    assert any("no Unknown example" in w for w in report.warnings)


def test_unusable_recordings_and_absurd_demographics_are_reported_not_fatal(tiny_dataset, tmp_path):
    short = tmp_path / "short.wav"
    write_wav(short, Audio(np.zeros(400, dtype=np.int16), 2000))  # 0.2 s
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not a wav")
    bad = [
        Patient("short", [Recording("AV", short)], outcome="Abnormal"),
        Patient("broken", [Recording("AV", broken)], outcome="Normal"),
        dataclasses.replace(tiny_dataset.patients[0], patient_id="absurd",
                            demographics=Demographics(height_cm=float("nan"), weight_kg=9000.0, sex="Male", pregnant=True)),
    ]
    dataset = Dataset(tmp_path, "circor", list(tiny_dataset.patients) + bad)
    examples, report = load_examples(dataset, FeatureCache(None, FrontEndConfig()), "outcome")
    ids = {e.patient_id for e in examples}
    assert "short" not in ids and "broken" not in ids and "absurd" in ids
    text = "\n".join(report.problems)
    assert "patient short: no usable recording" in text and "broken.wav: unreadable" in text
    assert "weight 9000.0 kg" in text
    absurd = next(e for e in examples if e.patient_id == "absurd").demographics
    assert absurd.weight_kg is None and absurd.height_cm is None and absurd.pregnant is None


def test_k_fold_is_stratified_disjoint_and_covers_every_patient():
    labels = np.array([0] * 60 + [1] * 40)
    groups = np.array((["a"] * 30 + ["b"] * 30) + (["a"] * 10 + ["b"] * 30))
    folds = k_fold(labels, groups, 5, seed=1)
    tests = np.concatenate([f.test for f in folds])
    assert sorted(tests.tolist()) == list(range(100))
    for f in folds:
        assert not set(f.test) & set(f.train) and not set(f.validation) & set(f.train) and not set(f.test) & set(f.validation)
        assert len(f.train) + len(f.validation) + len(f.test) == 100
        assert labels[f.test].sum() == 8  # 40 abnormal / 5
        assert np.sum((groups[f.test] == "a") & (labels[f.test] == 1)) == 2
    with pytest.raises(DataError, match="at least 50 patients of every class"):
        k_fold(labels, groups, 50, seed=1)


def test_leave_one_group_out_tests_each_database_on_a_model_that_never_saw_it():
    labels = np.array([0, 1] * 30)
    groups = np.array(["training-a"] * 20 + ["training-c"] * 20 + ["training-e"] * 20)
    folds = leave_one_group_out(labels, groups, seed=0)
    assert [f.name for f in folds] == ["training-a", "training-c", "training-e"]
    for f in folds:
        assert set(groups[f.test]) == {f.name}
        assert f.name not in set(groups[f.train]) | set(groups[f.validation])
    with pytest.raises(DataError, match="at least two databases"):
        leave_one_group_out(labels, np.array(["x"] * 60), seed=0)


def test_short_recordings_are_tiled_never_zero_padded():
    features = np.arange(2 * 10, dtype=np.float32).reshape(2, 10) + 1.0
    c = crop(features, 0, 25)
    assert c.shape == (2, 25) and np.all(c != 0)
    assert np.array_equal(c[:, 10:20], features)
    assert window_starts(100, 40, 3).tolist() == [0, 30, 60]
    x, mask = evaluation_crops([features, None, None, None, np.ones((2, 100), np.float32)], 40, 3, 2)
    assert x.shape == (3, 5, 2, 40) and mask.tolist() == [1, 0, 0, 0, 1]
    assert np.all(x[:, 1:4] == 0) and np.all(x[:, 0] != 0)


def test_augmentation_changes_the_crop_but_keeps_its_shape_and_finiteness():
    rng = np.random.default_rng(0)
    x = np.random.default_rng(1).normal(-10, 2, (48, 120)).astype(np.float32)
    y = augment_crop(x, rng, AugmentConfig(noise_probability=1.0, band_limit_probability=1.0, high_pass_probability=1.0))
    assert y.shape == x.shape and y.dtype == np.float32 and np.all(np.isfinite(y))
    assert not np.allclose(x, y)


def test_site_dropout_keeps_at_least_one_site():
    rng = np.random.default_rng(0)
    mask = np.array([1, 1, 0, 1, 0], dtype=np.float32)
    for _ in range(200):
        dropped = drop_sites(mask, rng, 0.9)
        assert 1 <= dropped.sum() <= 3 and np.all(dropped <= mask)
    assert np.array_equal(drop_sites(np.array([0, 0, 0, 0, 1], np.float32), rng, 0.9), [0, 0, 0, 0, 1])


def test_crops_from_a_runtime_patient_tensor_leave_its_padding_out(tiny_dataset):
    from runtime.dsp import assemble_patient, compute_features
    from trainer.crops import patient_tensor_crops

    config = FrontEndConfig()
    patient = tiny_dataset.patients[0]
    site_features = {r.site: compute_features(r.read(), config) for r in patient.recordings}
    tensor = assemble_patient([(site, 0, f) for site, f in site_features.items()], config)
    x, mask = patient_tensor_crops(tensor.x, tensor.site_mask, tensor.time_mask, config.clip_frames, 3)
    expected, expected_mask = evaluation_crops([site_features.get(s) for s in ("AV", "PV", "TV", "MV", "Phc")], config.clip_frames, 3, config.n_freq)
    assert np.array_equal(mask, expected_mask) and np.array_equal(x, expected)
