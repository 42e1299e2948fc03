"""The per-site quality gate: each check fails what it should, a good heart passes, streaming equals offline."""

from __future__ import annotations

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
from runtime.formats import load_dataset
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


def test_400_beats_per_minute_is_an_implausible_heart_rate():
    quality = assess(bursts(12.0, 400.0), "AV", CONFIG)
    assert quality.reasons == ("heart_rate",)
    assert quality.heart_rate_bpm == pytest.approx(400.0, rel=0.05)
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
    assert set(data) >= {"seconds", "rms_dbfs", "peak_fraction", "clipped_fraction", "heart_rate_bpm", "messages"}
    assert set(REASONS) == {"too_short", "clipping", "flat", "disconnected", "heart_rate"}


# Every fifth shared recording (236 of 1,178, all four databases): a few seconds of reading.
# The gate retakes 2.0% of all 1,178 (benchmarks/quality.py); PhysioNet 2016 recordings were made
# in the field and kept as labelled data by the challenge, so a gate retaking more than 1 in 20 of
# them would send operators back for recordings a cardiologist could label.
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
