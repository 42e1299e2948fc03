"""pcg-export --lodo-run and --reference-ids on tiny PhysioNet-layout runs trained in seconds: the manifest
carries both kinds of cross-validated figures, each labelled, and the reference outputs written at export
are reproduced by the field runtime (runtime.dsp features, runtime.inference crops, ONNX Runtime)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[train,export]'); export needs it")
pytest.importorskip("onnx", reason="onnx is not installed (pip install -e '.[export]')")

from export.cli import main as pcg_export  # noqa: E402
from runtime.dsp import assemble_patient, compute_features  # noqa: E402
from runtime.formats.wav import read_wav  # noqa: E402
from runtime.inference import Model  # noqa: E402
from tests.trainer_fixtures import write_physionet_folder  # noqa: E402
from trainer.crossval import main as pcg_train  # noqa: E402

REFERENCE_IDS = ["a0000", "a0003", "b0001", "b0004"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 2-fold and a leave-one-database-out run of one configuration, and a LODO run of another."""
    root = tmp_path_factory.mktemp("export-reference")
    data = write_physionet_folder(root / "pn16", {"training-a": 8, "training-b": 8}, seed=5)
    common = ["--data", str(data), "--model", "primary", "--epochs", "1", "--eval-crops", "2", "--cache", str(root / "cache"), "--quiet"]
    made = {}
    for name, extra in (("kfold", ["--folds", "2"]), ("lodo", ["--folds", "lodo"]), ("lodo-other", ["--folds", "lodo", "--seed", "1"])):
        assert pcg_train([*common, *extra, "--out", str(root / name)]) == 0
        made[name] = root / name
    return root, data, made


@pytest.fixture(scope="module")
def exported(runs):
    root, _, made = runs
    out = root / "exported" / "model.onnx"
    status = pcg_export([str(made["kfold"]), "--out", str(out), "--cache", str(root / "cache"), "--lodo-run", str(made["lodo"]),
                         "--reference-ids", ",".join(REFERENCE_IDS)])
    return status, out


def test_manifest_carries_out_of_fold_and_leave_one_database_out_figures_labelled(exported, runs):
    status, out = exported
    assert status == 0
    manifest = Model.load(out).manifest
    lodo_run = json.loads((runs[2]["lodo"] / "metrics.json").read_text())
    assert manifest.metrics["measured_as"].startswith("out-of-fold (2-fold")
    block = manifest.metrics["leave_one_database_out"]
    assert block["measured_as"].startswith("leave-one-database-out")
    assert block["pooled"]["auroc"] == pytest.approx(lodo_run["summary"]["pooled"]["auroc"])
    assert set(block["by_group"]) == set(lodo_run["summary"]["by_group"])
    assert block["run"] == str(runs[2]["lodo"])
    kfold_run = json.loads((runs[2]["kfold"] / "metrics.json").read_text())
    # training, leave-one-database-out, export (pcg-train records its process's command line: pytest's here)
    assert manifest.commands[:2] == (kfold_run["settings"]["command"], lodo_run["settings"]["command"])
    assert manifest.commands[2].startswith("pcg-export ") and "--lodo-run" in manifest.commands[2]


def test_reference_outputs_are_reproduced_by_the_field_runtime(exported, runs):
    status, out = exported
    assert status == 0
    reference = json.loads(out.with_name("model.reference.json").read_text())
    model = Model.load(out)
    assert reference["model_graph_sha256"] == model.manifest.graph_sha256
    assert [r["id"] for r in reference["recordings"]] == REFERENCE_IDS
    for row in reference["recordings"]:
        audio = read_wav(runs[1] / row["group"] / f"{row['id']}.wav")
        tensor = assemble_patient([("Phc", 0, compute_features(audio, model.frontend))], model.frontend)
        assert model.predict(tensor).probability == pytest.approx(row["probability"], abs=reference["tolerance"])


def test_a_lodo_run_of_other_settings_or_not_lodo_is_refused(runs, capsys):
    root, _, made = runs
    out = root / "refused" / "model.onnx"
    assert pcg_export([str(made["kfold"]), "--out", str(out), "--cache", str(root / "cache"), "--lodo-run", str(made["lodo-other"])]) == 2
    assert "its train settings differ" in capsys.readouterr().err
    assert pcg_export([str(made["kfold"]), "--out", str(out), "--cache", str(root / "cache"), "--lodo-run", str(made["kfold"])]) == 2
    assert "not --folds lodo" in capsys.readouterr().err


def test_lodo_runs_of_other_seeds_are_recorded_as_the_seed_spread(runs, capsys):
    root, _, made = runs
    out = root / "seeds" / "model.onnx"
    assert pcg_export([str(made["kfold"]), "--out", str(out), "--cache", str(root / "cache"), "--lodo-run", str(made["lodo"]),
                       "--lodo-seed-run", str(made["lodo-other"])]) == 0
    spread = Model.load(out).manifest.metrics["leave_one_database_out"]["seed_spread"]
    aurocs = [json.loads((made[n] / "metrics.json").read_text())["summary"]["pooled"]["auroc"] for n in ("lodo", "lodo-other")]
    assert [s["seed"] for s in spread["seeds"]] == [0, 1]
    assert [s["auroc"] for s in spread["seeds"]] == pytest.approx(aurocs)
    assert spread["pooled_auroc_min"] == pytest.approx(min(aurocs)) and spread["pooled_auroc_max"] == pytest.approx(max(aurocs))
    # a seed run is still refused when anything but the seed differs, and needs --lodo-run
    assert pcg_export([str(made["kfold"]), "--out", str(out), "--cache", str(root / "cache"), "--lodo-run", str(made["lodo"]),
                       "--lodo-seed-run", str(made["kfold"])]) == 2
    assert "not --folds lodo" in capsys.readouterr().err
    assert pcg_export([str(made["kfold"]), "--out", str(out), "--lodo-seed-run", str(made["lodo-other"])]) == 2
    assert "needs --lodo-run" in capsys.readouterr().err


def test_unknown_reference_ids_are_refused(runs, capsys):
    root, _, made = runs
    out = root / "refused-ids" / "model.onnx"
    assert pcg_export([str(made["kfold"]), "--out", str(out), "--cache", str(root / "cache"), "--reference-ids", "a0000,z9999"]) == 2
    assert "z9999 not among the usable patients" in capsys.readouterr().err


def test_settings_an_older_run_did_not_record_compare_as_the_trainers_defaults(runs):
    from export.manifest import _comparable

    settings = json.loads((runs[2]["lodo"] / "metrics.json").read_text())["settings"]
    older = json.loads(json.dumps(settings))
    del older["train"]["seed"], older["model"]["dropout"]  # as if added to the trainer after the run (both at their defaults)
    newer = json.loads(json.dumps(settings))
    newer["model"]["retired_option"] = False  # a field the current trainer no longer knows
    assert _comparable(older) == (_comparable(settings)[0], set())
    assert _comparable(newer) == (_comparable(settings)[0], {"model.retired_option"})
    changed = json.loads(json.dumps(older))
    changed["train"]["seed"] = 4  # a recorded non-default value still differs
    assert _comparable(changed)[0]["train"] != _comparable(settings)[0]["train"]
