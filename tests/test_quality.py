"""The per-site quality gate: each check fails what it should, a good heart passes, streaming equals offline,
children's real recordings pass and the field's ways of spoiling them are caught."""

from __future__ import annotations

import collections
import json
import math
from dataclasses import replace
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.heart import random_profile, synthesize, to_pcm16
from runtime.dsp import FrontEndConfig, FrontEndStream, compute_features
from runtime.formats import FormatError, load_dataset, read_segmentation
from runtime.quality import REASONS, QualityMonitor, QualityThresholds, assess
from runtime.records import Audio

CONFIG = FrontEndConfig()
RATE_HZ = 4000


@lru_cache(maxsize=None)
def heart(seconds: float = 12.0, age_group: str = "Young adult", heart_rate_bpm: float = 72.0, seed: int = 0) -> Audio:
    """A clean simulated heart sound at the mitral site."""
    rng = np.random.default_rng(seed)
    profile = random_profile(rng, age_group, heart_rate_bpm=heart_rate_bpm)
    samples, _ = synthesize(profile, "MV", seconds, RATE_HZ, rng)
    return Audio(to_pcm16(samples), RATE_HZ)


def bursts(seconds: float, beats_per_minute: float, rate_hz: int = RATE_HZ) -> Audio:
    """S1-like decaying 60 Hz bursts at a fixed rate, with a little noise."""
    t = np.arange(int(seconds * rate_hz)) / rate_hz
    phase = t % (60.0 / beats_per_minute)
    signal = 0.3 * np.exp(-phase / 0.02) * np.sin(2 * np.pi * 60.0 * phase)
    signal += 0.005 * np.random.default_rng(1).standard_normal(len(t))
    return Audio(to_pcm16(signal), rate_hz)


@pytest.mark.parametrize(
    "age_group, bpm", [("Neonate", 150.0), ("Infant", 130.0), ("Child", 95.0), ("Young adult", 72.0), ("Young adult", 48.0)]
)
def test_a_clean_heart_passes_and_its_rate_is_measured(age_group, bpm):
    quality = assess(heart(12.0, age_group, bpm), "MV", CONFIG)
    assert quality.ok, quality.messages
    assert quality.reasons == quality.messages == ()
    assert quality.heart_rate_bpm == pytest.approx(bpm, abs=3.0)


def test_a_heart_driven_into_saturation_is_clipping():
    loud = np.clip(heart().samples.astype(np.int32) * 20, -32768, 32767).astype(np.int16)
    quality = assess(Audio(loud, RATE_HZ), "AV", CONFIG)
    assert "clipping" in quality.reasons and not quality.ok
    assert quality.clipped_fraction > 0.01
    assert f"{100 * quality.clipped_fraction:.1f}%" in quality.messages[quality.reasons.index("clipping")]


def test_a_clipped_sine_is_clipping():
    t = np.arange(10 * RATE_HZ) / RATE_HZ
    sine = to_pcm16(np.clip(2.0 * np.sin(2 * np.pi * 100 * t), -1, 1))
    assert "clipping" in assess(Audio(sine, RATE_HZ), "AV", CONFIG).reasons


def test_an_all_zero_line_is_flat():
    quality = assess(Audio(np.zeros(10 * RATE_HZ, np.int16), RATE_HZ), "AV", CONFIG)
    assert quality.reasons == ("flat",)
    assert quality.rms_dbfs == -math.inf and quality.peak_fraction == 0.0


def test_a_constant_offset_with_one_bit_of_dither_is_flat():
    samples = 1200 + np.random.default_rng(0).integers(0, 2, 10 * RATE_HZ)
    assert assess(Audio(samples.astype(np.int16), RATE_HZ), "AV", CONFIG).reasons == ("flat",)


def test_sensor_noise_alone_is_disconnected():
    noise = np.round(3.0 * np.random.default_rng(0).standard_normal(10 * RATE_HZ)).astype(np.int16)
    quality = assess(Audio(noise, RATE_HZ), "AV", CONFIG)
    assert quality.reasons == ("disconnected",)
    assert quality.rms_dbfs < QualityThresholds().min_rms_dbfs


