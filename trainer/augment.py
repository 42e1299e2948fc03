"""PCG augmentation on log-power features [F, T] (numpy), applied to training crops only.

Features are ln(power), so a gain is an added constant and a stethoscope's frequency response is
an added curve over frequency. The model removes each row's mean (trainer.encoder), which cancels
both exactly; they are kept because they cost nothing and keep the model honest if that
normalisation is ever changed. What the normalisation does NOT cancel, and what imitates an
unfamiliar stethoscope, is band-limiting (a chest piece that passes little above a cut-off), a
noise floor (a different microphone and room), and time shifts. Masks (one band of rows and one
stretch of frames set to the crop's row means, as SpecAugment does) keep the model from leaning on
any single band or beat.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    gain_db: float = 6.0  # +- uniform
    tilt_db: float = 6.0  # +- across the band, linear in frequency
    response_db: float = 4.0  # smooth random frequency response (3 cosine terms), amplitude
    band_limit_probability: float = 0.3  # low-pass at a random cut-off between 40% and 90% of the band
    high_pass_probability: float = 0.0  # high-pass below a random cut-off up to 25% of the band
    noise_probability: float = 0.5
    snr_db: tuple[float, float] = (5.0, 30.0)
    shift_fraction: float = 0.5  # circular shift of up to this fraction of the crop
    site_dropout: float = 0.2  # per site, never dropping the last one
    freq_mask_rows: int = 0  # one band of up to this many rows masked per crop (0: none)
    time_mask_frames: int = 0  # one stretch of up to this many frames masked per crop (0: none)


NO_AUGMENTATION = AugmentConfig(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, (30.0, 30.0), 0.0, 0.0)
#: For models judged on stethoscopes they never heard: more band-limiting both ends, more noise.
STRONG_AUGMENTATION = AugmentConfig(band_limit_probability=0.6, high_pass_probability=0.5, noise_probability=0.8, snr_db=(0.0, 25.0))
#: The default plus a frequency mask of up to 8 rows (~60 Hz) and a time mask of up to 31 frames (~1 s).
MASKED_AUGMENTATION = AugmentConfig(freq_mask_rows=8, time_mask_frames=31)
AUGMENTATIONS = {"none": NO_AUGMENTATION, "default": AugmentConfig(), "strong": STRONG_AUGMENTATION, "masked": MASKED_AUGMENTATION}

_DB_TO_LN = np.log(10.0) / 10.0  # power dB -> natural-log power


def augment_crop(x: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """One training crop [F, T] (log power) -> augmented copy."""
    n_freq, n_frames = x.shape
    y = x.astype(np.float32, copy=True)
    position = np.linspace(-0.5, 0.5, n_freq, dtype=np.float32)[:, None]
    colour = rng.uniform(-config.gain_db, config.gain_db) + rng.uniform(-config.tilt_db, config.tilt_db) * position
    for k in (1, 2, 3):
        colour = colour + rng.uniform(-1, 1) * config.response_db / k * np.cos(np.pi * k * (position + 0.5) + rng.uniform(0, 2 * np.pi))
    y += (colour * _DB_TO_LN).astype(np.float32)
    if rng.random() < config.band_limit_probability:
        cutoff = int(rng.uniform(0.4, 0.9) * n_freq)
        rolloff_db = 3.0 * np.arange(n_freq - cutoff, dtype=np.float32)  # 3 dB per bin above the cut-off
        y[cutoff:] -= rolloff_db[:, None] * _DB_TO_LN
    if rng.random() < config.high_pass_probability:
        cutoff = int(rng.uniform(0.05, 0.25) * n_freq)
        rolloff_db = 3.0 * np.arange(cutoff, 0, -1, dtype=np.float32)  # 3 dB per bin below the cut-off
        y[:cutoff] -= rolloff_db[:, None] * _DB_TO_LN
    if rng.random() < config.noise_probability:
        noise_power = np.exp(y).mean() * 10.0 ** (-rng.uniform(*config.snr_db) / 10.0)
        y = np.log(np.exp(y) + noise_power * rng.exponential(1.0, y.shape)).astype(np.float32)
    if config.shift_fraction > 0:
        y = np.roll(y, int(rng.integers(0, int(config.shift_fraction * n_frames) + 1)), axis=1)
    if config.freq_mask_rows > 0 or config.time_mask_frames > 0:
        row_means = y.mean(axis=1, keepdims=True)
        if config.freq_mask_rows > 0:
            width = int(rng.integers(1, config.freq_mask_rows + 1))
            first = int(rng.integers(0, n_freq - width + 1))
            y[first : first + width] = row_means[first : first + width]
        if config.time_mask_frames > 0:
            width = int(rng.integers(1, config.time_mask_frames + 1))
            first = int(rng.integers(0, n_frames - width + 1))
            y[:, first : first + width] = row_means
    return y


def drop_sites(site_mask: np.ndarray, rng: np.random.Generator, probability: float) -> np.ndarray:
    """Randomly unset present sites (float32 [S] mask), keeping at least one."""
    present = np.flatnonzero(site_mask > 0.5)
    if len(present) <= 1 or probability <= 0:
        return site_mask
    keep = rng.random(len(present)) >= probability
    if not keep.any():
        keep[rng.integers(0, len(present))] = True
    mask = np.zeros_like(site_mask)
    mask[present[keep]] = 1.0
    return mask
