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

That matrix has about 2*up*down entries, mostly zeros: fine for the rates recorders use (4000 Hz:
84 entries, 44100 Hz: 13,230), but a rate sharing few factors with the other (44101 -> 1000 is
up/down = 1000/44101) would need 88 million. Past MAX_MATRIX_ENTRIES each output is instead the
dot product of its phase's taps with its input window, gathered a few thousand outputs at a time:
the same sum, in memory in proportion to the filter (at most 20 taps per Hz of the higher rate).
Rates above MAX_RATE_HZ are refused, so no declared rate can ask for more.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import numpy as np

DEFAULT_KAISER_BETA = 5.0
DEFAULT_HALF_LEN_FACTOR = 10
#: Highest rate, in or out, a resampler accepts (Hz): studio recorders' highest. The filter has
#: 2*half_len_factor*max(up, down)+1 taps and max(up, down) <= the higher rate, so this bounds it
#: at 3.84 million taps (31 MB) at the defaults, whatever the rate shares with the other.
MAX_RATE_HZ = 192_000
#: Largest [rows_per_block*up, down] matrix (2 MiB) the block path builds; see the module docstring.
MAX_MATRIX_ENTRIES = 2**18
#: Input values gathered at once by the per-output path (1 MiB of windows, 1 MiB of taps).
_GATHER_ENTRIES = 2**17
#: Taps design_filter computes at once.
_DESIGN_BLOCK = 2**16


def ratio_for(in_rate_hz: int, out_rate_hz: int) -> tuple[int, int]:
    """(up, down) with out/in = up/down, reduced by their gcd. Rates are integers from 1 to MAX_RATE_HZ."""
    if int(in_rate_hz) != in_rate_hz or int(out_rate_hz) != out_rate_hz or in_rate_hz <= 0 or out_rate_hz <= 0:
        raise ValueError(f"sample rates must be positive integers in Hz, got {in_rate_hz!r} -> {out_rate_hz!r}")
    if max(in_rate_hz, out_rate_hz) > MAX_RATE_HZ:
        raise ValueError(f"sample rates above {MAX_RATE_HZ} Hz are not supported, "
                         f"got {in_rate_hz!r} -> {out_rate_hz!r}")
    g = math.gcd(int(in_rate_hz), int(out_rate_hz))
    return int(out_rate_hz) // g, int(in_rate_hz) // g


def design_filter(
    up: int, down: int, beta: float = DEFAULT_KAISER_BETA, half_len_factor: int = DEFAULT_HALF_LEN_FACTOR
) -> np.ndarray:
    """resample_poly's default low-pass FIR: float64 [2*half_len+1], half_len = factor*max(up, down).

    Same as `scipy.signal.firwin(2*half_len+1, 1/max(up, down), window=("kaiser", beta)) * up`
    (windowed sinc, normalised to unit gain at DC, then scaled by `up` for the zero stuffing).
    Computed _DESIGN_BLOCK taps at a time with np.kaiser's formula (the same values): np.kaiser
    and np.sinc at once would hold a dozen temporaries as long as the filter.
    """
    max_rate = max(up, down)
    cutoff = 1.0 / max_rate  # relative to Nyquist
    n_taps = 2 * half_len_factor * max_rate + 1
    alpha = 0.5 * (n_taps - 1)
    h = np.empty(n_taps)
    for begin in range(0, n_taps, _DESIGN_BLOCK):
        m = np.arange(begin, min(begin + _DESIGN_BLOCK, n_taps), dtype=np.float64) - alpha
        window = np.i0(beta * np.sqrt(1 - (m / alpha) ** 2.0)) / np.i0(float(beta))
        h[begin : begin + len(m)] = cutoff * np.sinc(cutoff * m) * window
    h /= h.sum()
    return h * up


def passband_fraction(beta: float = DEFAULT_KAISER_BETA, half_len_factor: int = DEFAULT_HALF_LEN_FACTOR) -> float:
    """Highest frequency the filter passes unchanged, as a fraction of the lower of the two rates.

    The cutoff is half the lower rate and the transition band is centred on it. Kaiser's design
    relation (the one scipy.signal.kaiserord inverts) gives its width: (A - 7.95) / (14.36 * taps
    per period of the lower rate), A being the stopband attenuation in dB that `beta` is chosen
    for; here 2*half_len_factor taps span one period of the lower rate. At the defaults A = 54.1 dB,
    the width is 0.161 of the lower rate, and 0.4197 of it passes (420 Hz of a 1000 Hz output).
    """
    boundary = 0.1102 * (50.0 - 8.7)  # beta for A = 50 dB, where Kaiser's formula changes form
    if beta >= boundary:
        attenuation_db = beta / 0.1102 + 8.7
    else:  # 0.5842 (A - 21)^0.4 + 0.07886 (A - 21) = beta, for 21 <= A < 50: increasing in A, bisected
        low, high = 21.0, 50.0
        for _ in range(60):
            mid = 0.5 * (low + high)
            low, high = (mid, high) if 0.5842 * (mid - 21.0) ** 0.4 + 0.07886 * (mid - 21.0) < beta else (low, mid)
        attenuation_db = low
    width = (attenuation_db - 7.95) / (14.36 * 2 * half_len_factor)
    return 0.5 - width / 2