def test_a_one_second_recording_is_too_short():
    short = Audio(heart().samples[:RATE_HZ], RATE_HZ)
    quality = assess(short, "AV", CONFIG)
    assert quality.reasons == ("too_short",)
    assert quality.seconds == pytest.approx(1.0)


def test_sounds_400_a_minute_are_s1_and_s2_of_a_200_bpm_heartbeat():
    # Above 240 a minute the sounds are taken for S1 and S2 of one beat: in a fast infant heart
    # they are nearly evenly spaced, and the old gate read such hearts at double rate and retook them.
    quality = assess(bursts(12.0, 400.0), "AV", CONFIG)
    assert quality.ok, quality.messages
    assert quality.heart_rate_bpm == pytest.approx(200.0, rel=0.05)


def test_500_sounds_a_minute_are_an_implausible_heart_rate_even_as_s1_and_s2():
    quality = assess(bursts(12.0, 500.0), "AV", CONFIG)
    assert quality.reasons == ("heart_rate",)
    assert quality.heart_rate_bpm == pytest.approx(250.0, rel=0.05)
    assert "outside 30-240" in quality.messages[0]


def test_the_same_bursts_at_a_plausible_rate_pass():
    quality = assess(bursts(12.0, 100.0), "AV", CONFIG)
    assert quality.ok and quality.heart_rate_bpm == pytest.approx(100.0, abs=2.0)


@pytest.mark.parametrize("seed", range(4))
def test_steady_noise_without_beats_has_no_heart_rate(seed):
    noise = np.round(3000 * np.random.default_rng(seed).standard_normal(8 * RATE_HZ)).astype(np.int16)
    quality = assess(Audio(noise, RATE_HZ), "AV", CONFIG)
    assert quality.reasons == ("heart_rate",)
    assert quality.envelope_contrast < QualityThresholds().min_envelope_contrast


@pytest.mark.parametrize("kind, reason", [("clipped", "clipping"), ("flat", "heart_rate")])
def test_the_simulators_unusable_recordings_are_retaken(kind, reason):
    # The simulator's "flat" sensor still picks up mains hum and contact bumps (about -52 dBFS, as
    # loud as the quietest real recordings), so it is its beatless envelope that fails it.
    rng = np.random.default_rng(3)
    profile = replace(random_profile(rng, "Child"), unusable=kind)
    samples, _ = synthesize(profile, "MV", 12.0, RATE_HZ, rng)
    quality = assess(Audio(to_pcm16(samples), RATE_HZ), "MV", CONFIG)
    assert reason in quality.reasons


@lru_cache(maxsize=None)
def heart_features() -> np.ndarray:
    return compute_features(heart(), CONFIG)


def split(n: int, cuts: list[int]) -> list[tuple[int, int]]:
    edges = [0, *sorted({c % (n + 1) for c in cuts}), n]
    return list(zip(edges[:-1], edges[1:]))


@settings(max_examples=40, deadline=None)
@given(sample_cuts=st.lists(st.integers(0, 10**6), max_size=40), frame_cuts=st.lists(st.integers(0, 10**6), max_size=40))
def test_streaming_equals_offline_for_any_chunking(sample_cuts, frame_cuts):
    audio, frames = heart(), heart_features()
    sample_chunks = split(len(audio.samples), sample_cuts)
    frame_chunks = split(frames.shape[1], frame_cuts)
    # Pair them up however they fall: frames need not arrive with the samples that made them.
    pairs = max(len(sample_chunks), len(frame_chunks))
    sample_chunks += [(len(audio.samples),) * 2] * (pairs - len(sample_chunks))
    frame_chunks += [(frames.shape[1],) * 2] * (pairs - len(frame_chunks))
    monitor = QualityMonitor(RATE_HZ, CONFIG)
    for (s0, s1), (f0, f1) in zip(sample_chunks, frame_chunks):
        monitor.push(audio.samples[s0:s1], frames[:, f0:f1])
    assert monitor.result("MV") == assess(audio, "MV", CONFIG, features=frames)


