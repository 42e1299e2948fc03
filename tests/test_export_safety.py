"""pcg-export lets no bad model through: a folder mixing two runs, a model that failed its parity
check, files of an earlier export, a chance-level model without an explicit override."""

from __future__ import annotations

import json
import shutil

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[export]'); export needs it")
pytest.importorskip("onnx", reason="onnx is not installed (pip install -e '.[export]')")

import export.cli  # noqa: E402
from export.cli import main as pcg_export  # noqa: E402
from runtime.inference import Model  # noqa: E402
from runtime.manifest import verify_model_file  # noqa: E402
from runtime.triage import model_limits  # noqa: E402
from tests.trainer_fixtures import write_circor_folder  # noqa: E402
from trainer.crossval import main as pcg_train  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export-safety")
    data = write_circor_folder(root / "circor", n_patients=130, seed=5, sites=("MV",))  # int8 calibration needs 100 patients
    for name, folds in (("run", "5"), ("other", "6")):
        assert pcg_train(["--data", str(data), "--model", "hyper", "--folds", folds, "--epochs", "2", "--out", str(root / name),
                          "--cache", str(root / "cache"), "--eval-crops", "2", "--quiet"]) == 0
    return root


def export_args(root, source, out, *more):
    return [str(source), "--out", str(out), "--cache", str(root / "cache"), "--allow-weak-model", *more]


def test_a_folder_holding_folds_of_another_run_is_refused(run, tmp_path, capsys):
    mixed = tmp_path / "mixed"
    shutil.copytree(run / "run", mixed)
    shutil.copytree(run / "other" / "fold6", mixed / "fold6")  # what re-training with fewer folds used to leave behind
    out = tmp_path / "m.onnx"
    assert pcg_export(export_args(run, mixed, out)) == 2
    assert "mixes runs" in capsys.readouterr().err and not out.exists()


def test_an_int8_model_that_fails_its_parity_check_is_not_left_to_load(run, tmp_path, monkeypatch):
    real_report = export.cli.int8_report

    def failing_report(*args, **kwargs):  # the real report, judged failed, as when quantization breaks a model
        report = real_report(*args, **kwargs)
        report["passed"] = False
        return report

    out = tmp_path / "m.onnx"
    stale = tmp_path / "m.int8-cpu.onnx"
    shutil.copy(run / "other" / "fold1" / "model.pt", stale)  # an earlier export's file at the same name
    monkeypatch.setattr(export.cli, "int8_report", failing_report)
    assert pcg_export(export_args(run, run / "run", out, "--int8", "--calibration", str(run / "circor"))) == 1
    verify_model_file(out)  # the float model passed and loads
    for variant in ("int8-cpu", "int8-tensorrt"):
        assert not (tmp_path / f"m.{variant}.onnx").exists()
        report = json.loads((tmp_path / f"m.{variant}.parity.json").read_text())
        assert not report["passed"] and report["use"].startswith("not written")
    assert json.loads((tmp_path / "m.export.json").read_text())["cpu_model"] == "m.onnx"


def test_a_chance_level_model_needs_an_explicit_override_that_every_result_then_shows(run, tmp_path, capsys):
    weak = tmp_path / "weak"
    shutil.copytree(run / "run", weak)
    metrics = json.loads((weak / "metrics.json").read_text())
    metrics["summary"]["pooled"]["auroc"] = 0.52  # the run's cross-validated figure, as a chance-level model reports it
    (weak / "metrics.json").write_text(json.dumps(metrics))
    out = tmp_path / "m.onnx"
    assert pcg_export([str(weak), "--out", str(out), "--cache", str(run / "cache")]) == 2
    assert "below 0.6" in capsys.readouterr().err and not out.exists()
    assert pcg_export([str(weak), "--out", str(out), "--cache", str(run / "cache"), "--allow-weak-model"]) == 0
    manifest = Model.load(out).manifest
    assert manifest.metrics["weak_model"]["pooled_auroc"] == pytest.approx(0.52)
    assert any(note.startswith("weak model") for note in model_limits(manifest, None, ["MV"]))


def test_pcg_export_signs_every_model_it_writes_with_the_programme_key(run, tmp_path, capsys):
    from runtime.signing import generate_keypair

    keys = generate_keypair(tmp_path / "keys")
    out = tmp_path / "signed.onnx"
    assert pcg_export(export_args(run, run / "run", out, "--sign-key", str(keys.private_path))) == 0
    model = Model.load(out, trusted_keys={keys.key_id})
    assert model.trust.kind == "signed" and model.trust.key_id == keys.key_id and model.trust.trusted
    assert not Model.load(out).trust.trusted  # a box without the key does not trust it
    unsigned = tmp_path / "unsigned.onnx"
    assert pcg_export(export_args(run, run / "run", unsigned)) == 0
    assert "the models are unsigned" in capsys.readouterr().err
    assert Model.load(unsigned).trust.kind == "unsigned"
    not_a_key = tmp_path / "not-a-key"
    not_a_key.write_text("hello")
    assert pcg_export(export_args(run, run / "run", tmp_path / "x.onnx", "--sign-key", str(not_a_key))) == 2
    assert "not a readable unencrypted private key" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()
