"""Whole front-end: int16 at any rate -> float32 features; streaming equals offline; lean imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.dsp import (
    FrontEndConfig,
    FrontEndStream,
    compute_features,
    features,
    log_spectrogram,
    pool_frames,
    resample,
)
from runtime.dsp.resample import MAX_RATE_HZ
from runtime.records import Audio

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = FrontEndConfig()
RATES_HZ = [4000, 2000, 8000, 44100, 1000, 3000, 22050, 960]


def pcg_like(n: int, seed: int) -> np.ndarray:
    """int16 noise with the loudness of a typical recording."""
    return (np.random.default_rng(seed).standard_normal(n) * 3000).astype(np.int16)


def reference_features(samples: np.ndarray, rate_hz: int) -> np.ndarray:
    """scipy resample_poly + scipy stft + windowed mean, float64."""
    x = samples / 32768.0
    if rate_hz != CONFIG.target_rate_hz:
        g = np.gcd(rate_hz, CONFIG.target_rate_hz)
        x = scipy.signal.resample_poly(x, CONFIG.target_rate_hz // g, rate_hz // g)
    window = scipy.signal.get_window("hann", 128)
    freqs, _, spectrum = scipy.signal.stft(
        x, fs=1000, window=window, nperseg=128, noverlap=112, boundary=None, padded=False, scaling="spectrum"
    )
    power = np.abs(spectrum * window.sum()) ** 2 / np.sum(window**2)
    logspec = np.log(power[(freqs >= 25) & (freqs <= 400)] + 1e-10)
    n_pooled = (logspec.shape[1] - 2) // 2 + 1
    return (logspec[:, 0 : 2 * n_pooled : 2] + logspec[:, 1 : 2 * n_pooled : 2]) / 2


def streamed(samples: np.ndarray, rate_hz: int, chunk_sizes: list[int]) -> np.ndarray:
    stream = FrontEndStream(CONFIG, rate_hz)
    parts, start = [], 0
    for size in chunk_sizes:
        parts.append(stream.push(samples[start : start + size]))
        start += size
    parts.append(stream.push(samples[start:]))
    parts.append(stream.flush())
    assert all(p.dtype == np.float32 for p in parts)
    return np.concatenate(parts, axis=1)


@pytest.mark.parametrize("rate_hz", RATES_HZ)
def test_features_match_scipy_reference(rate_hz):
    samples = pcg_like(3 * rate_hz, rate_hz)
    ours = features(samples, rate_hz, CONFIG)
    ref = reference_features(samples, rate_hz)
    assert ours.dtype == np.float32
    assert ours.shape == ref.shape == (48, CONFIG.frames_for(3000))
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)


@settings(deadline=None, max_examples=100)
@given(
    rate_hz=st.sampled_from(RATES_HZ),
    duration_ms=st.integers(0, 1500),
    seed=st.integers(0, 2**32 - 1),
    chunk_ms=st.lists(st.integers(0, 300), max_size=10),
)
def test_streaming_equals_offline_for_any_chunking(rate_hz, duration_ms, seed, chunk_ms):
    samples = pcg_like(rate_hz * duration_ms // 1000, seed)
    chunk_sizes = [rate_hz * ms // 1000 for ms in chunk_ms]
    offline = features(samples, rate_hz, CONFIG)
    online = streamed(samples, rate_hz, chunk_sizes)
    assert online.shape == offline.shape
    np.testing.assert_allclose(online, offline, rtol=0, atol=1e-5)


def test_64ms_chunks_at_4khz_equal_offline():
    samples = pcg_like(4000 * 5, 11)
    np.testing.assert_allclose(streamed(samples, 4000, [256] * 78), features(samples, 4000, CONFIG), rtol=0, atol=1e-5)


def test_int16_is_scaled_to_unit_float():
    samples = pcg_like(4000, 12)
    np.testing.assert_array_equal(features(samples, 2000, CONFIG), features(samples / 32768.0, 2000, CONFIG))


def test_compute_features_reads_audio_rate():
    audio = Audio(samples=pcg_like(8000, 13), rate_hz=4000)
    np.testing.assert_array_equal(compute_features(audio, CONFIG), features(audio.samples, 4000, CONFIG))


@pytest.mark.parametrize("n", [0, 1, 100])
def test_recording_shorter_than_a_frame_has_no_frames(n):
    samples = pcg_like(n, 14)
    assert features(samples, 4000, CONFIG).shape == (48, 0)
    assert streamed(samples, 4000, [1] * n).shape == (48, 0)


def test_flush_leaves_the_stream_ready_for_the_next_recording():
    samples = pcg_like(6000, 15)
    stream = FrontEndStream(CONFIG, 2000)
    first = np.concatenate([stream.push(samples), stream.flush()], axis=1)
    second = np.concatenate([stream.push(samples), stream.flush()], axis=1)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("bad", [np.zeros(10, dtype=np.int32), np.zeros((2, 10)), np.array(["a"])])
def test_rejects_samples_that_are_not_mono_int16_or_float(bad):
    with pytest.raises(ValueError, match="expected"):
        features(bad, 4000, CONFIG)
    with pytest.raises(ValueError, match="expected"):
        FrontEndStream(CONFIG, 4000).push(bad)


def test_importing_the_front_end_loads_neither_scipy_nor_torch():
    code = "import sys, runtime.dsp; print(sorted(m for m in sys.modules if m.split('.')[0] in ('scipy', 'torch')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def tone_features(freq_hz: float, rate_hz: int) -> np.ndarray:
    """features() of a 4 s tone, without its rate check (to look below the minimum too)."""
    t = np.arange(4 * rate_hz) / rate_hz
    resampled = resample(0.3 * np.sin(2 * np.pi * freq_hz * t), rate_hz, CONFIG.target_rate_hz)
    return pool_frames(log_spectrogram(resampled, CONFIG), CONFIG)


def test_the_minimum_rate_keeps_the_top_of_the_band():
    """At min_input_rate_hz a tone in the band's top bin has the level it has at 4 kHz; at twice
    the band's top (800 Hz, its Nyquist rate) the resampling filter's transition band weakens it."""
    top_bin_hz = (CONFIG.band_bins[1] - 1) * CONFIG.target_rate_hz / CONFIG.n_fft  # 398.4 Hz
    at_4khz = tone_features(top_bin_hz, 4000)[-1].mean()
    assert abs(tone_features(top_bin_hz, CONFIG.min_input_rate_hz)[-1].mean() - at_4khz) < 0.01  # ln power: 0.04 dB
    assert tone_features(top_bin_hz, 800)[-1].mean() < at_4khz - 1.0  # over 4 dB weaker


@pytest.mark.parametrize("rate_hz", [1, 100, 800, CONFIG.min_input_rate_hz - 1])
def test_audio_below_the_minimum_rate_is_refused_with_the_reason(rate_hz):
    samples = pcg_like(10 * rate_hz, 16)
    for make in (lambda: features(samples, rate_hz, CONFIG), lambda: FrontEndStream(CONFIG, rate_hz)):
        with pytest.raises(ValueError) as refused:
            make()
        message = str(refused.value)
        assert f"{rate_hz} Hz" in message and "too low" in message and "400 Hz" in message
        assert f"{CONFIG.min_input_rate_hz} to {MAX_RATE_HZ} Hz" in message


@pytest.mark.parametrize("rate_hz", [MAX_RATE_HZ + 1, 2**32 - 1])
def test_audio_above_the_maximum_rate_is_refused_with_the_supported_range(rate_hz):
    samples = pcg_like(100, 17)
    for make in (lambda: features(samples, rate_hz, CONFIG), lambda: FrontEndStream(CONFIG, rate_hz)):
        with pytest.raises(ValueError) as refused:
            make()
        assert f"{rate_hz} Hz" in str(refused.value)
        assert f"{CONFIG.min_input_rate_hz} to {MAX_RATE_HZ} Hz" in str(refused.value)


@pytest.mark.parametrize("rate_hz", [1000, 44101, 47999])
def test_every_rate_from_1_khz_to_48_khz_is_screened(rate_hz):
    assert features(pcg_like(rate_hz, 18), rate_hz, CONFIG).shape == (48, CONFIG.frames_for(1000))