def test_live_front_end_frames_give_the_offline_verdict():
    audio = heart()
    stream, monitor = FrontEndStream(CONFIG, RATE_HZ), QualityMonitor(RATE_HZ, CONFIG)
    for start in range(0, len(audio.samples), 256):
        chunk = audio.samples[start : start + 256]
        monitor.push(chunk, stream.push(chunk))
    monitor.push(np.zeros(0, np.int16), stream.flush())
    live, offline = monitor.result("MV"), assess(audio, "MV", CONFIG)
    assert (live.ok, live.reasons) == (offline.ok, offline.reasons)
    assert live.heart_rate_bpm == pytest.approx(offline.heart_rate_bpm, abs=1e-3)
    assert (live.rms_dbfs, live.clipped_fraction, live.seconds) == (offline.rms_dbfs, offline.clipped_fraction, offline.seconds)


def test_the_live_reading_tracks_level_clipping_and_time():
    monitor = QualityMonitor(RATE_HZ, CONFIG)
    quiet = monitor.push(np.full(400, 0, np.int16), np.zeros((CONFIG.n_freq, 0), np.float32))
    assert (quiet.seconds, quiet.meter, quiet.level_dbfs, quiet.clipping) == (0.1, 0.0, -math.inf, False)
    loud = np.tile(np.array([32767, -32768], np.int16), 200)
    reading = monitor.push(loud, np.zeros((CONFIG.n_freq, 0), np.float32))
    assert reading.clipping and reading.meter == pytest.approx(1.0, abs=1e-4) and reading.seconds == pytest.approx(0.2)
    assert reading.clipped_fraction == pytest.approx(0.5)
    moderate = monitor.push(heart().samples[:400], np.zeros((CONFIG.n_freq, 0), np.float32))
    assert 0.0 < moderate.meter < 1.0 and not moderate.clipping


@pytest.mark.parametrize("n", [0, 1, 100, 127, 129, 2000])
def test_empty_and_short_input_is_too_short_without_an_exception(n):
    audio = Audio(heart().samples[:n], RATE_HZ)
    quality = assess(audio, "TV", CONFIG)
    assert quality.reasons[0] == "too_short" and not quality.ok
    assert quality.heart_rate_bpm is None and quality.periodicity == 0.0
    json.dumps(quality.to_dict())


def test_a_monitor_given_nothing_answers_too_short():
    monitor = QualityMonitor(RATE_HZ, CONFIG)
    monitor.push(np.zeros(0, np.int16), np.zeros((CONFIG.n_freq, 0), np.float32))
    assert monitor.result("AV").reasons == ("too_short",)


def test_push_rejects_frames_that_are_not_from_the_front_end():
    monitor = QualityMonitor(RATE_HZ, CONFIG)
    with pytest.raises(ValueError, match=r"expected frames \[48, k\]"):
        monitor.push(np.zeros(10, np.int16), np.zeros((12, 3), np.float32))
    with pytest.raises(ValueError, match="int16"):
        monitor.push(np.zeros(10, np.float32), np.zeros((CONFIG.n_freq, 0), np.float32))


def test_to_dict_is_plain_json_with_every_field():
    data = json.loads(json.dumps(assess(heart(), "MV", CONFIG).to_dict()))
    assert data["ok"] is True and data["reasons"] == [] and data["site"] == "MV"
    assert set(data) >= {"seconds", "rms_dbfs", "peak_fraction", "clipped_fraction", "heart_rate_bpm", "messages",
                         "beat_contrast_db", "voice_fraction", "rubbing_db"}
    assert set(REASONS) == {"too_short", "clipping", "flat", "disconnected", "talking", "rubbing", "heart_rate", "noise"}


# --- what the field does to a recording -----------------------------------------------------------


def in_band_power(x: np.ndarray, rate_hz: int) -> float:
    """Power of x (DC removed) in the front-end's band, 25-400 Hz."""
    spectrum = np.fft.rfft(x - x.mean())
    freqs = np.fft.rfftfreq(len(x), 1.0 / rate_hz)
    inside = (freqs >= CONFIG.band_hz[0]) & (freqs <= CONFIG.band_hz[1])
    return float(2.0 * np.sum(np.abs(spectrum[inside]) ** 2) / len(x) ** 2)


