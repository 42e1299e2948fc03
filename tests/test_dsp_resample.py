"""StreamingResampler reproduces scipy.signal.resample_poly for any chunking (scipy is the reference)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.dsp import StreamingResampler, design_filter, ratio_for, resample
from runtime.dsp.resample import MAX_RATE_HZ

RATES_HZ = [4000, 2000, 8000, 44100, 1000, 3000, 22050, 500]
# gcd(rate, 1000) is small, so up is large (1000/gcd): a polyphase matrix of up*down entries would
# not fit in memory; these take the per-output path, which must give the same answer.
AWKWARD_RATES_HZ = [44101, 47999, 22051, 954, 1001, 96001, MAX_RATE_HZ - 1]


def reference(x: np.ndarray, in_rate_hz: int) -> np.ndarray:
    up, down = ratio_for(in_rate_hz, 1000)
    if len(x) == 0:  # scipy's upfirdn refuses empty input; the defined answer is no output
        return np.zeros(0)
    return scipy.signal.resample_poly(x, up, down)


def relative_error(y: np.ndarray, ref: np.ndarray) -> float:
    assert y.shape == ref.shape
    scale = np.abs(ref).max() if ref.size else 1.0
    return float(np.abs(y - ref).max() / scale) if ref.size else 0.0


def streamed(x: np.ndarray, in_rate_hz: int, chunk_sizes: list[int]) -> np.ndarray:
    stream = StreamingResampler(in_rate_hz, 1000)
    parts, start = [], 0
    for size in chunk_sizes:
        parts.append(stream.push(x[start : start + size]))
        start += size
    parts.append(stream.push(x[start:]))
    parts.append(stream.flush())
    return np.concatenate(parts)


@pytest.mark.parametrize("up, down", [(1, 4), (1, 2), (1, 8), (10, 441), (1, 3), (20, 441), (2, 1), (3, 7)])
def test_design_filter_matches_scipy_firwin(up, down):
    half_len = 10 * max(up, down)
    expected = scipy.signal.firwin(2 * half_len + 1, 1.0 / max(up, down), window=("kaiser", 5.0)) * up
    h = design_filter(up, down)
    np.testing.assert_allclose(h, expected, rtol=0, atol=1e-14 * np.abs(expected).max())


@pytest.mark.parametrize("in_rate, out_rate, expected", [(4000, 1000, (1, 4)), (44100, 1000, (10, 441)), (500, 1000, (2, 1)), (1000, 1000, (1, 1))])
def test_ratio_is_reduced_by_gcd(in_rate, out_rate, expected):
    assert ratio_for(in_rate, out_rate) == expected


@pytest.mark.parametrize("in_rate", [0, -4000, 4000.5])
def test_ratio_rejects_non_positive_or_fractional_rates(in_rate):
    with pytest.raises(ValueError, match="positive integers"):
        ratio_for(in_rate, 1000)


@pytest.mark.parametrize("in_rate", RATES_HZ)
@pytest.mark.parametrize("n", [0, 1, 7, 100, 4321])
def test_offline_resample_matches_scipy(in_rate, n):
    x = np.random.default_rng(n).standard_normal(n)
    assert relative_error(resample(x, in_rate, 1000), reference(x, in_rate)) <= 1e-9


@settings(deadline=None, max_examples=200)
@given(
    in_rate=st.sampled_from(RATES_HZ),
    n=st.integers(0, 3000),
    seed=st.integers(0, 2**32 - 1),
    chunk_sizes=st.lists(st.integers(0, 700), max_size=12),
)
def test_streaming_matches_scipy_for_any_chunking(in_rate, n, seed, chunk_sizes):
    x = np.random.default_rng(seed).standard_normal(n)
    assert relative_error(streamed(x, in_rate, chunk_sizes), reference(x, in_rate)) <= 1e-9


@pytest.mark.parametrize("in_rate", RATES_HZ)
def test_one_sample_chunks_match_scipy(in_rate):
    x = np.random.default_rng(1).standard_normal(in_rate // 10)
    assert relative_error(streamed(x, in_rate, [1] * len(x)), reference(x, in_rate)) <= 1e-9


@pytest.mark.parametrize("in_rate", RATES_HZ + [44101, 954])
def test_pushed_samples_do_not_depend_on_later_input(in_rate):
    """push returns only fully determined outputs: any continuation of the signal agrees with them."""
    rng = np.random.default_rng(2)
    head = rng.standard_normal(in_rate // 4)
    early = StreamingResampler(in_rate, 1000).push(head)
    assert len(early) > 0
    for tail in (np.zeros(in_rate), rng.standard_normal(in_rate)):
        full = reference(np.concatenate([head, tail]), in_rate)
        assert relative_error(early, full[: len(early)]) <= 1e-9


@pytest.mark.parametrize("in_rate", [4000, 44100, 500, 44101])
def test_push_returns_every_determined_sample(in_rate):
    """After the whole signal is pushed, flush adds only the outputs that need zeros past its end."""
    up, down = ratio_for(in_rate, 1000)
    half_len = 10 * max(up, down)
    stream = StreamingResampler(in_rate, 1000)
    n = in_rate // 2
    pushed = stream.push(np.ones(n))
    # Output m needs x[(m*down + half_len) // up]; count the m whose last input is before n.
    assert len(pushed) == sum(1 for m in range(-(-n * up // down)) if (m * down + half_len) // up < n)


@pytest.mark.parametrize("in_rate", [4000, 44100, 500, 44101])
def test_a_large_chunk_after_small_ones_matches_scipy(in_rate):
    x = np.random.default_rng(7).standard_normal(3 * in_rate)
    assert relative_error(streamed(x, in_rate, [1, 10, 2 * in_rate, 3]), reference(x, in_rate)) <= 1e-9


def test_signal_shorter_than_the_filter():
    x = np.random.default_rng(3).standard_normal(5)  # 44.1 kHz filter has 8821 taps
    assert relative_error(streamed(x, 44100, [2, 0, 3]), reference(x, 44100)) <= 1e-9


def test_empty_signal_gives_no_output():
    stream = StreamingResampler(4000, 1000)
    assert stream.push(np.zeros(0)).shape == (0,)
    assert stream.flush().shape == (0,)


def test_identity_rate_returns_the_input():
    x = np.random.default_rng(4).standard_normal(300)
    np.testing.assert_array_equal(streamed(x, 1000, [7, 0, 100]), x)


def test_flush_resets_for_the_next_signal():
    rng = np.random.default_rng(5)
    first, second = rng.standard_normal(1000), rng.standard_normal(1500)
    stream = StreamingResampler(4000, 1000)
    stream.push(first)
    stream.flush()
    again = np.concatenate([stream.push(second), stream.flush()])
    assert relative_error(again, reference(second, 4000)) <= 1e-9


def test_reset_discards_pending_input():
    rng = np.random.default_rng(6)
    stream = StreamingResampler(3000, 1000)
    stream.push(rng.standard_normal(777))
    stream.reset()
    x = rng.standard_normal(2000)
    assert relative_error(np.concatenate([stream.push(x), stream.flush()]), reference(x, 3000)) <= 1e-9


def test_push_rejects_two_dimensional_input():
    with pytest.raises(ValueError, match="1-D"):
        StreamingResampler(4000, 1000).push(np.zeros((2, 10)))


@pytest.mark.parametrize("in_rate", AWKWARD_RATES_HZ)
def test_awkward_rates_match_scipy(in_rate):
    x = np.random.default_rng(in_rate).standard_normal(in_rate // 3)
    assert relative_error(resample(x, in_rate, 1000), reference(x, in_rate)) <= 1e-9


@settings(deadline=None, max_examples=30)
@given(
    in_rate=st.sampled_from([44101, 954, 1001]),
    n=st.integers(0, 3000),
    seed=st.integers(0, 2**32 - 1),
    chunk_sizes=st.lists(st.integers(0, 700), max_size=12),
)
def test_awkward_rates_stream_like_scipy_for_any_chunking(in_rate, n, seed, chunk_sizes):
    x = np.random.default_rng(seed).standard_normal(n)
    assert relative_error(streamed(x, in_rate, chunk_sizes), reference(x, in_rate)) <= 1e-9


@pytest.mark.parametrize("in_rate", [44101, 954])
def test_awkward_rates_in_64_ms_chunks_match_scipy(in_rate):
    """Many small pushes: the buffer drops input no later output reads, again and again."""
    x = np.random.default_rng(10).standard_normal(5 * in_rate)
    chunk = int(0.064 * in_rate)
    assert relative_error(streamed(x, in_rate, [chunk] * (len(x) // chunk)), reference(x, in_rate)) <= 1e-9


@pytest.mark.parametrize("in_rate", [47993, 96007])  # used by no other test: their filters are built in here
def test_awkward_rates_cost_memory_in_proportion_to_the_signal_not_up_times_down(in_rate):
    """20 s at 47993 Hz once took a 1.1 GB polyphase matrix (3 x 1000 x 47993 entries), 96007 Hz 2.3 GB."""
    x = np.random.default_rng(8).standard_normal(20 * in_rate)
    tracemalloc.start()
    try:
        y = resample(x, in_rate, 1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(y) == 20000
    # the buffered copy of the signal (grown by doubling) and the filter, 20 taps per Hz: as long as 20 s
    # of signal. About 3 * x.nbytes; once 200 * x.nbytes.
    assert peak < 5 * x.nbytes


@pytest.mark.parametrize("in_rate", [MAX_RATE_HZ + 1, 2**32 - 1, 10**12])
def test_rates_above_the_maximum_are_refused_before_any_filter_is_built(in_rate):
    with pytest.raises(ValueError, match=f"{MAX_RATE_HZ} Hz"):
        StreamingResampler(in_rate, 1000)
    with pytest.raises(ValueError, match=f"{MAX_RATE_HZ} Hz"):
        StreamingResampler(1000, in_rate)


def test_the_maximum_rate_itself_is_accepted():
    x = np.random.default_rng(9).standard_normal(MAX_RATE_HZ // 10)
    assert relative_error(resample(x, MAX_RATE_HZ, 1000), reference(x, MAX_RATE_HZ)) <= 1e-9