class _Layout(NamedTuple):
    """Where each output's taps fall for one (up, down, half_len_factor); see the module docstring."""

    up: int
    down: int
    half_len: int
    taps_per_phase: int
    rows_per_block: int  # input rows of `down` samples that one block of `up` outputs reads
    first_start: int  # <= 0: output 0 (and block 0) reads from this input index (zeros before x[0])

    @property
    def matrix_entries(self) -> int:
        """Size of the block path's matrix: rows_per_block*up rows of `down` taps."""
        return self.rows_per_block * self.up * self.down


def _layout(up: int, down: int, half_len_factor: int) -> _Layout:
    half_len = half_len_factor * max(up, down)
    taps_per_phase = -(-(2 * half_len + 1) // up)
    # Output m reads x[start(m) : start(m) + taps_per_phase], start(m) = (m*down + half_len)//up - taps_per_phase + 1.
    first_start = half_len // up - taps_per_phase + 1
    last_start = ((up - 1) * down + half_len) // up - taps_per_phase + 1
    rows_per_block = -(-(last_start - first_start + taps_per_phase) // down)
    return _Layout(up, down, half_len, taps_per_phase, rows_per_block, first_start)


def _phase_taps(up: int, down: int, beta: float, half_len_factor: int) -> np.ndarray:
    """[up, taps_per_phase], read-only: row p holds the taps h[p::up], reversed so dot products run
    forwards in time. A strided view of the zero-padded filter: no copy of it."""
    n_taps = 2 * half_len_factor * max(up, down) + 1
    taps_per_phase = -(-n_taps // up)
    h_padded = np.zeros(taps_per_phase * up)
    h_padded[:n_taps] = design_filter(up, down, beta, half_len_factor)
    phases = h_padded.reshape(taps_per_phase, up).T[:, ::-1]
    phases.flags.writeable = False
    return phases


@lru_cache(maxsize=16)
def _block_matrix(up: int, down: int, beta: float, half_len_factor: int) -> np.ndarray:
    """The block path's [rows_per_block*up, down] matrix: row a*up + r = filter r's taps on row a.
    At most MAX_MATRIX_ENTRIES entries (callers check), so 16 cached ones take at most 32 MiB."""
    layout = _layout(up, down, half_len_factor)
    phases = _phase_taps(up, down, beta, half_len_factor)
    tpp = layout.taps_per_phase
    block_filter = np.zeros((layout.rows_per_block * down, up))
    for r in range(up):
        offset = (r * down + layout.half_len) // up - tpp + 1 - layout.first_start
        block_filter[offset : offset + tpp, r] = phases[(r * down + layout.half_len) % up]
    row_filter = np.ascontiguousarray(
        block_filter.reshape(layout.rows_per_block, down, up).transpose(0, 2, 1).reshape(-1, down)
    )
    row_filter.flags.writeable = False
    return row_filter


@lru_cache(maxsize=2)
def _per_output_taps(up: int, down: int, beta: float, half_len_factor: int) -> np.ndarray:
    """_phase_taps, contiguous (its rows are gathered: twice as fast) and read-only; two cached, since a
    batch of files at one odd rate reuses them. The copy costs no peak: the design held as much."""
    phases = np.ascontiguousarray(_phase_taps(up, down, beta, half_len_factor))
    phases.flags.writeable = False
    return phases


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
        layout = _layout(up, down, int(half_len_factor))
        self._half_len, self._taps_per_phase = layout.half_len, layout.taps_per_phase
        self._rows_per_block, self._first_start = layout.rows_per_block, layout.first_start
        if layout.matrix_entries <= MAX_MATRIX_ENTRIES:
            self._row_filter = _block_matrix(up, down, float(beta), int(half_len_factor))
            self._phase_taps = None
            # Zeros flush() appends: enough for the last output's taps and the last block's reads.
            self._tail = (self._rows_per_block + 1) * down + self._half_len // up + 1
        else:
            self._row_filter = None
            self._phase_taps = _per_output_taps(up, down, float(beta), int(half_len_factor))
            self._tail = self._half_len // up + 1  # the last output reads up to x[n - 1 + half_len // up]
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
        if self._phase_taps is not None:
            return self._emit_per_output(first, n_out_total)
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

    def _emit_per_output(self, first: int, n_out_total: int) -> np.ndarray:
        """Outputs [first, n_out_total), each its phase's taps dotted with its input window."""
        windows = np.lib.stride_tricks.sliding_window_view(self._buf[: self._buf_len], self._taps_per_phase)
        step = max(1, _GATHER_ENTRIES // self._taps_per_phase)
        y = np.empty(n_out_total - first)
        for begin in range(first, n_out_total, step):
            m = np.arange(begin, min(begin + step, n_out_total), dtype=np.int64)
            centre = m * self.down + self._half_len  # output m sits at input time centre / up
            starts = centre // self.up - (self._taps_per_phase - 1) - self._buf_origin
            y[begin - first : begin - first + len(m)] = np.einsum(
                "ij,ij->i", self._phase_taps[centre % self.up], windows[starts]
            )
        return y

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