def mixed(audio: Audio, other: np.ndarray, level_db: float) -> Audio:
    """audio plus `other` scaled to level_db relative to it (in band); scaled down where it would clip."""
    x = audio.samples.astype(np.float64)
    mix = x + other * math.sqrt(in_band_power(x, audio.rate_hz) / in_band_power(other, audio.rate_hz) * 10 ** (level_db / 10))
    peak = np.max(np.abs(mix))
    return Audio(np.round(mix * min(1.0, 0.9 * 32767 / peak)).astype(np.int16), audio.rate_hz)


def voice(n: int, rate_hz: int, rng: np.random.Generator) -> np.ndarray:
    """Voiced speech as a stethoscope hears it: five harmonics of a pitch gliding between 100 and
    220 Hz, in syllables of 0.15-0.3 s with short pauses."""
    t = np.arange(n) / rate_hz
    pitch_hz = 160.0 + 60.0 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 2 * np.pi))
    phase = 2 * np.pi * np.cumsum(pitch_hz) / rate_hz
    gate = np.zeros(n)
    start = 0
    while start < n:
        m = int(rng.uniform(0.15, 0.3) * rate_hz)
        gate[start : start + m] = np.hanning(m)[: n - start]
        start += m + int(rng.uniform(0.03, 0.15) * rate_hz)
    return gate * sum(np.sin(k * phase) / k for k in range(1, 6))


def friction(n: int, rate_hz: int, rng: np.random.Generator) -> np.ndarray:
    """The chest piece rubbing on skin or clothes all along: Hann-shaped bursts of white noise,
    0.1-0.4 s, 0.3-1.2 s apart."""
    x = np.zeros(n)
    t = rng.uniform(0.0, 1.0)
    while t * rate_hz < n:
        m, start = int(rng.uniform(0.1, 0.4) * rate_hz), int(t * rate_hz)
        x[start : start + m] += (rng.standard_normal(m) * np.hanning(m) * rng.uniform(2.0, 6.0))[: n - start]
        t += m / rate_hz + rng.uniform(0.3, 1.2)
    return x


def dead_sensor(n: int, rate_hz: int, rng: np.random.Generator) -> np.ndarray:
    """A disconnected sensor: its own noise (a few LSB) and 50 Hz mains hum, no heart."""
    t = np.arange(n) / rate_hz
    return 4.0 * rng.standard_normal(n) + 300.0 * (np.sin(2 * np.pi * 50 * t) + 0.3 * np.sin(2 * np.pi * 150 * t))


YOUNG_HEARTS = [(age_group, bpm, seed) for age_group, bpm in (("Neonate", 150.0), ("Infant", 130.0), ("Child", 95.0))
                for seed in range(4)]


def test_a_voice_over_a_young_heart_is_talking():
    verdicts = []
    for age_group, bpm, seed in YOUNG_HEARTS:
        audio = heart(12.0, age_group, bpm, seed)
        verdicts.append(assess(mixed(audio, voice(len(audio.samples), RATE_HZ, np.random.default_rng(seed)), 0.0), "MV", CONFIG))
    assert [q.reasons for q in verdicts] == [("talking",)] * len(YOUNG_HEARTS)
    assert all("quiet" in q.messages[0] and q.voice_fraction > QualityThresholds().max_voice_fraction for q in verdicts)


