import math

import numpy as np
import pytest

from runtime.metadata import (
    METADATA_DIM,
    METADATA_FEATURES,
    MetadataStats,
    check_demographics,
    encode_batch,
    encode_metadata,
    sanitize_demographics,
)
from runtime.records import Demographics


def feature(vector, name):
    return vector[METADATA_FEATURES.index(name)]


def test_stats_come_from_the_given_records_only():
    stats = MetadataStats.fit([Demographics(height_cm=100, weight_kg=20), Demographics(height_cm=120, weight_kg=30)])
    assert stats.height_mean == pytest.approx(110.0)
    assert stats.height_std == pytest.approx(10.0)
    assert stats.weight_mean == pytest.approx(25.0)
    assert stats.weight_std == pytest.approx(5.0)


def test_stats_ignore_unknown_and_implausible_values():
    stats = MetadataStats.fit(
        [Demographics(height_cm=100), Demographics(height_cm=None), Demographics(height_cm=9000), Demographics(height_cm=120)]
    )
    assert stats.height_mean == pytest.approx(110.0)
    assert (stats.weight_mean, stats.weight_std) == (0.0, 1.0)


def test_full_record_encodes_one_hot_and_z_scores():
    stats = MetadataStats(height_mean=110, height_std=10, weight_mean=20, weight_std=4)
    v = encode_metadata(Demographics("Adolescent", "Female", 130.0, 16.0, True), stats)
    assert v.shape == (METADATA_DIM,) and v.dtype == np.float32
    assert feature(v, "age_adolescent") == 1 and feature(v, "age_child") == 0 and feature(v, "age_missing") == 0
    assert feature(v, "sex_female") == 1 and feature(v, "sex_male") == 0
    assert feature(v, "height_z") == pytest.approx(2.0) and feature(v, "height_missing") == 0
    assert feature(v, "weight_z") == pytest.approx(-1.0)
    assert feature(v, "pregnant") == 1 and feature(v, "pregnancy_missing") == 0


def test_unknown_fields_set_only_their_missing_indicators():
    v = encode_metadata(Demographics(), MetadataStats())
    missing = {n for n in METADATA_FEATURES if n.endswith("_missing")}
    assert {n for n, x in zip(METADATA_FEATURES, v) if x != 0} == missing


def test_absurd_values_are_reported_and_encoded_as_missing():
    demo = Demographics("Neonate", "Male", 500.0, float("nan"), True)
    problems = check_demographics(demo)
    assert any("height 500" in p for p in problems)
    assert any("weight nan" in p for p in problems)
    assert any("male" in p for p in problems)
    cleaned, reported = sanitize_demographics(demo)
    assert reported == problems
    assert (cleaned.height_cm, cleaned.weight_kg, cleaned.pregnant) == (None, None, None)
    assert cleaned.age_group == "Neonate" and cleaned.sex == "Male"
    v = encode_metadata(demo, MetadataStats())
    assert feature(v, "height_missing") == 1 and feature(v, "weight_missing") == 1
    assert np.all(np.isfinite(v))


def test_unknown_category_is_a_problem():
    assert check_demographics(Demographics(age_group="Toddler"))[0].startswith("age group 'Toddler'")
    assert check_demographics(Demographics("Child", "Female", 120, 25, False)) == []


def test_z_scores_are_clipped():
    v = encode_metadata(Demographics(height_cm=229), MetadataStats(height_mean=50, height_std=1))
    assert feature(v, "height_z") == pytest.approx(5.0)


def test_stats_json_round_trip_and_validation():
    stats = MetadataStats(1.5, 2.5, 3.5, 4.5)
    assert MetadataStats.from_dict(stats.to_dict()) == stats
    with pytest.raises(ValueError, match="keys"):
        MetadataStats.from_dict({"height_mean": 1})
    with pytest.raises(ValueError, match="positive"):
        MetadataStats.from_dict({**stats.to_dict(), "height_std": 0})


def test_batch_shape():
    assert encode_batch([], MetadataStats()).shape == (0, METADATA_DIM)
    batch = encode_batch([Demographics(), Demographics(sex="Male")], MetadataStats())
    assert batch.shape == (2, METADATA_DIM) and not math.isnan(batch.sum())


def test_height_and_weight_are_checked_against_the_age_group():
    """A neonate of 229 cm and 249 kg passes the absolute ranges but not its age group's."""
    problems = check_demographics(Demographics("Neonate", "Male", 229.0, 249.0, None))
    assert len(problems) == 2
    assert "height 229 cm is implausible for age group Neonate" in problems[0]
    assert "weight 249 kg is implausible for age group Neonate" in problems[1]
    assert check_demographics(Demographics("Adolescent", "Male", 229.0, 249.0, None)) == []
    assert check_demographics(Demographics(None, "Male", 229.0, 249.0, None)) == []  # unknown age: absolute range only


def test_the_age_group_ranges_hold_the_shared_children(circor_root):
    """Every CirCor record but two entry errors (a Child of 35 cm, another of 4.2 kg: a newborn's
    measures) is plausible for its age group; the trainer reports both as data problems."""
    from runtime.formats import load_dataset

    flagged = [(p.patient_id, problem) for p in load_dataset(circor_root).patients
               for problem in check_demographics(p.demographics) if "implausible for age group" in problem]
    assert len({patient for patient, _ in flagged}) == 2
    assert [problem.split(" (")[0] for _, problem in flagged] == [
        "height 35 cm is implausible for age group Child", "weight 4.2 kg is implausible for age group Child"]
