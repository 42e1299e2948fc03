"""Patient tensor (contract 2): fixed site order, masks, the repeat rule, padding and batching."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from runtime.dsp import FrontEndConfig, assemble_patient, stack_patients
from runtime.sites import SITES

CONFIG = FrontEndConfig()


def feats(n_frames: int, value: float) -> np.ndarray:
    return np.full((CONFIG.n_freq, n_frames), value, dtype=np.float32)


def test_sites_land_in_the_fixed_order_and_absent_sites_are_masked_zeros():
    patient = assemble_patient([("MV", 0, feats(10, 4.0)), ("AV", 0, feats(10, 1.0))], CONFIG)
    assert patient.x.shape == (len(SITES), 48, 10) and patient.x.dtype == np.float32
    assert patient.site_mask.tolist() == [True, False, False, True, False]
    assert np.all(patient.x[SITES.index("AV")] == 1.0)
    assert np.all(patient.x[SITES.index("MV")] == 4.0)
    assert not patient.x[[1, 2, 4]].any()
    assert not patient.time_mask[[1, 2, 4]].any()
    assert patient.sites_used == ("AV", "MV")
    assert patient.recordings_used == (("AV", 0), ("MV", 0))


def test_shorter_sites_are_zero_padded_and_masked():
    patient = assemble_patient([("AV", 0, feats(10, 1.0)), ("Phc", 0, feats(4, 2.0))], CONFIG)
    phc = SITES.index("Phc")
    assert patient.n_frames == 10
    assert patient.time_mask[phc].tolist() == [True] * 4 + [False] * 6
    assert np.all(patient.x[phc, :, :4] == 2.0) and not patient.x[phc, :, 4:].any()
    assert patient.time_mask[0].all()


def test_max_frames_keeps_the_start_of_each_recording():
    ramp = np.tile(np.arange(20, dtype=np.float32), (48, 1))
    patient = assemble_patient([("TV", 0, ramp), ("PV", 0, feats(3, 1.0))], CONFIG, max_frames=8)
    assert patient.n_frames == 8
    np.testing.assert_array_equal(patient.x[SITES.index("TV")], ramp[:, :8])
    assert patient.time_mask[SITES.index("PV")].tolist() == [True] * 3 + [False] * 5


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_repeat_rule_keeps_the_longest_recording_whatever_the_order(order):
    recordings = [("AV", 0, feats(5, 0.0)), ("AV", 1, feats(9, 1.0)), ("AV", 2, feats(7, 2.0))]
    patient = assemble_patient([recordings[i] for i in order], CONFIG)
    assert patient.recordings_used == (("AV", 1),)
    assert np.all(patient.x[0] == 1.0)


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0)])
def test_repeat_rule_breaks_ties_by_the_lowest_repeat(order):
    recordings = [("MV", 3, feats(6, 3.0)), ("MV", 1, feats(6, 1.0)), ("MV", 2, feats(6, 2.0))]
    patient = assemble_patient([recordings[i] for i in order], CONFIG)
    assert patient.recordings_used == (("MV", 1),)
    assert np.all(patient.x[SITES.index("MV")] == 1.0)


def test_recording_without_frames_counts_as_absent():
    patient = assemble_patient([("AV", 0, feats(0, 0.0)), ("PV", 0, feats(2, 1.0))], CONFIG)
    assert patient.site_mask.tolist() == [False, True, False, False, False]


@pytest.mark.parametrize(
    "site_features, message",
    [
        ([("XX", 0, feats(3, 0.0))], "unknown auscultation site"),
        ([("AV", 0, np.zeros((47, 3)))], r"expected \[48, frames\]"),
        ([("AV", 0, np.zeros(48))], r"expected \[48, frames\]"),
        ([], "no recordings"),
        ([("AV", 0, feats(0, 0.0))], "no recordings"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(site_features, message):
    with pytest.raises(ValueError, match=message):
        assemble_patient(site_features, CONFIG)


def test_stack_pads_patients_to_the_longest():
    short = assemble_patient([("AV", 0, feats(3, 1.0))], CONFIG)
    long = assemble_patient([("PV", 0, feats(7, 2.0)), ("Phc", 0, feats(5, 3.0))], CONFIG)
    x, site_mask, time_mask = stack_patients([short, long])
    assert x.shape == (2, len(SITES), 48, 7) and x.dtype == np.float32
    assert site_mask.tolist() == [[True, False, False, False, False], [False, True, False, False, True]]
    assert time_mask[0, 0].tolist() == [True] * 3 + [False] * 4
    np.testing.assert_array_equal(x[0, :, :, :3], short.x)
    assert not x[0, :, :, 3:].any()
    np.testing.assert_array_equal(x[1], long.x)
    np.testing.assert_array_equal(time_mask[1], long.time_mask)


def test_stack_refuses_mixed_frequency_sizes_and_empty_batches():
    ours = assemble_patient([("AV", 0, feats(3, 1.0))], CONFIG)
    other_cfg = FrontEndConfig(band_hz=(25.0, 200.0))
    other = assemble_patient([("AV", 0, np.zeros((other_cfg.n_freq, 3)))], other_cfg)
    with pytest.raises(ValueError, match="frequency sizes"):
        stack_patients([ours, other])
    with pytest.raises(ValueError, match="at least one"):
        stack_patients([])
