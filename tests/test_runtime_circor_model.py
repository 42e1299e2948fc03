"""The runtime with a model of the other kind than the bundled one: a murmur head on the hypernetwork
path, trained by pcg-train on a CirCor-layout folder with all four sites and demographics (seconds),
exported by pcg-export, then used by `pcg-runtime triage` (murmur columns, scored by pcg-eval) and by
a live screening through the virtual stethoscope (sites fused by the model, demographics used)."""

from __future__ import annotations

import contextlib
import csv
import io
import json

import numpy as np
import pytest

pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[train,export]'); training needs it")
pytest.importorskip("onnx", reason="onnx is not installed (pip install -e '.[export]')")

from export.cli import main as pcg_export  # noqa: E402
from firmware_bridge.emulator import Emulator  # noqa: E402
from runtime.cli import main as pcg_runtime  # noqa: E402
from runtime.inference import Model  # noqa: E402
from runtime.records import Demographics  # noqa: E402
from runtime.screening import ScreeningBox  # noqa: E402
from runtime.sites import GUIDED_SITES  # noqa: E402
from runtime.store import Store  # noqa: E402
from tests.trainer_fixtures import write_circor_folder  # noqa: E402
from trainer.crossval import main as pcg_train  # noqa: E402
from trainer.evaluate import main as pcg_eval  # noqa: E402


@pytest.fixture(scope="module")
def circor_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("circor-model")
    data = write_circor_folder(root / "circor", n_patients=16, seed=3, sites=GUIDED_SITES)
    assert pcg_train(["--data", str(data), "--task", "murmur", "--model", "hyper", "--folds", "2", "--epochs", "1",
                      "--eval-crops", "2", "--cache", str(root / "cache"), "--out", str(root / "run"), "--quiet"]) == 0
    out = root / "model" / "murmur-hyper.onnx"
    assert pcg_export([str(root / "run"), "--out", str(out), "--cache", str(root / "cache")]) == 0
    return data, out


