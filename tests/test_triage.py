"""runtime.triage: decisions at the manifest's operating points, RETAKE that keeps the probability,
what the model could not use, and per-site scoring: the bundled children's model fuses the sites and
reads the demographics; an audio-only model (trained here in seconds) scores each site alone."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from firmware_bridge.heart import HeartSoundGenerator, random_profile
from runtime.dsp import compute_features
from runtime.inference import Model
from runtime.metadata import METADATA_FEATURES
from runtime.quality import assess
from runtime.records import Audio, Demographics
from runtime.triage import Score, decide, model_limits, score_patient, score_site


@pytest.fixture(scope="module")
def model():
    return Model.load()


@pytest.fixture(scope="module")
def audio_only(tmp_path_factory):
    """An audio-only (primary) model trained on one-site PhysioNet-layout recordings, as the adult model
    was: it scores each site alone as an unknown location, and ignores the demographics."""
    pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[train,export]'); training needs it")
    pytest.importorskip("onnx", reason="onnx is not installed (pip install -e '.[export]')")
    from export.cli import main as pcg_export
    from tests.trainer_fixtures import write_physionet_folder
    from trainer.crossval import main as pcg_train

    root = tmp_path_factory.mktemp("audio-only")
    data = write_physionet_folder(root / "pn", {"training-a": 8, "training-b": 8}, seed=2)
    assert pcg_train(["--data", str(data), "--model", "primary", "--folds", "2", "--epochs", "1", "--eval-crops", "2",
                      "--cache", str(root / "cache"), "--out", str(root / "run"), "--quiet"]) == 0
    out = root / "primary.onnx"
    assert pcg_export([str(root / "run"), "--out", str(out), "--cache", str(root / "cache"), "--allow-weak-model"]) == 0
    return Model.load(out)


@pytest.fixture(scope="module")
def patient(model):
    profile = random_profile(np.random.default_rng(11), "Child")
    audio = {site: Audio(HeartSoundGenerator(profile, site, 4000, 11).read(40000), 4000) for site in ("AV", "PV", "MV")}
    features = {site: compute_features(a, model.frontend) for site, a in audio.items()}
    quality = {site: assess(a, site, model.frontend, features=features[site]) for site, a in audio.items()}
    return features, quality


def score(p: float) -> Score:
    return Score(p, math.log(p / (1 - p)), {"AV": p}, "site_probability")


def test_decision_follows_the_named_operating_point_at_its_threshold(model, patient):
    _, quality = patient
    manifest = model.manifest
    name = manifest.default_operating_point
    threshold = manifest.operating_points[name].threshold
    at = decide(score(threshold), quality, manifest, missing_sites=())
    below = decide(score(threshold * 0.99), quality, manifest, missing_sites=())
    assert (at.decision, below.decision) == ("REFER", "NO_REFER")
    assert at.operating_point == name and at.threshold == threshold and "refer to a specialist" in at.reason
    with pytest.raises(ValueError, match="not in the model's manifest"):
        decide(score(0.5), quality, manifest, "no_such_point")


def test_retake_names_the_sites_and_still_carries_the_probability(model, patient):
    _, quality = patient
    bad = dataclasses.replace(quality["PV"], ok=False, reasons=("clipping",), messages=("signal clipped 4.0% of the time",))
    result = decide(score(0.9), {**quality, "PV": bad}, model.manifest, missing_sites=("TV",))
    assert result.decision == "RETAKE" and result.probability == 0.9
    assert "retake PV: signal clipped" in result.reason and "TV was not recorded" in result.reason
    assert result.quality["PV"]["reasons"] == ["clipping"]
    no_model = decide(None, quality, None)
    assert no_model.decision is None and no_model.probability is None and "no model" in no_model.reason


def test_a_site_beyond_its_retakes_is_cannot_assess_not_another_retake(model, patient):
    _, quality = patient
    bad = dataclasses.replace(quality["PV"], ok=False, reasons=("rubbing",), messages=("rubbing or movement noise",))
    result = decide(score(0.2), {**quality, "PV": bad}, model.manifest, missing_sites=("TV",), cannot_assess=("PV",))
    assert result.decision == "RETAKE" and result.cannot_assess == ("PV",) and result.probability == 0.2
    assert result.reason == ("cannot assess: refer for clinical auscultation (PV failed the quality check on every "
                             "retake; last: PV: rubbing or movement noise)")
    assert "retake PV" not in result.reason
    ordinary = decide(score(0.2), {**quality, "PV": bad}, model.manifest)
    assert ordinary.cannot_assess == () and ordinary.reason.startswith("retake PV: ")


def test_what_the_model_could_not_use_is_said(model, audio_only):
    assert any("without demographics" in n for n in model_limits(audio_only.manifest, Demographics(), ["AV"]))
    with_metadata = dataclasses.replace(audio_only.manifest, metadata_features=METADATA_FEATURES)
    notes = model_limits(with_metadata, Demographics(age_group="Child", weight_kg=20.0), ["AV", "Phc"])
    assert any(n.startswith("not given: sex, height;") for n in notes)
    assert any("unknown chest location only: AV were" in n for n in notes)  # Phc is what it was trained on
    children = model_limits(model.manifest, Demographics(age_group="Child", weight_kg=20.0), ["AV", "PV", "TV", "MV"])
    assert any(n.startswith("not given: sex, height") for n in children)  # the bundled model reads them
    assert not any("without demographics" in n or "unknown chest location" in n for n in children)


def test_the_bundled_model_fuses_the_sites_and_weighs_them(model, patient):
    features, _ = patient
    whole = score_patient(model, features, Demographics(age_group="Child"), model.frontend)
    assert whole.contribution_kind == "fusion_weight" and set(whole.site_contributions) == set(features)
    assert sum(whole.site_contributions.values()) == pytest.approx(1.0, abs=1e-4)
    assert set(whole.murmur) == {"Present", "Unknown", "Absent"}


def test_sites_scored_while_recording_give_the_same_patient_score(audio_only, patient):
    model = audio_only
    features, _ = patient
    demo = Demographics(age_group="Child")
    whole = score_patient(model, features, demo, model.frontend)
    early = {site: score_site(model, f, demo, model.frontend) for site, f in list(features.items())[:2]}
    pipelined = score_patient(model, features, demo, model.frontend, scored=early)
    assert pipelined.probability == pytest.approx(whole.probability, abs=1e-6)
    assert whole.contribution_kind == "site_probability" and set(whole.site_contributions) == set(features)
    logits = [math.log(p / (1 - p)) for p in whole.site_contributions.values()]
    assert whole.logit == pytest.approx(float(np.mean(logits)), abs=1e-5)  # the mean of the sites' logits


def test_a_patient_from_a_group_the_model_barely_saw_gets_a_warning(model):
    """The children's model saw 6 neonates, no young adult and 40 pregnant patients of 628 (CirCor's
    shared part): a neonate, an adult or (with fewer pregnant patients) a pregnant patient is warned about."""
    population = {"patients": 628, "age_group": {"Neonate": 6, "Infant": 82, "Child": 442, "Adolescent": 55, "not given": 43},
                  "sex": {"Female": 326, "Male": 302}, "pregnant": 12}
    manifest = dataclasses.replace(model.manifest, training_data={**model.manifest.training_data, "population": population})
    sites = ["AV", "PV", "TV", "MV"]

    def warnings(demographics):
        return [n for n in model_limits(manifest, demographics, sites) if n.startswith("outside the population")]

    assert warnings(Demographics(age_group="Child")) == []
    (neonate,) = warnings(Demographics(age_group="Neonate"))
    assert "only 6 neonate patients among its 628" in neonate and "rely on clinical auscultation" in neonate
    (adult,) = warnings(Demographics(age_group="Young adult", sex="Female"))
    assert "no young adult patients among its 628" in adult
    (pregnant,) = warnings(Demographics(age_group="Adolescent", sex="Female", pregnant=True))
    assert "only 12 pregnant patients" in pregnant
    assert warnings(Demographics()) == []  # nothing known, nothing claimed
    counted = {k: v for k, v in model.manifest.training_data.items() if k != "population"}
    uncounted = dataclasses.replace(model.manifest, training_data=counted)
    assert [n for n in model_limits(uncounted, Demographics(age_group="Neonate"), sites)
            if n.startswith("outside")] == []  # a manifest without population counts says nothing


def test_warming_up_a_model_changes_no_prediction(model, audio_only, patient):
    """A screening box warms its model up at start (Model.warm_up: one run on silence shaped like a
    screening, so the first child's decision is not the slowest); it must leave every output as it was."""
    features, _ = patient
    demo = Demographics(age_group="Child")
    for m in (model, audio_only):
        before = score_patient(m, features, demo, m.frontend)
        m.warm_up()
        after = score_patient(m, features, demo, m.frontend)
        assert after.probability == before.probability and after.site_contributions == before.site_contributions
