"""pcg-export --adapt-bn: a model fitted to one stethoscope from its unlabelled recordings (AdaBN).

Tiny PhysioNet-layout runs trained in seconds; the "new stethoscope" is a plain WAV folder of
heart sounds through a different microphone (low-passed and 20 dB quieter, with a noise floor).
The adapted model is a real ONNX file the field runtime loads, its manifest says what it was
adapted to, and its leave-one-database-out figures are the ones that match it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[train,export]'); export needs it")
pytest.importorskip("onnx", reason="onnx is not installed (pip install -e '.[export]')")

from export.cli import main as pcg_export  # noqa: E402
from runtime.dsp import assemble_patient, compute_features  # noqa: E402
from runtime.formats.wav import read_wav, write_wav  # noqa: E402
from runtime.inference import Model  # noqa: E402
from runtime.records import Audio  # noqa: E402
from tests.trainer_fixtures import RATE_HZ, heart_sound, write_physionet_folder  # noqa: E402
from trainer.crossval import main as pcg_train  # noqa: E402


def other_stethoscope(folder, n, seed=3):
    """A plain WAV folder: heart sounds low-passed (a 5-tap moving average), 20 dB down, with noise."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(n):
        x = np.convolve(heart_sound(rng.uniform(6, 9), i % 2 == 1, rng).astype(np.float64), np.ones(5) / 5, mode="same") * 0.1
        x = x + rng.normal(0.0, 60.0, len(x))
        write_wav(folder / f"child{i:02d}.wav", Audio(np.clip(np.round(x), -32768, 32767).astype(np.int16), RATE_HZ))
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("export-adapt")
    data = write_physionet_folder(root / "pn16", {"training-a": 16, "training-b": 16}, seed=6)
    common = ["--data", str(data), "--model", "primary", "--epochs", "1", "--eval-crops", "2", "--cache", str(root / "cache"), "--quiet"]
    for name, extra in (("kfold", ["--folds", "2"]), ("lodo-adapted", ["--folds", "lodo", "--adapt-bn", "unlabelled"]),
                        ("kfold-healthy", ["--folds", "2", "--adapt-bn", "healthy"])):
        assert pcg_train([*common, *extra, "--out", str(root / name)]) == 0
    return root, other_stethoscope(root / "new-stethoscope", 12)


def probabilities(model_path, wav_folder):
    model = Model.load(model_path)
    out = []
    for path in sorted(wav_folder.glob("*.wav")):
        tensor = assemble_patient([("Phc", 0, compute_features(read_wav(path), model.frontend))], model.frontend)
        out.append(model.predict(tensor).probability)
    return np.array(out)


def test_an_adapted_export_records_its_adaptation_and_scores_differently(runs, capsys):
    root, new = runs
    plain, adapted = root / "plain" / "model.onnx", root / "adapted" / "model.onnx"
    common = ["--cache", str(root / "cache"), "--lodo-run", str(root / "lodo-adapted")]
    assert pcg_export([str(root / "kfold"), "--out", str(plain), *common]) == 0
    assert pcg_export([str(root / "kfold"), "--out", str(adapted), *common, "--adapt-bn", str(new)]) == 0
    err = capsys.readouterr().err
    assert "adapted to 12 recordings of 12 patients" in err and "warning: only 12 recordings" in err
    # torch and ONNX agree for the adapted graph too (parity is measured on the adapted torch graph)
    assert json.loads(adapted.with_name("model.parity.json").read_text())["passed"]
    record = Model.load(adapted).manifest.inference["batchnorm_adaptation"]
    assert record["recordings_used"] == 12 and record["patients"] == 12 and record["format"] == "wav"
    assert record["unreadable_count"] == 0 and len(record["features_sha256"]) == 64
    assert "batchnorm_adaptation" not in Model.load(plain).manifest.inference
    # the field program says so wherever it shows the model
    assert subprocess.run([sys.executable, "-m", "runtime.cli", "model", "--model", str(plain), "--allow-unsigned-model"], capture_output=True, text=True,
                          check=True).stdout.count("adapted to a stethoscope") == 0
    shown = subprocess.run([sys.executable, "-m", "runtime.cli", "model", "--model", str(adapted), "--allow-unsigned-model"], capture_output=True, text=True, check=True).stdout
    assert "adapted to a stethoscope: batch-norm statistics of 12 recordings of 12 patients" in shown
    p_plain, p_adapted = probabilities(plain, new), probabilities(adapted, new)
    assert np.all((p_adapted > 0) & (p_adapted < 1)) and np.max(np.abs(p_adapted - p_plain)) > 1e-3


def test_each_export_carries_the_leave_one_database_out_figures_that_match_it(runs):
    root, _ = runs
    run = json.loads((root / "lodo-adapted" / "metrics.json").read_text())["summary"]
    plain = Model.load(root / "plain" / "model.onnx").manifest.metrics["leave_one_database_out"]
    adapted = Model.load(root / "adapted" / "model.onnx").manifest.metrics["leave_one_database_out"]
    # the unadapted model: the same fold models' unadapted figures, the adapted ones beside them
    assert plain["pooled"]["auroc"] == pytest.approx(run["unadapted"]["auroc"])
    assert plain["by_group"]["training-a"]["auroc"] == pytest.approx(run["unadapted"]["by_group"]["training-a"])
    assert plain["with_batchnorm_adaptation"]["pooled"]["auroc"] == pytest.approx(run["pooled"]["auroc"])
    assert plain["batchnorm_adaptation"].startswith("none") and plain["folds"] == {}
    # the adapted model: the run's adapted figures
    assert adapted["pooled"]["auroc"] == pytest.approx(run["pooled"]["auroc"])
    assert adapted["batchnorm_adaptation"].startswith("each held-out database scored after AdaBN")
    assert "with_batchnorm_adaptation" not in adapted


def test_adaptation_refuses_a_folder_it_cannot_use(runs, tmp_path, capsys):
    root, new = runs
    few = tmp_path / "few"
    few.mkdir()
    for path in sorted(new.glob("*.wav"))[:2]:
        (few / path.name).write_bytes(path.read_bytes())
    (few / "broken.wav").write_bytes(b"RIFF not a wav file")
    for folder, message in ((few, "2 readable recording(s); adaptation needs at least 3"), (tmp_path / "missing", "no such folder")):
        assert pcg_export([str(root / "kfold"), "--out", str(tmp_path / "out" / "model.onnx"), "--cache", str(root / "cache"),
                           "--adapt-bn", str(folder)]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_a_run_calibrated_for_adaptation_is_exported_only_adapted(runs, tmp_path, capsys):
    root, new = runs
    out = tmp_path / "model.onnx"
    assert pcg_export([str(root / "kfold-healthy"), "--out", str(out), "--cache", str(root / "cache")]) == 2
    assert "trained with --adapt-bn healthy" in capsys.readouterr().err and not out.exists()
    assert pcg_export([str(root / "kfold-healthy"), "--out", str(out), "--cache", str(root / "cache"), "--adapt-bn", str(new)]) == 0
    record = Model.load(out).manifest.inference["batchnorm_adaptation"]
    assert record["calibrated_for"].startswith("adaptation to a healthy reference")
    plain = Model.load(root / "adapted" / "model.onnx").manifest.inference["batchnorm_adaptation"]
    assert plain["calibrated_for"].startswith("unadapted models")
