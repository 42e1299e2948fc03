"""The whole front-end: samples at any rate -> pooled log spectrogram, float32 [n_freq, T].

int16 samples are scaled by 1/32768; float samples are taken as already in [-1, 1]. The stream
object and the whole-recording functions give the same frames for any chunking (the resampler
and spectrogram below them guarantee it); training and the field box both come through here.
"""

from __future__ import annotations

import numpy as np

from runtime.dsp.config import FrontEndConfig
from runtime.dsp.resample import StreamingResampler, resample
from runtime.dsp.spectrogram import StreamingSpectrogram, log_spectrogram, pool_frames
from runtime.records import Audio


def _as_unit_float(samples: np.ndarray) -> np.ndarray:
    """1-D int16 (scaled by 1/32768) or float samples as float64."""
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise ValueError(f"expected mono 1-D samples, got shape {samples.shape}")
    if samples.dtype == np.int16:
        return samples * (1.0 / 32768.0)
    if samples.dtype.kind != "f":
        raise ValueError(f"expected int16 or float samples, got dtype {samples.dtype}")
    return samples.astype(np.float64, copy=False)


class FrontEndStream:
    """Features of one stream as its samples arrive; the resampler is built from `input_rate_hz`.

    push(samples) returns the pooled frames completed so far, float32 [n_freq, k] (k may be 0);
    flush() returns the rest at the end of the stream and resets; reset() starts over.
    A rate outside the config's supported range is a ValueError that says why (check_input_rate).
    """

    def __init__(self, config: FrontEndConfig, input_rate_hz: int):
        config.check_input_rate(input_rate_hz)
        self.config = config
        self.input_rate_hz = int(input_rate_hz)
        self._resampler = StreamingResampler(
            input_rate_hz, config.target_rate_hz, config.kaiser_beta, config.half_len_factor
        )
        self._spectrogram = StreamingSpectrogram(config)

    def reset(self) -> None:
        """Forget all input: the next push starts a new recording."""
        self._resampler.reset()
        self._spectrogram.reset()

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Feed 1-D int16 or float samples at input_rate_hz; return new frames float32 [n_freq, k]."""
        resampled = self._resampler.push(_as_unit_float(samples))
        return self._spectrogram.push(resampled).astype(np.float32)

    def flush(self) -> np.ndarray:
        """End of stream: the last frames, float32 [n_freq, k]; then reset."""
        tail = self._spectrogram.push(self._resampler.flush())
        self._spectrogram.flush()
        return tail.astype(np.float32)


def features(samples: np.ndarray, rate_hz: int, config: FrontEndConfig) -> np.ndarray:
    """Whole-recording features: 1-D int16 or float samples at rate_hz -> float32 [n_freq, T].

    T = config.frames_for(len(resampled)); recordings shorter than one frame give T = 0. A rate
    outside the config's supported range is a ValueError that says why (check_input_rate).
    """
    config.check_input_rate(rate_hz)
    resampled = resample(_as_unit_float(samples), rate_hz, config.target_rate_hz, config.kaiser_beta, config.half_len_factor)
    return pool_frames(log_spectrogram(resampled, config), config).astype(np.float32)


def compute_features(audio: Audio, config: FrontEndConfig) -> np.ndarray:
    """features() of a runtime.records.Audio: float32 [n_freq, T]."""
    return features(audio.samples, audio.rate_hz, config)