def test_triage_of_a_circor_folder_writes_the_murmur_columns_that_pcg_eval_scores(circor_model, tmp_path):
    data, model_path = circor_model
    out = tmp_path / "results.csv"
    assert pcg_runtime(["triage", str(data), "--model", str(model_path), "--out", str(out), "--quiet", "--allow-unsigned-model"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 16
    assert list(rows[0]) == ["patient_id", "outcome_probability", "decision", "reason",
                             "murmur_present", "murmur_unknown", "murmur_absent"]
    for row in rows:
        murmur = [float(row[k]) for k in ("murmur_present", "murmur_unknown", "murmur_absent")]
        assert sum(murmur) == pytest.approx(1.0, abs=1e-4)
        # the referral probability of a murmur model is P(Present) + P(Unknown), calibrated
        assert 0.0 <= float(row["outcome_probability"]) <= 1.0
    assert pcg_eval([str(out), str(data), "--json", str(tmp_path / "scores.json")]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["outcome"]["n"] == 16 and "murmur" in scores


def test_live_screening_fuses_the_sites_and_uses_the_demographics(circor_model, tmp_path):
    _, model_path = circor_model
    model = Model.load(model_path)
    assert model.uses_metadata and set(GUIDED_SITES) <= set(model.sites_trained)
    with Emulator(link=tmp_path / "steth", seed=4, speed=20) as emulator, Store.open(tmp_path / "db") as store:
        with ScreeningBox(emulator.path, store=store, model=model, seconds_per_site=6.0) as box:
            box.connect()
            visit = box.begin_patient(Demographics(age_group="Child", sex="Female"), consent=True)
            for site in GUIDED_SITES:
                recording = box.record_site(visit, site)
                assert recording.prediction is None  # a fusing model scores the patient as a whole
            result = box.finish(visit)
        (stored,) = store.query("SELECT murmur FROM results")
    assert json.loads(stored[0]) == pytest.approx(result.murmur)  # the store keeps the murmur finding beside the outcome
    assert result.contribution_kind == "fusion_weight"
    assert sum(result.site_contributions.values()) == pytest.approx(1.0, abs=1e-4)
    assert set(result.murmur) == {"Present", "Unknown", "Absent"}
    assert any(note.startswith("not given: height, weight") for note in result.unused)
    assert not any("without demographics" in note for note in result.unused)
    # the demographics reach the model: an infant and an adolescent with the same audio score differently
    from runtime.triage import score_patient

    features = {site: r.features for site, r in visit.sites.items()}
    infant = score_patient(model, features, Demographics(age_group="Infant", height_cm=60.0), model.frontend)
    adolescent = score_patient(model, features, Demographics(age_group="Adolescent", height_cm=165.0), model.frontend)
    assert not np.isclose(infant.logit, adolescent.logit, atol=1e-7)


def test_the_terminal_prints_the_murmur_finding_next_to_the_outcome(circor_model, capsys):
    _, model_path = circor_model
    assert pcg_runtime(["--device", "sim", "--no-store", "--yes", "--speed", "50", "--seconds", "6", "--model", str(model_path),
                        "--allow-unsigned-model"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("murmur: most likely "))
    assert all(name in line for name in ("Present", "Unknown", "Absent")) and "%" in line


@pytest.fixture(scope="module")
def outcome_with_murmur_head(tmp_path_factory):
    """An outcome run and a murmur run on the same children, exported as one model (pcg-export --murmur-run)."""
    root = tmp_path_factory.mktemp("two-heads")
    data = write_circor_folder(root / "circor", n_patients=16, seed=7, sites=GUIDED_SITES)
    common = ["--data", str(data), "--model", "hyper", "--folds", "2", "--epochs", "1", "--eval-crops", "2",
              "--cache", str(root / "cache"), "--quiet"]
    assert pcg_train(common + ["--task", "outcome", "--out", str(root / "outcome")]) == 0
    assert pcg_train(common + ["--task", "murmur", "--seed", "1", "--out", str(root / "murmur")]) == 0
    out = root / "model" / "two-heads.onnx"
    assert pcg_export([str(root / "outcome"), "--murmur-run", str(root / "murmur"), "--out", str(out),
                       "--cache", str(root / "cache")]) == 0
    return root, data, out


def test_one_model_gives_the_outcome_decision_and_the_murmur_finding(outcome_with_murmur_head, tmp_path):
    root, data, model_path = outcome_with_murmur_head
    model = Model.load(model_path)
    manifest = model.manifest
    assert manifest.task == "outcome" and manifest.class_names["murmur"] == ["Present", "Unknown", "Absent"]
    rule = manifest.inference["murmur_head"]["rule"]
    assert "referral decision is the outcome head's alone" in rule and manifest.metrics["murmur_head"]["rule"] == rule
    assert "weighted_accuracy" in manifest.metrics["murmur_head"]["pooled"]["murmur"]
    assert sum("--task murmur" in c for c in manifest.commands) == 1
    population = manifest.training_data["population"]  # who it was trained on, for the runtime's warning
    assert population["patients"] == 16 and sum(population["age_group"].values()) == 16
    # the outcome output is exactly the outcome run's own export: the murmur head changes no decision
    alone = tmp_path / "outcome-only.onnx"
    assert pcg_export([str(root / "outcome"), "--out", str(alone), "--cache", str(root / "cache")]) == 0
    out = tmp_path / "two.csv"
    assert pcg_runtime(["triage", str(data), "--model", str(model_path), "--out", str(out), "--quiet",
                        "--allow-unsigned-model"]) == 0
    assert pcg_runtime(["triage", str(data), "--model", str(alone), "--out", str(tmp_path / "one.csv"), "--quiet",
                        "--allow-unsigned-model"]) == 0
    two, one = list(csv.DictReader(out.open())), list(csv.DictReader((tmp_path / "one.csv").open()))
    assert [r["decision"] for r in two] == [r["decision"] for r in one]
    assert [float(r["outcome_probability"]) for r in two] == pytest.approx([float(r["outcome_probability"]) for r in one],
                                                                            abs=1e-5)
    assert all(sum(float(r[k]) for k in ("murmur_present", "murmur_unknown", "murmur_absent")) == pytest.approx(1.0, abs=1e-4)
               for r in two)
    assert "murmur_present" not in one[0]


def test_a_murmur_run_that_cannot_join_is_refused(outcome_with_murmur_head, tmp_path, capsys):
    root, _, _ = outcome_with_murmur_head
    assert pcg_export([str(root / "outcome"), "--murmur-run", str(root / "outcome"), "--out", str(tmp_path / "x.onnx"),
                       "--cache", str(root / "cache")]) == 2
    assert "train it with pcg-train --task murmur" in capsys.readouterr().err
    assert pcg_export([str(root / "outcome"), "--murmur-run", str(root / "murmur"), "--lodo-run", str(root / "outcome"),
                       "--out", str(tmp_path / "y.onnx"), "--cache", str(root / "cache")]) == 2
    assert "neither --adapt-bn nor --lodo-run" in capsys.readouterr().err and not (tmp_path / "y.onnx").exists()


def test_int8_of_the_two_headed_model_checks_the_murmur_head_too(outcome_with_murmur_head):
    """pcg-export --int8 of an outcome run with --murmur-run: the parity report compares the murmur
    finding as well as the referral decision (16 patients here; the CLI asks for 100 to calibrate)."""
    from export.data import load_real_data
    from export.manifest import build_manifest
    from export.onnx_model import export_graph, with_manifest
    from export.parity import cpu_session, int8_report
    from export.quantize import CPU, quantize
    from export.source import load_source, with_murmur_head
    from trainer.inference import ensemble_thresholds

    root, data, _ = outcome_with_murmur_head
    source = with_murmur_head(load_source(root / "outcome"), root / "murmur")
    float_graph = export_graph(source, 17)
    float_bytes = with_manifest(float_graph, build_manifest(source, ("test",)))
    real = load_real_data(source, data, root / "cache", min_calibration=0)
    int8, description = quantize(float_graph, source, real.calibration, CPU, real.note)
    assert "murmur_probabilities" in [o.name for o in cpu_session(int8).get_outputs()]
    report = int8_report(float_bytes, with_manifest(int8, build_manifest(source, ("test",), variant=description)), real,
                         ensemble_thresholds(source.checkpoints), repeats=2)
    murmur = report["murmur_head"]
    assert 0.0 <= murmur["class_agreement"] <= 1.0 and murmur["max_abs_probability_difference"] >= 0.0
    assert report["targets"]["murmur_class_agreement"] == 0.99
    assert report["passed"] == (abs(report["auroc_difference"]) <= 0.005 and murmur["class_agreement"] >= 0.99
                                and min(p["triage_agreement"] for p in report["operating_points"].values()) >= 0.99)


def test_a_programme_sets_its_operating_point_in_the_box_configuration(outcome_with_murmur_head, tmp_path):
    _, _, model_path = outcome_with_murmur_head
    manifest = Model.load(model_path).manifest
    for prevalence in (10, 5):  # cost-optimal points for a community programme's prevalence, from out-of-fold predictions
        point = manifest.operating_points[f"cost_optimal_prevalence_{prevalence}"]
        assert 0.0 <= point.sensitivity <= 1.0 and f"{prevalence} % abnormal" in point.description
    curve = manifest.metrics["operating_curve"]
    assert [c["target_sensitivity"] for c in curve][:2] == [0.5, 0.51] and all(c["sensitivity"] >= c["target_sensitivity"]
                                                                                for c in curve)
    config = tmp_path / "box.json"
    config.write_text(json.dumps({"allow_unsigned_models": True, "operating_point": {"target_sensitivity": 0.9}}))
    config.chmod(0o644)
    expected = max(c["threshold"] for c in curve if c["sensitivity"] >= 0.9)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert pcg_runtime(["--device", "sim", "--no-store", "--yes", "--json", "--speed", "50", "--seconds", "6",
                            "--model", str(model_path), "--config", str(config)]) == 0
    result = json.loads(buffer.getvalue())["result"]
    assert result["operating_point"] == "programme" and result["threshold"] == pytest.approx(expected)
    config.write_text(json.dumps({"allow_unsigned_models": True, "operating_point": "cost_optimal_prevalence_5"}))
    assert pcg_runtime(["model", "--model", str(model_path), "--config", str(config)]) == 0
    config.write_text(json.dumps({"allow_unsigned_models": True, "operating_point": "no_such_point"}))
    assert pcg_runtime(["model", "--model", str(model_path), "--config", str(config)]) == 2
    config.write_text(json.dumps({"operating_point": {"target_sensitivity": 1.5}}))
    assert pcg_runtime(["model", "--model", str(model_path), "--config", str(config)]) == 2
