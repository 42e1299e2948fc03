"""The bundled default model (runtime/models/default.onnx): it loads through runtime.inference, its
manifest says what it is and how it was made and measured, the field runtime reproduces the outputs
recorded at export on real recordings, and a prediction needs neither torch, scipy nor onnx."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime

import pytest

from runtime.dsp import assemble_patient, compute_features
from runtime.formats.wav import read_wav
from runtime.inference import Model, default_model_path
from runtime.manifest import DISCLAIMER

REFERENCE = default_model_path().with_name("default.reference.json")
MAX_BYTES = 2_000_000  # committed to git: a 5-fold float ensemble is ~1.3 MB


@pytest.fixture(scope="module")
def model():
    return Model.load()


def test_the_bundled_model_is_the_default_and_small(model):
    assert model.path == default_model_path() and model.path.is_file()
    assert model.path.stat().st_size <= MAX_BYTES
    assert model.provider == "CPUExecutionProvider" or model.provider.endswith("ExecutionProvider")


def test_manifest_states_data_folds_date_and_commands(model):
    m = model.manifest
    data = m.training_data
    assert data["dataset"].endswith("physionet2016") and data["format"] == "physionet2016"
    assert data["folds"] == "5" and len(data["fold_models"]) == 5 and data["patients"] > 1000
    assert m.inference["ensemble"]["models"] == 5
    datetime.strptime(m.created_utc, "%Y-%m-%dT%H:%M:%SZ")
    assert m.code_version and m.code_version != "unknown"
    trainings = [c for c in m.commands if "trainer" in c and "--data" in c]
    assert [("--folds 5" in c, "--folds lodo" in c) for c in trainings] == [(True, False), (False, True)]
    (export,) = [c for c in m.commands if c.startswith("pcg-export ")]
    assert "--lodo-run" in export and "--reference-ids" in export
    assert m.disclaimer == DISCLAIMER


def test_manifest_metrics_are_labelled_out_of_fold_and_leave_one_database_out(model):
    metrics = model.manifest.metrics
    assert metrics["measured_as"].startswith("out-of-fold (5-fold")
    lodo = metrics["leave_one_database_out"]
    assert lodo["measured_as"].startswith("leave-one-database-out")
    for block in (metrics, lodo):
        assert 0.0 <= block["pooled"]["auroc"] <= 1.0 and len(block["pooled"]["auroc_ci"]) == 2
        assert set(block["by_group"]) == {"training-a", "training-c", "training-d", "training-e"}
    assert set(lodo["folds"]) == {"training-a", "training-c", "training-d", "training-e"}


def test_manifest_operating_points_have_thresholds_and_cross_validated_figures(model):
    points = model.manifest.operating_points
    assert set(points) == {"cost_optimal", "high_sensitivity"} and model.manifest.default_operating_point == "cost_optimal"
    for point in points.values():
        assert 0.0 < point.threshold < 1.0 and point.description
        assert 0.0 <= point.sensitivity <= 1.0 and 0.0 <= point.specificity <= 1.0


def test_the_runtime_reproduces_the_reference_outputs_on_shared_recordings(model, physionet2016_root):
    reference = json.loads(REFERENCE.read_text())
    assert reference["model_graph_sha256"] == model.manifest.graph_sha256
    rows = reference["recordings"]
    assert len(rows) >= 20 and {r["label"] for r in rows} == {"Abnormal", "Normal"}
    tensors = []
    for row in rows:
        audio = read_wav(physionet2016_root / row["group"] / f"{row['id']}.wav")
        tensors.append(assemble_patient([("Phc", 0, compute_features(audio, model.frontend))], model.frontend))
    for row, prediction in zip(rows, model.predict_batch(tensors)):
        assert prediction.probability == pytest.approx(row["probability"], abs=1e-4), row["id"]
        assert prediction.logit == pytest.approx(row["logit"], abs=1e-3), row["id"]
        assert prediction.site_contributions == {"Phc": pytest.approx(1.0)}


LEAN_PREDICTION = """
import json, sys
import numpy as np
from runtime.dsp import assemble_patient, features
from runtime.inference import Model
model = Model.load()
samples = (np.random.default_rng(0).normal(size=4000 * 12) * 3000).astype(np.int16)
tensor = assemble_patient([("AV", 0, features(samples, 4000, model.frontend))], model.frontend)
p = model.predict(tensor)
heavy = sorted(m for m in ("torch", "scipy", "onnx") if m in sys.modules)
print(json.dumps({"probability": p.probability, "heavy": heavy}))
"""


def test_a_prediction_imports_neither_torch_nor_scipy_nor_onnx():
    done = subprocess.run([sys.executable, "-c", LEAN_PREDICTION], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [] and 0.0 <= result["probability"] <= 1.0
