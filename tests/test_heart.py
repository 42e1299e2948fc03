"""The physiological heart-sound model: timing, murmurs, noise, streaming and determinism."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from firmware_bridge import heart
from firmware_bridge.heart import HeartProfile, HeartSoundGenerator, Murmur, random_profile, synthesize, to_pcm16
from runtime.records import AGE_GROUPS
from runtime.sites import SITES

RATE_HZ = 4000


def _states(segments, n_samples: int) -> np.ndarray:
    """The state of every sample, [n_samples]."""
    states = np.zeros(n_samples, dtype=int)
    for start_s, end_s, state in segments:
        states[int(np.ceil(start_s * RATE_HZ)) : int(np.ceil(end_s * RATE_HZ))] = state
    return states


def _band_energy(x: np.ndarray, low_hz: float, high_hz: float) -> np.ndarray:
    """x band-passed (FFT brick wall) and squared, [len(x)]."""
    spectrum = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1.0 / RATE_HZ)
    spectrum[(f < low_hz) | (f > high_hz)] = 0
    return np.fft.irfft(spectrum, n=len(x)) ** 2


def _quiet(profile: HeartProfile) -> HeartProfile:
    return dataclasses.replace(profile, breath_level=0.002, ambient_level=0.0, hum_level=0.0, contact_rate_hz=0.0)


def test_vocabularies_match_the_runtime_data_model():
    assert heart.AGE_GROUPS == AGE_GROUPS
    assert heart.SITES == SITES


def test_heart_model_imports_only_stdlib_and_numpy():
    code = (
        "import sys, firmware_bridge.heart; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('scipy', 'torch', 'runtime', 'trainer')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("age_group", AGE_GROUPS)
def test_segmentation_covers_the_signal_in_cycle_order(age_group):
    profile = random_profile(np.random.default_rng(3), age_group)
    samples, segments = synthesize(profile, "MV", 12.0, RATE_HZ, np.random.default_rng(4))
    assert len(samples) == 12 * RATE_HZ
    assert segments[0].start_s == 0.0 and segments[-1].end_s == pytest.approx(12.0)
    for previous, current in zip(segments, segments[1:]):
        assert current.start_s == pytest.approx(previous.end_s)
        assert current.state == previous.state % 4 + 1
    assert all(s.end_s > s.start_s for s in segments)
    assert {s.state for s in segments} == {1, 2, 3, 4}


@pytest.mark.parametrize("age_group", AGE_GROUPS)
def test_heart_rate_from_s1_onsets_matches_the_profile_and_the_age_group(age_group):
    rng = np.random.default_rng(11)
    profile = random_profile(rng, age_group)
    low, high = heart.normal_heart_rate_range(age_group)
    assert low <= profile.heart_rate_bpm <= high
    _, segments = synthesize(profile, "TV", 30.0, RATE_HZ, rng)
    onsets = np.array([s.start_s for s in segments if s.state == 1 and s.start_s > 0])
    measured_bpm = 60.0 / np.mean(np.diff(onsets))
    assert measured_bpm == pytest.approx(profile.heart_rate_bpm, rel=0.03)
    # Beat-to-beat variability is there, but small.
    rr = np.diff(onsets)
    assert 0.002 < np.std(rr) / np.mean(rr) < 0.1


def test_pregnancy_shifts_the_normal_heart_rate_up():
    low, high = heart.normal_heart_rate_range("Young adult")
    assert heart.normal_heart_rate_range("Young adult", pregnant=True) == (low + 12.0, high + 12.0)
    rates = [random_profile(np.random.default_rng(i), "Young adult", pregnant=True).heart_rate_bpm for i in range(50)]
    assert min(rates) >= low + 12.0 and np.mean(rates) > (low + high) / 2 + 8.0


def test_heart_sounds_sit_where_the_segmentation_puts_them():
    profile = _quiet(random_profile(np.random.default_rng(5), "Child"))
    samples, segments = synthesize(profile, "MV", 15.0, RATE_HZ, np.random.default_rng(6))
    states = _states(segments, len(samples))
    power = {state: np.mean(samples[states == state] ** 2) for state in (1, 2, 3, 4)}
    assert power[1] > 5 * power[2] and power[1] > 5 * power[4]
    assert power[3] > 5 * power[2] and power[3] > 5 * power[4]


def test_s2_split_widens_on_inspiration_only_when_the_profile_says_so():
    def s2_length_range(inspiration_ms):
        profile = HeartProfile(heart_rate_bpm=70.0, rr_jitter_fraction=0.0, rsa_fraction=0.0,
                               s2_split_inspiration_ms=inspiration_ms)
        _, segments = synthesize(profile, "PV", 20.0, RATE_HZ, np.random.default_rng(1))
        lengths = [s.end_s - s.start_s for s in segments[1:-1] if s.state == 3]
        return max(lengths) - min(lengths)

    assert s2_length_range(0.0) < 0.002
    assert s2_length_range(30.0) > 0.02


@pytest.mark.parametrize(
    "murmur, band_hz",
    [
        (Murmur("Holosystolic", "Plateau", "High", "II/VI", "Blowing"), (250.0, 400.0)),
        (Murmur("Early-diastolic", "Decrescendo", "Medium", "II/IV", "Blowing"), (130.0, 230.0)),
        (Murmur("Mid-systolic", "Diamond", "Low", "I/VI", "Musical"), (70.0, 110.0)),
    ],
)
def test_murmur_adds_energy_in_its_band_during_its_phase_and_not_the_other(murmur, band_hz):
    base = _quiet(random_profile(np.random.default_rng(7), "Child"))
    field = "systolic_murmur" if murmur.systolic else "diastolic_murmur"
    with_murmur = dataclasses.replace(base, **{field: murmur, "murmur_sites": ("MV",), "most_audible_site": "MV"})
    clean, segments = synthesize(base, "MV", 15.0, RATE_HZ, np.random.default_rng(8))
    noisy, segments_m = synthesize(with_murmur, "MV", 15.0, RATE_HZ, np.random.default_rng(8))
    assert segments == segments_m
    states = _states(segments, len(clean))
    own, other = (2, 4) if murmur.systolic else (4, 2)
    # Exactly nothing changes outside the murmur's phase.
    assert np.array_equal(noisy[states == other], clean[states == other])
    assert np.array_equal(noisy[states == 1], clean[states == 1])
    band_clean, band_noisy = _band_energy(clean, *band_hz), _band_energy(noisy, *band_hz)
    assert band_noisy[states == own].sum() > 2 * band_clean[states == own].sum()
    # Its energy is concentrated in the band of its pitch.
    added = noisy - clean
    assert _band_energy(added, *band_hz).sum() > 0.4 * np.sum(added**2)


def _murmur_energy(murmur: Murmur, site: str, *, most_audible="MV", listed=("MV", "TV")) -> float:
    base = _quiet(random_profile(np.random.default_rng(9), "Adolescent"))
    with_murmur = dataclasses.replace(base, systolic_murmur=murmur, murmur_sites=listed, most_audible_site=most_audible)
    clean, _ = synthesize(base, site, 10.0, RATE_HZ, np.random.default_rng(10))
    noisy, _ = synthesize(with_murmur, site, 10.0, RATE_HZ, np.random.default_rng(10))
    return float(np.sum((noisy - clean) ** 2))


def test_a_higher_grade_means_a_louder_murmur():
    murmurs = [Murmur("Holosystolic", "Plateau", "Medium", grade, "Harsh") for grade in heart.SYSTOLIC_GRADES]
    energies = [_murmur_energy(murmur, "MV") for murmur in murmurs]
    assert energies[0] > 0
    assert energies[0] < 0.6 * energies[1] and energies[1] < 0.6 * energies[2]


def test_a_murmur_is_loudest_at_its_most_audible_site_and_absent_where_not_heard():
    murmur = Murmur("Holosystolic", "Plateau", "Medium", "II/VI", "Blowing")
    loudest, listed, elsewhere = (_murmur_energy(murmur, site) for site in ("MV", "TV", "AV"))
    assert loudest > 2 * listed > 0
    assert elsewhere == 0.0


@pytest.mark.parametrize("age_group", AGE_GROUPS)
def test_usable_recordings_peak_at_a_realistic_level_without_clipping(age_group):
    rng = np.random.default_rng(12)
    for _ in range(6):
        murmur = heart.random_murmur(rng, systolic=True) if rng.random() < 0.5 else None
        profile = random_profile(rng, age_group, systolic_murmur=murmur, s3=rng.random() < 0.3)
        site = str(rng.choice(SITES))
        samples, _ = synthesize(profile, site, 8.0, RATE_HZ, rng)
        peak = np.max(np.abs(samples))
        assert 0.15 < peak < 0.98, (profile, site, peak)
        assert np.mean(np.abs(samples) > 0.95) == 0.0


def test_unusable_recordings_are_clipped_flat_or_drowned():
    profile = random_profile(np.random.default_rng(13), "Child")
    clean, segments = synthesize(profile, "MV", 10.0, RATE_HZ, np.random.default_rng(14))
    rendered = {
        kind: synthesize(dataclasses.replace(profile, unusable=kind), "MV", 10.0, RATE_HZ, np.random.default_rng(14))
        for kind in heart.UNUSABLE_KINDS
    }
    for kind, (samples, kind_segments) in rendered.items():
        assert kind_segments == (heart.Interval(0.0, 10.0, 0),), kind
        assert np.all(np.abs(samples) <= 1.0)
    assert np.mean(np.abs(rendered["clipped"][0]) >= 1.0) > 0.005
    assert np.max(np.abs(rendered["flat"][0])) < 0.05
    # In the drowned one the heart sounds no longer stand out from the rest of the cycle.
    states = _states(segments, len(clean))

    def contrast(x):
        return np.mean(x[states == 1] ** 2) / np.mean(x[states == 4] ** 2)

    assert contrast(clean) > 5.0
    assert contrast(rendered["noise"][0]) < 1.5


def _sample_profile() -> HeartProfile:
    rng = np.random.default_rng(21)
    profile = random_profile(rng, "Infant", systolic_murmur=heart.random_murmur(rng, systolic=True), s4=True)
    return dataclasses.replace(profile, ambient_level=0.01, hum_level=0.004, contact_rate_hz=1.0)


def test_streaming_reads_of_any_size_concatenate_to_one_long_read():
    profile = _sample_profile()
    total = 3 * 4096 + 777
    one_read = HeartSoundGenerator(profile, "TV", RATE_HZ, seed=5).read(total)
    chunk_rng = np.random.default_rng(0)
    for _ in range(3):
        generator = HeartSoundGenerator(profile, "TV", RATE_HZ, seed=5)
        parts, have = [], 0
        while have < total:
            n = int(min(chunk_rng.choice([0, 1, 7, 160, 1000, 5000]), total - have))
            part = generator.read(n)
            assert part.dtype == np.int16 and part.shape == (n,)
            parts.append(part)
            have += n
        assert np.array_equal(np.concatenate(parts), one_read)
    # The stream is the int16 form of synthesize() with the same seed.
    samples, _ = synthesize(profile, "TV", total / RATE_HZ, RATE_HZ, np.random.default_rng(5))
    assert np.array_equal(to_pcm16(samples), one_read)


def test_the_stream_is_continuous_across_internal_blocks():
    generator = HeartSoundGenerator(_quiet(_sample_profile()), "TV", RATE_HZ, seed=2)
    x = generator.read(10 * 4096).astype(np.float64) / 32768.0
    steps = np.abs(np.diff(x))
    block_edges = np.arange(4096, len(x), 4096) - 1
    assert np.max(steps[block_edges]) < 4 * np.percentile(steps, 99.9)


def test_same_seed_gives_the_same_samples_and_a_different_seed_does_not():
    profile = _sample_profile()
    a = HeartSoundGenerator(profile, "AV", RATE_HZ, seed=1).read(20000)
    b = HeartSoundGenerator(profile, "AV", RATE_HZ, seed=1).read(20000)
    c = HeartSoundGenerator(profile, "AV", RATE_HZ, seed=2).read(20000)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    generator = HeartSoundGenerator(profile, "AV", RATE_HZ, seed=1)
    generator.read(1234)
    generator.reset()
    assert np.array_equal(generator.read(20000), a)


def test_invalid_descriptions_are_refused_with_the_allowed_values():
    with pytest.raises(ValueError, match="I/IV"):
        Murmur("Early-diastolic", "Plateau", "Low", "II/VI", "Blowing")
    with pytest.raises(ValueError, match="diastolic timing"):
        HeartProfile(heart_rate_bpm=80.0, systolic_murmur=Murmur("Holodiastolic", "Plateau", "Low", "I/IV", "Harsh"))
    with pytest.raises(ValueError, match="expected one of AV, PV, TV, MV, Phc"):
        HeartSoundGenerator(HeartProfile(heart_rate_bpm=80.0), "XX", RATE_HZ, seed=0)
