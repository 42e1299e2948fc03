"""Per-site quality gate (numpy only): is this recording good enough to screen, or should the operator retake it?

Checks, each with a machine code in `SiteQuality.reasons` and a sentence for the operator:

- "too_short": fewer than `min_seconds` of audio.
- "clipping": more than `max_clipped_fraction` of the samples at or above `clip_level` of full scale.
- "flat": the samples span at most `flat_span_lsb` steps (a dead line, digital silence).
- "disconnected": some signal, but its RMS is below `min_rms_dbfs` (sensor noise only).
- "heart_rate": no regular heartbeat in the envelope (no period, a weak one, or an envelope without
  beats: steady noise), or a beat rate outside the plausible range.

The heart rate comes from the pooled spectrogram frames the front-end already made (one frame per
`config.frame_period_s`, 31.25 per second at the defaults): per frame, the square root of the power
summed over the rows up to `envelope_max_hz` (where S1 and S2 live) is one envelope sample; at the
end the envelope loses its slow trend (breathing, handling) and its autocorrelation is searched for
the beat period. Nothing re-reads the audio or recomputes a spectrogram.

`QualityMonitor` does this as a site is recorded (`push` per chunk, a live reading back; `result`
at the end); `assess` does it for a whole recording and gives the same `SiteQuality` for any chunking
of the same samples and frames.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from runtime.dsp import FrontEndConfig, compute_features
from runtime.records import Audio

FULL_SCALE = 32768.0
_EXACT_BLOCK = 1 << 20  # int16 samples whose float64 sum of squares stays below 2**53
REASONS: tuple[str, ...] = ("too_short", "clipping", "flat", "disconnected", "heart_rate")


@dataclass(frozen=True)
class QualityThresholds:
    """Every number the gate decides with. Defaults, and the evidence (benchmarks/quality.py measures
    them on the shared PhysioNet 2016 recordings: 1,178 recordings, four databases):

    - min_seconds = 5.0: at least 2.5 beats at 30 bpm and ~6 at 72 bpm, enough for the heart-rate
      search; the PhysioNet 2016 minimum (its shortest recording here is 6.6 s).
    - clip_level = 0.98, max_clipped_fraction = 0.01: a sample within 2% of full scale counts as
      clipped (training-e saturates at 0.98-0.998, not exactly at full scale). Many recordings were
      normalized so one sample touches full scale, and loud S1 peaks clip briefly in more; over 1%
      of the time is saturation, not a few peaks (9 of 1,178 shared recordings exceed it).
    - flat_span_lsb = 4: a recording whose samples span at most 4 steps carries nothing (a dead
      or constant line with a bit of dither).
    - min_rms_dbfs = -65.0: the quietest shared recording has an RMS (DC removed) of -52.6 dBFS;
      13 dB below that is a sensor left in the air or unplugged, with only its own noise.
    - min_heart_rate_bpm, max_heart_rate_bpm = 30, 240: below is asystole-level bradycardia, above
      beyond even neonatal tachycardia; outside, the envelope is not a heartbeat.
    - min_periodicity = 0.1: the normalized autocorrelation of the envelope at the beat period.
      Irregular rhythms and murmurs lower it (abnormal recordings do score lower), so the bar is
      low: only envelopes with no repeating beat fail (8 of the 1,178 shared recordings).
    - min_envelope_contrast = 1.6: the envelope's 95th percentile over its median. Beats make the
      envelope peaky; steady noise does not, and its autocorrelation still finds chance peaks
      above min_periodicity (0.16 median for 8 s of white noise). White noise scores 1.25-1.38,
      the simulator's disconnected sensor (mains hum, no heart) 1.07-1.45, real recordings 2.0 at
      their 1st percentile; 7 shared recordings fall below 1.6, five of them training-e files all
      at -18.2 dBFS whose envelopes show no beats.
    - envelope_max_hz = 150.0: S1 and S2 carry most of their energy below ~150 Hz; murmurs and
      noise above it would blur the beat.
    - detrend_seconds = 1.0: a moving average this long is removed from the envelope (breathing,
      pressure changes), shorter than any plausible beat period's double.
    - multiple_ratio = 0.85: the period is the shortest-lag peak at least this strong relative to
      the strongest, which can be two to four beats when beats vary in loudness. Lower ratios, or
      accepting any peak near a fraction of the strongest lag, take the S1-S2 interval for the
      period in simulated infants and neonates (S1 to S2 is about half their cycle); at 0.85 the
      simulated rates of all age groups come out within 3 bpm, and the shared recordings' median
      is 73 bpm (5-95%: 53-121). Two shared recordings still read just under 30 bpm (e00174,
      e01307: a 3rd or 4th multiple of their period is the strongest peak) and are retaken.
    - search_bpm = (30.0, 480.0): the period search runs past the plausible maximum, so that a fast
      rhythm is seen as such rather than folded onto a multiple inside the range.
    - meter_floor_dbfs = -60.0: the live meter reads 0 at this level and 1 at full scale.
    """

    min_seconds: float = 5.0
    clip_level: float = 0.98
    max_clipped_fraction: float = 0.01
    flat_span_lsb: int = 4
    min_rms_dbfs: float = -65.0
    min_heart_rate_bpm: float = 30.0
    max_heart_rate_bpm: float = 240.0
    min_periodicity: float = 0.1
    min_envelope_contrast: float = 1.6
    envelope_max_hz: float = 150.0
    detrend_seconds: float = 1.0
    multiple_ratio: float = 0.85
    search_bpm: tuple[float, float] = (30.0, 480.0)
    meter_floor_dbfs: float = -60.0


@dataclass(frozen=True)
class SiteQuality:
    """The gate's verdict on one site's recording. ok is False exactly when reasons is not empty;
    messages hold one operator sentence per reason, in the same order."""

    site: str
    ok: bool
    reasons: tuple[str, ...]
    messages: tuple[str, ...]
    seconds: float
    rms_dbfs: float  # RMS with the DC offset removed, dB relative to full scale (-inf: none)
    peak_fraction: float  # largest |sample| / 32768
    clipped_fraction: float  # fraction of samples at or above clip_level of full scale
    heart_rate_bpm: float | None  # None when no beat period was found
    periodicity: float  # envelope autocorrelation at the beat period, 0 when none
    envelope_contrast: float  # 95th percentile of the envelope over its median, 0 when no frames

    def to_dict(self) -> dict:
        """Plain-JSON dict (tuples as lists, -inf dBFS as None)."""
        data = asdict(self)
        data["reasons"], data["messages"] = list(self.reasons), list(self.messages)
        if not math.isfinite(self.rms_dbfs):
            data["rms_dbfs"] = None
        return data


@dataclass(frozen=True)
class LiveReading:
    """What a live display shows after each chunk."""

    seconds: float  # audio so far
    level_dbfs: float  # RMS of this chunk, DC removed (-inf for silence or an empty chunk)
    meter: float  # level_dbfs mapped to 0..1 (meter_floor_dbfs -> 0, full scale -> 1)
    clipped_fraction: float  # so far
    clipping: bool  # this chunk has a clipped sample


class QualityMonitor:
    """Quality of one site's recording as it arrives; one monitor per recording.

    push(samples, frames) takes each int16 chunk at `rate_hz` and the front-end frames it completed
    (float32 [config.n_freq, k], k may be 0; the two need not line up) and returns a LiveReading;
    result(site) gives the SiteQuality of everything pushed. The per-chunk cost is a few vector
    operations on the samples and a copy of the frames' envelope rows (those up to envelope_max_hz,
    16 of 48 at the defaults: 2 kB per second); the envelope and its autocorrelation are computed
    once, in result(), from all of them together, so chunking cannot change the answer.
    """

    def __init__(self, rate_hz: int, config: FrontEndConfig, thresholds: QualityThresholds = QualityThresholds()):
        if rate_hz <= 0:
            raise ValueError(f"rate_hz must be positive, got {rate_hz}")
        self.rate_hz = int(rate_hz)
        self.config = config
        self.thresholds = thresholds
        first, stop = config.band_bins
        bin_hz = config.target_rate_hz / config.n_fft
        self._envelope_rows = int(np.sum(np.arange(first, stop) * bin_hz <= thresholds.envelope_max_hz))
        self._clip_lsb = int(math.ceil(thresholds.clip_level * FULL_SCALE))
        self.reset()

    def reset(self) -> None:
        """Forget everything pushed: the next push starts a new recording."""
        # Integer sums, so the result does not depend on how the samples were chunked.
        self._n = self._sum = self._sum_sq = self._clipped = self._peak = 0
        self._min, self._max = 32767, -32768
        self._low_rows: list[np.ndarray] = []  # frames' rows up to envelope_max_hz, per push

    def push(self, samples: np.ndarray, frames: np.ndarray) -> LiveReading:
        """Feed one chunk: int16 samples [n] and the frames [n_freq, k] the front-end gave for it."""
        samples = np.asarray(samples)
        if samples.ndim != 1 or samples.dtype != np.int16:
            raise ValueError(f"expected 1-D int16 samples, got {samples.dtype} with shape {samples.shape}")
        frames = np.asarray(frames)
        if frames.ndim != 2 or frames.shape[0] != self.config.n_freq:
            raise ValueError(f"expected frames [{self.config.n_freq}, k] from the front-end, got shape {frames.shape}")
        if frames.shape[1]:
            self._low_rows.append(frames[: self._envelope_rows].copy())
        level = -math.inf
        clipping = False
        if len(samples):
            total = total_sq = clipped = 0
            for start in range(0, len(samples), _EXACT_BLOCK):
                # float64 sums of at most _EXACT_BLOCK int16 values (and squares) are exact integers.
                block = samples[start : start + _EXACT_BLOCK].astype(np.float64)
                total += int(block.sum())
                total_sq += int(block @ block)
            low, high = int(samples.min()), int(samples.max())
            peak = max(-low, high)
            if peak >= self._clip_lsb:
                clipped = int(np.count_nonzero(np.abs(samples.astype(np.int32)) >= self._clip_lsb))
            self._n += len(samples)
            self._sum += total
            self._sum_sq += total_sq
            self._clipped += clipped
            self._peak = max(self._peak, peak)
            self._min, self._max = min(self._min, low), max(self._max, high)
            level = _dbfs(len(samples), total, total_sq)
            clipping = clipped > 0
        floor = self.thresholds.meter_floor_dbfs
        meter = 0.0 if level == -math.inf else min(1.0, max(0.0, (level - floor) / -floor))
        return LiveReading(
            seconds=self._n / self.rate_hz,
            level_dbfs=level,
            meter=meter,
            clipped_fraction=self._clipped / self._n if self._n else 0.0,
            clipping=clipping,
        )

    def result(self, site: str) -> SiteQuality:
        """The verdict on everything pushed so far (the monitor keeps its state)."""
        th = self.thresholds
        seconds = self._n / self.rate_hz
        rms_dbfs = _dbfs(self._n, self._sum, self._sum_sq)
        clipped_fraction = self._clipped / self._n if self._n else 0.0
        envelope = band_envelope(np.concatenate(self._low_rows, axis=1)) if self._low_rows else np.zeros(0)
        bpm, periodicity = heart_rate(envelope, 1.0 / self.config.frame_period_s, th)
        contrast = envelope_contrast(envelope)

        found: list[tuple[str, str]] = []
        if seconds < th.min_seconds:
            found.append(("too_short", f"only {seconds:.1f} s recorded, {th.min_seconds:.0f} s needed: "
                                       "hold the stethoscope in place for longer"))
        if clipped_fraction > th.max_clipped_fraction:
            found.append(("clipping", f"signal clipped {100 * clipped_fraction:.1f}% of the time: "
                                      "press more lightly or lower the gain"))
        flat = self._n > 0 and self._max - self._min <= th.flat_span_lsb
        if flat:
            found.append(("flat", "no signal at all (a flat line): check that the stethoscope is plugged in and on"))
        elif self._n and rms_dbfs < th.min_rms_dbfs:
            found.append(("disconnected", f"signal far too weak ({rms_dbfs:.0f} dBFS): check the stethoscope's "
                                          "connection and that it rests on the skin"))
        # Without enough signal the heart rate says nothing the reasons above do not already say.
        if not found:
            if bpm is None or periodicity < th.min_periodicity or contrast < th.min_envelope_contrast:
                found.append(("heart_rate", "no regular heartbeat heard: hold the stethoscope still on the skin "
                                            "and keep the room quiet"))
            elif not th.min_heart_rate_bpm <= bpm <= th.max_heart_rate_bpm:
                found.append(("heart_rate", f"heart rate reads {bpm:.0f} bpm, outside {th.min_heart_rate_bpm:.0f}-"
                                            f"{th.max_heart_rate_bpm:.0f}: hold still and record again"))
        return SiteQuality(
            site=site,
            ok=not found,
            reasons=tuple(code for code, _ in found),
            messages=tuple(message for _, message in found),
            seconds=seconds,
            rms_dbfs=rms_dbfs,
            peak_fraction=self._peak / FULL_SCALE,
            clipped_fraction=clipped_fraction,
            heart_rate_bpm=bpm,
            periodicity=periodicity,
            envelope_contrast=contrast,
        )



def assess(
    audio: Audio,
    site: str,
    config: FrontEndConfig,
    features: np.ndarray | None = None,
    thresholds: QualityThresholds = QualityThresholds(),
) -> SiteQuality:
    """The gate on a whole recording; `features` (float32 [n_freq, T]) are computed when not given."""
    if features is None:
        features = compute_features(audio, config)
    monitor = QualityMonitor(audio.rate_hz, config, thresholds)
    monitor.push(np.asarray(audio.samples, dtype=np.int16), features)
    return monitor.result(site)


def heart_rate(envelope: np.ndarray, frame_rate_hz: float, thresholds: QualityThresholds = QualityThresholds()) -> tuple[float | None, float]:
    """Beat rate of an envelope sampled at frame_rate_hz: (bpm, periodicity), or (None, 0.0).

    The envelope minus its moving average (detrend_seconds) is autocorrelated (biased, normalized
    to 1 at lag 0). Candidate periods are the local maxima between search_bpm, after the
    autocorrelation first turns negative (the sound's own width is not a period); the period is
    the shortest-lag candidate at least multiple_ratio as strong as the strongest (which can be a
    multiple of the period), refined by a parabola through its neighbours. Periodicity is the
    autocorrelation at that peak.
    """
    th = thresholds
    envelope = np.asarray(envelope, dtype=np.float64)
    n = len(envelope)
    lag_min = max(1, int(math.floor(frame_rate_hz * 60.0 / th.search_bpm[1])))
    lag_max = min(int(math.ceil(frame_rate_hz * 60.0 / th.search_bpm[0])), n // 2)
    if lag_max - lag_min < 2:
        return None, 0.0
    e = envelope - _moving_average(envelope, max(1, round(th.detrend_seconds * frame_rate_hz)))
    energy = float(e @ e)
    if not energy > 0.0:
        return None, 0.0
    ac = np.array([float(e[: n - k] @ e[k:]) for k in range(lag_max + 2)]) / energy
    negative = np.flatnonzero(ac[: lag_max + 1] < 0.0)
    if len(negative) == 0:
        return None, 0.0
    start = max(lag_min, int(negative[0]))
    lags = np.arange(max(start, 1), lag_max + 1)
    peaks = lags[(ac[lags] >= ac[lags - 1]) & (ac[lags] > ac[lags + 1])]
    if len(peaks) == 0:
        return None, 0.0
    # The strongest peak can be a multiple of the period (beats that alternate in loudness or
    # shape); the shortest lag nearly as strong is the period.
    best = int(peaks[np.argmax(ac[peaks])])
    if not ac[best] > 0.0:
        return None, 0.0
    best = int(peaks[np.flatnonzero(ac[peaks] >= th.multiple_ratio * ac[best])[0]])
    left, mid, right = ac[best - 1], ac[best], ac[best + 1]
    curvature = left - 2.0 * mid + right
    offset = 0.5 * (left - right) / curvature if curvature < 0.0 else 0.0
    return float(60.0 * frame_rate_hz / (best + offset)), float(mid)


def band_envelope(log_power: np.ndarray) -> np.ndarray:
    """Beat envelope of pooled ln-power frames [rows, T] (the rows to sum): sqrt of the summed power, float64 [T]."""
    return np.sqrt(np.exp(log_power.astype(np.float64)).sum(axis=0))


def envelope_contrast(envelope: np.ndarray) -> float:
    """95th percentile of the envelope over its median: about 1.3 for steady noise, 2 to 40 with beats
    (0.0 for an empty or silent envelope)."""
    if len(envelope) == 0:
        return 0.0
    median = float(np.percentile(envelope, 50))
    return float(np.percentile(envelope, 95)) / median if median > 0.0 else 0.0


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Centred mean over `width` samples, over fewer at the ends (no zero padding)."""
    if width <= 1 or len(x) == 0:
        return x.copy()
    cumulative = np.concatenate([[0.0], np.cumsum(x)])
    i = np.arange(len(x))
    low = np.maximum(i - width // 2, 0)
    high = np.minimum(i - width // 2 + width, len(x))
    return (cumulative[high] - cumulative[low]) / (high - low)


def _dbfs(n: int, total: int, total_sq: int) -> float:
    """RMS in dBFS of n int16 samples with the given sum and sum of squares, DC removed."""
    if n == 0:
        return -math.inf
    variance = (total_sq - total * total / n) / n
    return 10.0 * math.log10(variance / FULL_SCALE**2) if variance > 0.0 else -math.inf