@pytest.mark.parametrize("seed", range(3))
def test_mains_hum_that_comes_and_goes_is_not_taken_for_a_voice(seed):
    audio, rng = heart(12.0, "Child", 95.0, seed), np.random.default_rng(seed)
    n = len(audio.samples)
    t = np.arange(n) / RATE_HZ
    hum = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((150.0, 250.0, 350.0), start=1))
    on = np.repeat(rng.random(n // RATE_HZ + 1) < 0.4, RATE_HZ)[:n]  # switched on and off second by second
    quality = assess(mixed(audio, hum * on, 0.0), "MV", CONFIG)
    assert "talking" not in quality.reasons
    assert quality.voice_fraction < QualityThresholds().max_voice_fraction / 2


def test_friction_bursts_over_a_young_heart_are_rubbing():
    verdicts = []
    for age_group, bpm, seed in YOUNG_HEARTS:
        audio = heart(12.0, age_group, bpm, seed)
        verdicts.append(assess(mixed(audio, friction(len(audio.samples), RATE_HZ, np.random.default_rng(seed)), 8.0), "MV", CONFIG))
    assert [q.reasons for q in verdicts] == [("rubbing",)] * len(YOUNG_HEARTS)
    assert all("hold the chest piece still" in q.messages[0] for q in verdicts)


@pytest.mark.parametrize("seed", range(3))
def test_a_heart_under_white_noise_as_loud_as_itself_is_noise(seed):
    audio = heart(12.0, "Child", 95.0, seed)
    noisy = mixed(audio, np.random.default_rng(seed).standard_normal(len(audio.samples)), 0.0)
    quality = assess(noisy, "MV", CONFIG)
    assert quality.reasons == ("noise",)
    assert quality.beat_contrast_db < QualityThresholds().min_beat_contrast_db < assess(audio, "MV", CONFIG).beat_contrast_db


# Every fifth shared recording (236 of 1,178, all four databases): a few seconds of reading.
# The gate retakes 2.5% of all 1,178 (benchmarks/quality_children.py); PhysioNet 2016 recordings were
# made in the field and kept as labelled data by the challenge, so a gate retaking more than 1 in 20
# of them would send operators back for recordings a cardiologist could label.
MAX_RETAKE_RATE = 0.05


def test_the_gate_retakes_few_real_recordings(physionet2016_root):
    patients = load_dataset(physionet2016_root).patients[::5]
    verdicts = [(p, assess(p.recordings[0].read(), p.recordings[0].site, CONFIG)) for p in patients]
    retaken = [(p.patient_id, q.reasons) for p, q in verdicts if not q.ok]
    print(f"RETAKE {len(retaken)} of {len(verdicts)} shared recordings: {retaken}")
    assert len(retaken) / len(verdicts) < MAX_RETAKE_RATE, retaken
    for label in ("Normal", "Abnormal"):
        labelled = [q for p, q in verdicts if p.outcome == label]
        assert sum(not q.ok for q in labelled) / len(labelled) < MAX_RETAKE_RATE, label


# --- the children: the shared CirCor recordings ------------------------------------------------------
# Every one of them was segmented by a cardiac physiologist, so a gate that retakes more than 1 patient
# in 20 sends operators back for recordings a specialist could read. The 45 murmur-Unknown patients
# (the annotator could not tell, often for noise) are left out. One pass over all 2,102 recordings
# (about half a minute) serves the tests below.


@lru_cache(maxsize=None)
def circor_verdicts(root: str) -> tuple:
    """(patient, recording, samples, SiteQuality, annotated bpm or None) for every shared CirCor recording."""
    verdicts = []
    for patient in load_dataset(root).patients:
        for recording in patient.recordings:
            audio = recording.read()
            verdicts.append((patient, recording, len(audio.samples), assess(audio, recording.site, CONFIG),
                             annotated_bpm(recording.segmentation_path)))
    return tuple(verdicts)


def annotated_bpm(path) -> float | None:
    """60 / the median interval between consecutive annotated S1 onsets (gaps over 2 s left out)."""
    try:
        onsets = np.array([s.start_s for s in read_segmentation(path) if s.state == 1])
    except (FormatError, OSError, TypeError):
        return None
    intervals = np.diff(onsets)
    intervals = intervals[(intervals > 0) & (intervals < 2.0)]
    return 60.0 / float(np.median(intervals)) if len(intervals) else None


@pytest.mark.slow
def test_the_gate_retakes_few_children(circor_root):
    # pcg-runtime triage's rule: per site the longest recording; a patient is retaken when any fails
    used: dict[str, dict] = collections.defaultdict(dict)
    for verdict in circor_verdicts(str(circor_root)):
        patient, recording, n = verdict[:3]
        if patient.murmur != "Unknown" and n > used[patient.patient_id].get(recording.site, (0, 0, -1))[2]:
            used[patient.patient_id][recording.site] = verdict
    retaken = {pid: [(v[1].site, v[3].reasons) for v in sites.values() if not v[3].ok] for pid, sites in used.items()}
    print(f"RETAKE {sum(map(bool, retaken.values()))} of {len(used)} children: {[(k, v) for k, v in retaken.items() if v]}")
    assert len(used) == 583
    assert sum(map(bool, retaken.values())) / len(used) <= MAX_RETAKE_RATE
    age = {pid: next(iter(sites.values()))[0].demographics.age_group for pid, sites in used.items()}
    for group in ("Infant", "Child", "Adolescent"):  # the groups with 50 patients or more
        members = [pid for pid in used if age[pid] == group]
        assert sum(bool(retaken[pid]) for pid in members) / len(members) <= MAX_RETAKE_RATE, group
    for site in ("AV", "PV", "TV", "MV"):
        recordings = [v for sites in used.values() for s, v in sites.items() if s == site]
        assert sum(not v[3].ok for v in recordings) / len(recordings) <= MAX_RETAKE_RATE, site


@pytest.mark.slow
def test_the_heart_rate_of_children_matches_their_annotated_beats(circor_root):
    pairs = [(v[3].heart_rate_bpm, v[4]) for v in circor_verdicts(str(circor_root)) if v[4] is not None]
    within = [m is not None and abs(m - a) <= 0.1 * a for m, a in pairs]
    fast = [w for w, (_, a) in zip(within, pairs) if a >= 120.0]  # infants and excited children
    print(f"heart rate within 10% of the annotated beats: {np.mean(within):.3f} of {len(pairs)}, "
          f"at 120 bpm and above {np.mean(fast):.3f} of {len(fast)}")
    assert len(pairs) == 2101 and len(fast) > 400
    assert np.mean(within) >= 0.85  # the old gate: 0.70, reading many children at double rate
    assert np.mean(fast) >= 0.70  # the old gate: 0.55


@pytest.mark.slow
def test_real_childrens_recordings_spoiled_in_the_field_are_caught(circor_root):
    clean = [v for v in circor_verdicts(str(circor_root)) if v[0].murmur != "Unknown" and v[3].ok][::60]
    spoils = {
        "flat": lambda a, rng: Audio(np.full(len(a.samples), 1200, np.int16), a.rate_hz),
        "clipped": lambda a, rng: Audio(np.clip(a.samples.astype(np.int32) * 30, -32768, 32767).astype(np.int16), a.rate_hz),
        "disconnected": lambda a, rng: Audio(np.round(dead_sensor(len(a.samples), a.rate_hz, rng)).astype(np.int16), a.rate_hz),
        "talking": lambda a, rng: mixed(a, voice(len(a.samples), a.rate_hz, rng), 0.0),
        "rubbing": lambda a, rng: mixed(a, friction(len(a.samples), a.rate_hz, rng), 8.0),
        "noise": lambda a, rng: mixed(a, rng.standard_normal(len(a.samples)), 0.0),
    }
    caught = collections.defaultdict(list)
    for index, (_, recording, _, _, _) in enumerate(clean):
        audio = recording.read()
        for kind, spoil in spoils.items():
            caught[kind].append(not assess(spoil(audio, np.random.default_rng(index)), recording.site, CONFIG).ok)
    rates = {kind: float(np.mean(c)) for kind, c in caught.items()}
    print(f"caught, of {len(clean)} real recordings the gate passes: {rates}")
    assert len(clean) >= 30
    for kind in ("flat", "clipped", "disconnected", "talking", "noise"):
        assert rates[kind] >= 0.9, kind
    assert rates["rubbing"] >= 0.6  # the weakest check: see benchmarks/results/quality_children.json
    assert np.mean(list(rates.values())) >= 0.9
