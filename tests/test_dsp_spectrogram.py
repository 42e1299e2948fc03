"""Pooled log spectrogram: against scipy.signal.stft, and streaming equal to offline for any chunking."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.dsp import FrontEndConfig, StreamingSpectrogram, log_spectrogram, pool_frames

DEFAULT = FrontEndConfig()
# Different window/FFT sizes, hop, band and pooling, so nothing above is tied to the defaults.
OTHER = FrontEndConfig(n_fft=256, win_length=200, hop_samples=10, band_hz=(50.0, 300.0), pool_frames=3, pool_stride=2)


def reference_log_spectrogram(x: np.ndarray, cfg: FrontEndConfig) -> np.ndarray:
    """Independent reference: scipy's STFT (no boundary padding), its scaling undone."""
    window = scipy.signal.get_window(cfg.window, cfg.win_length)
    freqs, _, spectrum = scipy.signal.stft(
        x,
        fs=cfg.target_rate_hz,
        window=window,
        nperseg=cfg.win_length,
        noverlap=cfg.win_length - cfg.hop_samples,
        nfft=cfg.n_fft,
        boundary=None,
        padded=False,
        scaling="spectrum",  # divides by sum(window)
    )
    power = np.abs(spectrum * window.sum()) ** 2 / np.sum(window**2)
    low, high = cfg.band_hz
    keep = (freqs >= low) & (freqs <= high)
    return np.log(power[keep] + cfg.log_floor)


def reference_pool(logspec: np.ndarray, cfg: FrontEndConfig) -> np.ndarray:
    n_frames = logspec.shape[1]
    starts = range(0, n_frames - cfg.pool_frames + 1, cfg.pool_stride)
    columns = [logspec[:, s : s + cfg.pool_frames].mean(axis=1) for s in starts]
    return np.stack(columns, axis=1) if columns else np.zeros((logspec.shape[0], 0))


def streamed(x: np.ndarray, cfg: FrontEndConfig, chunk_sizes: list[int]) -> np.ndarray:
    stream = StreamingSpectrogram(cfg)
    parts, start = [], 0
    for size in chunk_sizes:
        parts.append(stream.push(x[start : start + size]))
        start += size
    parts.append(stream.push(x[start:]))
    parts.append(stream.flush())
    assert all(p.shape[0] == cfg.n_freq for p in parts)
    return np.concatenate(parts, axis=1)


@pytest.mark.parametrize("cfg", [DEFAULT, OTHER], ids=["default", "other"])
@pytest.mark.parametrize("extra", [0, 1, 15, 16, 1000, 5000])
def test_log_spectrogram_matches_scipy_stft(cfg, extra):
    n = cfg.win_length + extra  # scipy's stft needs at least one full segment
    x = np.random.default_rng(n).standard_normal(n) * 0.2
    ours = log_spectrogram(x, cfg)
    ref = reference_log_spectrogram(x, cfg)
    assert ours.shape == ref.shape == (cfg.n_freq, (n - cfg.win_length) // cfg.hop_samples + 1)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)


@pytest.mark.parametrize("cfg", [DEFAULT, OTHER], ids=["default", "other"])
@pytest.mark.parametrize("n_frames", [0, 1, 2, 3, 50, 51])
def test_pool_frames_matches_windowed_mean(cfg, n_frames):
    logspec = np.random.default_rng(n_frames).standard_normal((cfg.n_freq, n_frames))
    np.testing.assert_allclose(pool_frames(logspec, cfg), reference_pool(logspec, cfg), rtol=0, atol=1e-12)


def test_tone_lands_in_its_frequency_row():
    cfg = DEFAULT
    t = np.arange(4000) / cfg.target_rate_hz
    tone_hz = 125.0  # exactly rfft bin 16 -> row 16 - 4
    spec = log_spectrogram(0.5 * np.sin(2 * np.pi * tone_hz * t), cfg)
    assert np.all(spec.argmax(axis=0) == 16 - cfg.band_bins[0])


def test_silence_sits_at_the_log_floor():
    spec = log_spectrogram(np.zeros(500), DEFAULT)
    np.testing.assert_allclose(spec, np.log(DEFAULT.log_floor))


@pytest.mark.parametrize("n", [0, 1, 127])
def test_input_shorter_than_one_frame_gives_no_frames(n):
    x = np.ones(n)
    assert log_spectrogram(x, DEFAULT).shape == (48, 0)
    assert streamed(x, DEFAULT, [1] * n).shape == (48, 0)


def test_one_frame_is_not_enough_for_a_pooling_window():
    x = np.random.default_rng(0).standard_normal(128)
    assert log_spectrogram(x, DEFAULT).shape == (48, 1)
    assert pool_frames(log_spectrogram(x, DEFAULT), DEFAULT).shape == (48, 0)
    assert pool_frames(log_spectrogram(np.concatenate([x, x[:16]]), DEFAULT), DEFAULT).shape == (48, 1)


@settings(deadline=None, max_examples=200)
@given(
    cfg=st.sampled_from([DEFAULT, OTHER]),
    n=st.integers(0, 2500),
    seed=st.integers(0, 2**32 - 1),
    chunk_sizes=st.lists(st.integers(0, 400), max_size=15),
)
def test_streaming_equals_offline_for_any_chunking(cfg, n, seed, chunk_sizes):
    x = np.random.default_rng(seed).standard_normal(n)
    offline = pool_frames(log_spectrogram(x, cfg), cfg)
    online = streamed(x, cfg, chunk_sizes)
    assert online.shape == offline.shape == (cfg.n_freq, cfg.frames_for(n))
    np.testing.assert_allclose(online, offline, rtol=0, atol=1e-9)
    if n >= cfg.win_length:
        np.testing.assert_allclose(offline, reference_pool(reference_log_spectrogram(x, cfg), cfg), rtol=0, atol=1e-9)


def test_single_sample_chunks_equal_offline():
    x = np.random.default_rng(7).standard_normal(700)
    np.testing.assert_allclose(streamed(x, DEFAULT, [1] * 700), pool_frames(log_spectrogram(x, DEFAULT), DEFAULT), rtol=0, atol=1e-9)


def test_reset_starts_a_new_signal():
    rng = np.random.default_rng(8)
    stream = StreamingSpectrogram(DEFAULT)
    stream.push(rng.standard_normal(300))
    stream.reset()
    x = rng.standard_normal(900)
    np.testing.assert_allclose(stream.push(x), pool_frames(log_spectrogram(x, DEFAULT), DEFAULT), rtol=0, atol=1e-9)
