"""The bundled default model (runtime/models/default.onnx), the children's model: it loads through
runtime.inference, its manifest says what it is, how it was made and measured and on whom, the field
runtime reproduces the outputs recorded at export on real CirCor children (outcome and murmur), and a
prediction needs neither torch, scipy nor onnx. Rebuilt by scripts/build_default_model.sh."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime

import pytest

from runtime.batch import longest_per_site
from runtime.dsp import compute_features
from runtime.formats import load_dataset
from runtime.inference import Model, default_model_path
from runtime.manifest import DISCLAIMER
from runtime.records import MURMUR_CLASSES, Demographics
from runtime.triage import model_summary, outside_population, score_patient

REFERENCE = default_model_path().with_name("default.reference.json")
# committed to git: two 5-fold float ensembles (outcome and murmur) are ~2.7 MB
MAX_BYTES = 4_000_000
AGE_GROUPS = {"Neonate", "Infant", "Child", "Adolescent", "Young adult"}


@pytest.fixture(scope="module")
def model():
    return Model.load()


def test_the_bundled_model_is_the_default_and_small(model):
    assert model.path == default_model_path() and model.path.is_file()
    assert model.path.stat().st_size <= MAX_BYTES
    assert model.provider == "CPUExecutionProvider" or model.provider.endswith("ExecutionProvider")


def test_it_is_the_children_s_model_with_demographics_and_a_murmur_head(model):
    m = model.manifest
    assert m.task == "outcome" and model.uses_metadata  # the hypernetwork reads the demographics
    assert m.class_names["murmur"] == list(MURMUR_CLASSES)
    assert "referral decision is the outcome head's alone" in m.inference["murmur_head"]["rule"]
    assert m.inference["ensemble"]["models"] == 5 and m.inference["murmur_head"]["folds"] == 5
    assert {"AV", "PV", "TV", "MV"} <= set(model.sites_trained)


def test_manifest_states_data_folds_population_date_and_commands(model):
    m = model.manifest
    data = m.training_data
    assert data["dataset"].endswith("circor") and data["format"] == "circor" and data["unit"] == "patient"
    assert data["folds"].endswith("circor-p0.json") and len(data["fold_models"]) == 5 and data["patients"] > 500
    population = data["population"]  # the runtime warns about a child from a group the model barely saw
    assert population["patients"] == data["patients"] and set(population["age_group"]) - {"not given"} <= AGE_GROUPS
    datetime.strptime(m.created_utc, "%Y-%m-%dT%H:%M:%SZ")
    assert m.code_version and m.code_version != "unknown"
    outcome, murmur = ([c for c in m.commands if "trainer" in c and f"--task {task}" in c] for task in ("outcome", "murmur"))
    assert len(outcome) == 1 and "--model hyper" in outcome[0] and "--extra-data" in outcome[0]
    assert len(murmur) == 1 and "--model hyper" in murmur[0]
    (export,) = [c for c in m.commands if c.startswith("pcg-export ")]
    assert "--murmur-run" in export and "--reference-ids" in export
    assert m.disclaimer == DISCLAIMER


def test_manifest_metrics_are_the_shipped_ensembles_out_of_fold_figures(model):
    metrics = model.manifest.metrics
    assert metrics["measured_as"].startswith("out-of-fold")
    assert 0.5 < metrics["pooled"]["auroc"] <= 1.0 and len(metrics["pooled"]["auroc_ci"]) == 2
    assert set(metrics["folds"]) == {f"fold{k}" for k in range(1, 6)}
    murmur = metrics["murmur_head"]
    assert murmur["measured_as"].startswith("out-of-fold") and 0.0 < murmur["pooled"]["murmur"]["weighted_accuracy"] <= 1.0
    # what every result shows is the outcome head's figure; the murmur head's is named as such
    shown = model_summary(model.manifest)["auroc"]
    assert shown["out-of-fold"] == round(metrics["pooled"]["auroc"], 3)
    assert shown["murmur head, out-of-fold"] == round(murmur["pooled"]["auroc"], 3)


def test_operating_points_include_a_screening_programme_s_prevalence(model):
    points = model.manifest.operating_points
    assert {"cost_optimal", "high_sensitivity", "cost_optimal_prevalence_10", "cost_optimal_prevalence_5"} <= set(points)
    assert model.manifest.default_operating_point == "cost_optimal"
    for point in points.values():
        assert 0.0 < point.threshold < 1.0 and point.description
        assert 0.0 <= point.sensitivity <= 1.0 and 0.0 <= point.specificity <= 1.0
    assert points["high_sensitivity"].sensitivity >= points["cost_optimal"].sensitivity


def test_an_adult_or_a_neonate_gets_the_outside_the_population_warning(model):
    manifest = model.manifest
    assert outside_population(manifest, Demographics(age_group="Child", sex="Female")) == []
    assert outside_population(manifest, Demographics(age_group="Neonate"))  # 6 neonates among the shared children
    assert outside_population(manifest, Demographics(age_group="Young adult"))


def test_the_runtime_reproduces_the_reference_outputs_on_shared_children(model, circor_root):
    reference = json.loads(REFERENCE.read_text())
    assert reference["model_graph_sha256"] == model.manifest.graph_sha256
    rows = reference["recordings"]
    assert len(rows) >= 20 and {r["label"] for r in rows} == {"Abnormal", "Normal"}
    patients = {p.patient_id: p for p in load_dataset(circor_root).patients}
    for row in rows:
        patient = patients[row["id"]]
        audio, errors = longest_per_site(patient, model.frontend)
        assert not errors
        features = {site: compute_features(a, model.frontend) for site, a in audio.items()}
        score = score_patient(model, features, patient.demographics, model.frontend)
        assert score.probability == pytest.approx(row["probability"], abs=1e-4), row["id"]
        assert score.logit == pytest.approx(row["logit"], abs=1e-3), row["id"]
        assert score.murmur == pytest.approx(row["murmur"], abs=1e-4), row["id"]
        assert sum(score.site_contributions.values()) == pytest.approx(1.0, abs=1e-4)


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
