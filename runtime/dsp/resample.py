"""Rational-rate resampling that reproduces scipy.signal.resample_poly (default arguments), streaming.

The filter is scipy's default: a Kaiser-windowed sinc (beta 5.0) of 2*half_len+1 taps with
half_len = 10 * max(up, down), cutoff 1/max(up, down) of Nyquist, unit DC gain, times `up`.
Output sample m (at the output rate) is centred on input time m*down/up:

    y[m] = sum_i h[m*down + half_len - i*up] * x[i],   x = 0 outside [0, n),   m < ceil(n*up/down)

which is exactly what resample_poly's zero padding and n_pre_remove trimming amount to.

Polyphase form used here: outputs are computed `up` at a time (one "block" q covers outputs
q*up .. q*up+up-1, whose inputs start `down` samples after the previous block's). The input is
viewed as rows of `down` samples, multiplied once by a [rows_per_block*up, down] matrix, and
the partial products of neighbouring rows are summed with one strided view. That keeps every matmul
contiguous (BLAS) and the per-call Python work to a handful of numpy calls.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import numpy as np

DEFAULT_KAISER_BETA = 5.0
DEFAULT_HALF_LEN_FACTOR = 10


def ratio_for(in_rate_hz: int, out_rate_hz: int) -> tuple[int, int]:
    """(up, down) with out/in = up/down, reduced by their gcd. Rates are positive integers in Hz."""
    if int(in_rate_hz) != in_rate_hz or int(out_rate_hz) != out_rate_hz or in_rate_hz <= 0 or out_rate_hz <= 0:
        raise ValueError(f"sample rates must be positive integers in Hz, got {in_rate_hz!r} -> {out_rate_hz!r}")
    g = math.gcd(int(in_rate_hz), int(out_rate_hz))
    return int(out_rate_hz) // g, int(in_rate_hz) // g


def design_filter(
    up: int, down: int, beta: float = DEFAULT_KAISER_BETA, half_len_factor: int = DEFAULT_HALF_LEN_FACTOR
) -> np.ndarray:
    """resample_poly's default low-pass FIR: float64 [2*half_len+1], half_len = factor*max(up, down).

    Same as `scipy.signal.firwin(2*half_len+1, 1/max(up, down), window=("kaiser", beta)) * up`
    (windowed sinc, normalised to unit gain at DC, then scaled by `up` for the zero stuffing).
    """
    max_rate = max(up, down)
    cutoff = 1.0 / max_rate  # relative to Nyquist
    n_taps = 2 * half_len_factor * max_rate + 1
    m = np.arange(n_taps, dtype=np.float64) - 0.5 * (n_taps - 1)
    h = cutoff * np.sinc(cutoff * m) * np.kaiser(n_taps, beta)
    h /= h.sum()
    return h * up


class _Polyphase(NamedTuple):
    """Filter tables for one (up, down, beta, half_len_factor); see the module docstring."""

    half_len: int
    rows_per_block: int  # input rows of `down` samples that one block of `up` outputs reads
    first_start: int  # <= 0: block 0 reads from this input index (zeros before x[0])
    row_filter: np.ndarray  # [rows_per_block*up, down]: row a*up + r = filter r's taps on row a


@lru_cache(maxsize=16)
def _polyphase(up: int, down: int, beta: float, half_len_factor: int) -> _Polyphase:
    h = design_filter(up, down, beta, half_len_factor)
    half_len = (len(h) - 1) // 2
    taps_per_phase = -(-len(h) // up)
    h_padded = np.zeros(taps_per_phase * up)
    h_padded[: len(h)] = h
    # Output r of a block reads x[start[r] : start[r] + taps_per_phase] with phase filter r,
    # reversed so the dot product runs forwards in time.
    starts = [(r * down + half_len) // up - taps_per_phase + 1 for r in range(up)]
    phases = [(r * down + half_len) % up for r in range(up)]
    rows_per_block = -(-(starts[-1] - starts[0] + taps_per_phase) // down)
    block_filter = np.zeros((rows_per_block * down, up))
    for r in range(up):
        offset = starts[r] - starts[0]
        block_filter[offset : offset + taps_per_phase, r] = h_padded[phases[r] :: up][::-1]
    row_filter = np.ascontiguousarray(block_filter.reshape(rows_per_block, down, up).transpose(0, 2, 1).reshape(-1, down))
    row_filter.flags.writeable = False
    return _Polyphase(half_len, rows_per_block, starts[0], row_filter)


class StreamingResampler:
    """Resamples one stream from `in_rate_hz` to `out_rate_hz` as samples arrive.

    push(x) returns every output sample already fully determined by the input so far; flush()
    returns the rest (the input is taken to end there, zero-extended as resample_poly does) and
    resets. All pushes plus the flush, concatenated, equal
    `scipy.signal.resample_poly(x_all, up, down)` for any chunking. Output is float64.
    Input must be finite: a NaN or inf also spoils outputs up to one polyphase block around it.
    """

    def __init__(
        self,
        in_rate_hz: int,
        out_rate_hz: int,
        beta: float = DEFAULT_KAISER_BETA,
        half_len_factor: int = DEFAULT_HALF_LEN_FACTOR,
    ):
        self.in_rate_hz = int(in_rate_hz)
        self.out_rate_hz = int(out_rate_hz)
        self.up, self.down = ratio_for(in_rate_hz, out_rate_hz)
        up, down = self.up, self.down
        self._identity = up == down == 1  # resample_poly returns x itself
        tables = _polyphase(up, down, float(beta), int(half_len_factor))
        self._half_len, self._rows_per_block, self._first_start, self._row_filter = tables
        # Zeros flush() appends: enough for the last output's taps and the last block's reads.
        self._tail = (self._rows_per_block + 1) * down + self._half_len // up + 1
        self._buf = np.zeros(0)
        self._buf_len = 0
        self.reset()

    def reset(self) -> None:
        """Forget all input: the next push starts a new signal."""
        self._n_in = 0  # input samples received
        self._n_out = 0  # output samples returned
        # _buf[j] holds input sample (j + _buf_origin); samples before x[0] are zeros.
        self._buf_origin = self._first_start
        self._buf_len = 0
        self._ensure_capacity(4 * self._tail + 4096)
        self._buf_len = -self._first_start
        self._buf[: self._buf_len] = 0.0

    def _ensure_capacity(self, n: int) -> None:
        if len(self._buf) < n:
            grown = np.zeros(max(n, 2 * len(self._buf)))
            grown[: self._buf_len] = self._buf[: self._buf_len]
            self._buf = grown

    def _append(self, x: np.ndarray) -> None:
        # Drop input no future block needs (blocks start at multiples of `down` from _first_start).
        first_needed = (self._n_out // self.up) * self.down + self._first_start
        drop = first_needed - self._buf_origin
        slack = 2 * self._tail  # room for flush()'s zeros and the reads past them
        if drop > 0 and self._buf_len + len(x) + slack > len(self._buf):
            keep = self._buf_len - drop
            self._buf[:keep] = self._buf[drop : self._buf_len]
            self._buf_origin, self._buf_len = first_needed, keep
        self._ensure_capacity(self._buf_len + len(x) + slack)
        self._buf[self._buf_len : self._buf_len + len(x)] = x
        self._buf_len += len(x)

    def _emit(self, n_out_total: int) -> np.ndarray:
        """Outputs [_n_out, n_out_total); the buffer must hold every input they read."""
        first, self._n_out = self._n_out, n_out_total
        if n_out_total <= first:
            return np.zeros(0)
        up, down = self.up, self.down
        q0, q1 = first // up, -(-n_out_total // up)
        n_rows = q1 - q0 + self._rows_per_block - 1
        row0 = q0 * down + self._first_start - self._buf_origin
        # The last block may read past the received input: those outputs are dropped below.
        rows = self._buf[row0 : row0 + n_rows * down].reshape(n_rows, down)
        partial = self._row_filter @ rows.T  # [rows_per_block*up, n_rows]
        # Output r of block q is the sum over a of partial[a*up + r, q + a]: one strided view.
        item = partial.itemsize
        diagonals = np.ndarray(
            (self._rows_per_block, up, q1 - q0),
            dtype=np.float64,
            buffer=partial,
            strides=((up * n_rows + 1) * item, n_rows * item, item),
        )
        y = np.add.reduce(diagonals, axis=0).T.ravel()
        return y[first - q0 * up : n_out_total - q0 * up]

    def push(self, x: np.ndarray) -> np.ndarray:
        """Feed input samples (1-D float, any length incl. 0); return the newly determined outputs."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"expected 1-D samples, got shape {x.shape}")
        if self._identity:
            return x.copy()
        self._n_in += len(x)
        self._append(x)
        # Output m is determined once x[(m*down + half_len) // up] has arrived.
        determined = max(0, (self._n_in * self.up - self._half_len - 1) // self.down + 1)
        return self._emit(determined)

    def flush(self) -> np.ndarray:
        """End of input: return the remaining outputs (up to ceil(n*up/down) in all) and reset."""
        if self._identity:
            return np.zeros(0)
        total = -(-self._n_in * self.up // self.down)
        self._append(np.zeros(self._tail))
        y = self._emit(total)
        self.reset()
        return y


def resample(
    x: np.ndarray,
    in_rate_hz: int,
    out_rate_hz: int,
    beta: float = DEFAULT_KAISER_BETA,
    half_len_factor: int = DEFAULT_HALF_LEN_FACTOR,
) -> np.ndarray:
    """Whole-signal resampling, float64 [ceil(n*up/down)]; the streaming code path in one push."""
    stream = StreamingResampler(in_rate_hz, out_rate_hz, beta, half_len_factor)
    head = stream.push(x)
    return np.concatenate([head, stream.flush()])
