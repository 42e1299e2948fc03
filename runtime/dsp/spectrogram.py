"""Pooled log-power spectrogram of a signal at the target rate, offline and streaming.

Frames are not centred or padded: frame i covers samples [i*hop, i*hop + win_length), so n samples
give (n - win_length) // hop + 1 frames (0 when n < win_length), and the incomplete last frame is
dropped. Pooling window j covers frames [j*stride, j*stride + pool_frames); an incomplete last
window is dropped too. The streaming object applies exactly these rules, so its output,
concatenated along time, equals the offline output for any chunking.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from runtime.dsp.config import FrontEndConfig


class _Kernel:
    """Config-derived constants and the two array steps both paths share (time-major arrays)."""

    def __init__(self, config: FrontEndConfig):
        self.config = config
        n = np.arange(config.win_length)
        window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / config.win_length)  # periodic Hann
        first, stop = config.band_bins
        # Only n_freq of the n_fft//2+1 bins are kept, so a DFT matrix with the window and the
        # power normalisation folded in beats an FFT: [win_length, 2*n_freq], cos then sin.
        # (n*k) mod n_fft keeps the angles exact for long frames.
        angle = 2.0 * np.pi * ((n[:, None] * np.arange(first, stop)[None, :]) % config.n_fft) / config.n_fft
        amplitude = (window / np.sqrt(np.sum(window**2)))[:, None]
        self.dft = np.hstack([amplitude * np.cos(angle), amplitude * np.sin(angle)])
        self.n_freq = stop - first

    def log_power(self, x: np.ndarray, start: int, n_frames: int, out: np.ndarray) -> np.ndarray:
        """Log power of n_frames frames of contiguous float64 x from sample `start`, into out [n_frames, n_freq]."""
        cfg = self.config
        frames = np.ndarray(
            (n_frames, cfg.win_length),
            dtype=np.float64,
            buffer=x,
            offset=start * 8,
            strides=(cfg.hop_samples * 8, 8),
        )
        # The copy makes the frames contiguous, which BLAS needs (overlapping rows are not).
        spectrum = np.ascontiguousarray(frames) @ self.dft
        spectrum *= spectrum
        np.add(spectrum[:, : self.n_freq], cfg.log_floor, out=out)
        out += spectrum[:, self.n_freq :]
        return np.log(out, out=out)

    def pool(self, log_power: np.ndarray, start: int, n_pooled: int) -> np.ndarray:
        """Means over n_pooled pooling windows of contiguous time-major log power [frames, n_freq],
        the first window starting at frame `start`: [n_pooled, n_freq]."""
        cfg = self.config
        row = self.n_freq * 8
        windows = np.ndarray(
            (n_pooled, cfg.pool_frames, self.n_freq),
            dtype=np.float64,
            buffer=log_power,
            offset=start * row,
            strides=(cfg.pool_stride * row, row, 8),
        )
        return np.add.reduce(windows, axis=1) / cfg.pool_frames


@lru_cache(maxsize=8)
def _kernel(config: FrontEndConfig) -> _Kernel:
    return _Kernel(config)


def _n_frames(n_samples: int, length: int, step: int) -> int:
    return 0 if n_samples < length else (n_samples - length) // step + 1


def log_spectrogram(x: np.ndarray, config: FrontEndConfig) -> np.ndarray:
    """Band-limited log power of 1-D float x at config.target_rate_hz: float64 [n_freq, n_frames].

    ln(|rfft(frame * hann)|^2 / sum(hann^2) + log_floor), rows are the rfft bins in band_hz.
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    n_frames = _n_frames(len(x), config.win_length, config.hop_samples)
    if n_frames == 0:
        return np.zeros((config.n_freq, 0))
    return _kernel(config).log_power(x, 0, n_frames, np.empty((n_frames, config.n_freq))).T


def pool_frames(logspec: np.ndarray, config: FrontEndConfig) -> np.ndarray:
    """Temporal mean pooling of [n_freq, n_frames] -> float64 [n_freq, n_pooled]."""
    time_major = np.ascontiguousarray(logspec.T, dtype=np.float64)
    n_pooled = _n_frames(len(time_major), config.pool_frames, config.pool_stride)
    if n_pooled == 0:
        return np.zeros((logspec.shape[0], 0))
    return _kernel(config).pool(time_major, 0, n_pooled).T


class StreamingSpectrogram:
    """pool_frames(log_spectrogram(x)) computed as x arrives in chunks (x at target_rate_hz).

    push(x) returns the pooled frames completed by x, float64 [n_freq, k] (k may be 0). flush()
    returns what is left, which is always [n_freq, 0] because incomplete frames and pooling windows
    are dropped (as offline), and resets; reset() starts a new signal.
    """

    def __init__(self, config: FrontEndConfig):
        self.config = config
        self._kernel = _kernel(config)
        self._samples = np.zeros(max(4096, 4 * config.win_length))
        self._log_power = np.zeros((max(256, 4 * config.pool_frames), config.n_freq))
        self.reset()

    def reset(self) -> None:
        """Forget all input."""
        # _samples[_sample_start:_sample_end] holds the samples from the next frame's start on;
        # _log_power[_frame_start:_frame_end] the frames from the next pooling window's start on.
        self._sample_start = self._sample_end = 0
        self._frame_start = self._frame_end = 0

    def push(self, x: np.ndarray) -> np.ndarray:
        """Feed 1-D float samples at target_rate_hz; return new pooled frames float64 [n_freq, k]."""
        cfg = self.config
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"expected 1-D samples, got shape {x.shape}")
        self._samples, self._sample_start, self._sample_end = _append(
            self._samples, self._sample_start, self._sample_end, len(x)
        )
        self._samples[self._sample_end - len(x) : self._sample_end] = x
        n_frames = _n_frames(self._sample_end - self._sample_start, cfg.win_length, cfg.hop_samples)
        if n_frames == 0:
            return np.zeros((cfg.n_freq, 0))
        self._log_power, self._frame_start, self._frame_end = _append(
            self._log_power, self._frame_start, self._frame_end, n_frames
        )
        self._kernel.log_power(
            self._samples, self._sample_start, n_frames, self._log_power[self._frame_end - n_frames : self._frame_end]
        )
        self._sample_start += n_frames * cfg.hop_samples

        n_pooled = _n_frames(self._frame_end - self._frame_start, cfg.pool_frames, cfg.pool_stride)
        if n_pooled == 0:
            return np.zeros((cfg.n_freq, 0))
        pooled = self._kernel.pool(self._log_power, self._frame_start, n_pooled)
        self._frame_start += n_pooled * cfg.pool_stride
        return pooled.T

    def flush(self) -> np.ndarray:
        """End of signal: the remaining pooled frames (none: incomplete ones are dropped); resets."""
        self.reset()
        return np.zeros((self.config.n_freq, 0))


def _append(buf: np.ndarray, start: int, end: int, n_new: int) -> tuple[np.ndarray, int, int]:
    """Make room for n_new rows after buf[start:end]: (buffer, start, end + n_new).

    The live rows move to the front when the end is reached, into a larger buffer if needed.
    """
    if end + n_new > len(buf):
        live = end - start
        if live + n_new > len(buf):
            grown = np.zeros((max(live + n_new, 2 * len(buf)),) + buf.shape[1:])
            grown[:live] = buf[start:end]
            buf = grown
        else:
            buf[:live] = buf[start:end]
        start, end = 0, live
    return buf, start, end + n_new
