"""FrontEndConfig: the one definition of DESIGN.md contract 1 (signal front-end), and its JSON form."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass

from runtime.dsp.resample import MAX_RATE_HZ, passband_fraction

#: Written into every serialized config; from_json refuses any other value.
SCHEMA = "pcg-screen/frontend-config/1"
WINDOWS = ("hann",)


@dataclass(frozen=True)
class FrontEndConfig:
    """Every number that turns audio into the model's pooled log spectrogram.

    Signal path: int16 samples / 32768 -> resample to `target_rate_hz` -> frames -> log power in
    a band -> temporal mean pooling. Defaults, and why:

    - target_rate_hz = 1000: heart sounds and murmurs live below ~400 Hz; 1 kHz keeps that band
      with margin and makes every later number rate-independent. The input rate belongs to each
      stream or file (a resampler is built per stream), never to the model; it must lie in
      min_input_rate_hz .. MAX_RATE_HZ (954 to 192000 Hz at the defaults, see check_input_rate).
    - kaiser_beta = 5.0, half_len_factor = 10: scipy.signal.resample_poly's defaults (Kaiser-windowed
      sinc, 2*10*max(up, down)+1 taps), so offline tools and the field box agree with scipy.
    - window = "hann" (periodic), n_fft = win_length = 128 samples (128 ms, 7.8 Hz bins),
      hop_samples = 16 (16 ms). No centring or padding: frame i covers samples
      [i*hop, i*hop + win_length), zero-padded to n_fft; an incomplete last frame is dropped.
    - band_hz = (25.0, 400.0), both ends inclusive: below 25 Hz is motion and handling noise,
      above 400 Hz little heart sound energy remains. At the defaults: rfft bins 4..51, 48 rows.
    - power = |rfft(frame * window)|^2 / sum(window^2); features are ln(power + log_floor) with
      log_floor = 1e-10 (silence maps to -23 rather than -inf).
    - pool_frames = 2, pool_stride = 2: mean of the log power over 2 frames every 2 frames, so
      one output frame per 32 ms; an incomplete last pooling window is dropped.
    - clip_seconds = 8.0: the model's crop length (clip_frames pooled frames).
    """

    target_rate_hz: int = 1000
    kaiser_beta: float = 5.0
    half_len_factor: int = 10
    window: str = "hann"
    n_fft: int = 128
    win_length: int = 128
    hop_samples: int = 16
    band_hz: tuple[float, float] = (25.0, 400.0)
    log_floor: float = 1e-10
    pool_frames: int = 2
    pool_stride: int = 2
    clip_seconds: float = 8.0

    def __post_init__(self) -> None:
        # Floats stay floats (5 and 5.0 would serialize, and hash, differently).
        object.__setattr__(self, "band_hz", tuple(float(f) for f in self.band_hz))
        for name in ("kaiser_beta", "log_floor", "clip_seconds"):
            object.__setattr__(self, name, float(getattr(self, name)))
        problems = []
        for name in ("target_rate_hz", "half_len_factor", "n_fft", "win_length", "hop_samples", "pool_frames", "pool_stride"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if self.win_length > self.n_fft:
            problems.append(f"win_length ({self.win_length}) must not exceed n_fft ({self.n_fft})")
        if self.window not in WINDOWS:
            problems.append(f"window {self.window!r} is not one of {WINDOWS}")
        low, high = self.band_hz
        if not 0.0 <= low <= high <= self.target_rate_hz / 2:
            problems.append(f"band_hz {self.band_hz} must satisfy 0 <= low <= high <= {self.target_rate_hz / 2}")
        if not self.log_floor > 0:
            problems.append("log_floor must be > 0")
        if not self.clip_seconds > 0:
            problems.append("clip_seconds must be > 0")
        if problems:
            raise ValueError("invalid front-end config: " + "; ".join(problems))
        if self.n_freq == 0:
            raise ValueError(f"band_hz {self.band_hz} contains no rfft bin at n_fft={self.n_fft}")

    @property
    def band_bins(self) -> tuple[int, int]:
        """rfft bin range [first, stop) whose centre frequencies lie in band_hz (inclusive)."""
        bin_hz = self.target_rate_hz / self.n_fft
        eps = 1e-9  # band edges that sit exactly on a bin stay inclusive despite rounding
        first = math.ceil(self.band_hz[0] / bin_hz - eps)
        last = math.floor(self.band_hz[1] / bin_hz + eps)
        return first, max(first, last + 1)

    @property
    def n_freq(self) -> int:
        """Frequency rows of the features (48 at the defaults)."""
        first, stop = self.band_bins
        return stop - first

    @property
    def min_input_rate_hz(self) -> int:
        """Lowest input rate whose resampling keeps the whole band (954 Hz at the defaults).

        The resampler passes frequencies up to passband_fraction() of the lower rate (0.4197 at
        the defaults) and weakens those above: from an input below this rate the top of band_hz
        would come out weaker than the model saw in training, or empty. Twice the band's top
        (800 Hz, its Nyquist rate) is not enough: the top row would lose 5.7 dB.
        """
        fraction = passband_fraction(self.kaiser_beta, self.half_len_factor)
        return math.ceil(self.band_hz[1] / fraction - 1e-9)

    def check_input_rate(self, rate_hz: int) -> None:
        """ValueError, in a sentence for the person recording, unless rate_hz lies in
        min_input_rate_hz .. MAX_RATE_HZ (where the resampler's memory is bounded)."""
        low, high = self.min_input_rate_hz, MAX_RATE_HZ
        supported = f"record at {low} to {high} Hz (stethoscopes commonly use 4000 Hz)"
        if rate_hz < low:
            raise ValueError(
                f"the recording's sample rate is {rate_hz} Hz, too low for screening: heart sounds are analysed "
                f"up to {self.band_hz[1]:g} Hz, and a recording keeps them only when made at {low} Hz or more; "
                f"{supported}"
            )
        if rate_hz > high:
            raise ValueError(
                f"the recording declares a sample rate of {rate_hz} Hz, above the {high} Hz this software "
                f"supports: the file may be damaged; {supported}"
            )

    @property
    def frame_period_s(self) -> float:
        """Seconds between pooled output frames (0.032 at the defaults)."""
        return self.hop_samples * self.pool_stride / self.target_rate_hz

    def frames_for(self, n_samples: int) -> int:
        """Pooled frames produced from `n_samples` samples at target_rate_hz."""
        if n_samples < self.win_length:
            return 0
        n_stft = (n_samples - self.win_length) // self.hop_samples + 1
        if n_stft < self.pool_frames:
            return 0
        return (n_stft - self.pool_frames) // self.pool_stride + 1

    @property
    def clip_frames(self) -> int:
        """Pooled frames in one model crop: what clip_seconds of audio yields (246 at the defaults)."""
        return self.frames_for(round(self.clip_seconds * self.target_rate_hz))

    def to_dict(self) -> dict:
        """Plain-JSON dict, with the schema tag."""
        fields = dataclasses.asdict(self)
        fields["band_hz"] = list(self.band_hz)
        return {"schema": SCHEMA, **fields}

    def to_json(self) -> str:
        """Canonical JSON text: sorted keys, compact separators (what config_hash hashes)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def config_hash(self) -> str:
        """SHA-256 hex digest of to_json(): the same in every run and process."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    @classmethod
    def from_dict(cls, data: dict) -> FrontEndConfig:
        """Inverse of to_dict; ValueError on a wrong schema, unknown or missing keys, wrong types."""
        if not isinstance(data, dict):
            raise ValueError(f"front-end config must be a JSON object, got {type(data).__name__}")
        if data.get("schema") != SCHEMA:
            raise ValueError(f"front-end config schema is {data.get('schema')!r}; this runtime reads {SCHEMA!r}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        given = set(data) - {"schema"}
        if given - set(fields):
            raise ValueError(f"unknown front-end config keys: {sorted(given - set(fields))}")
        if set(fields) - given:
            raise ValueError(f"missing front-end config keys: {sorted(set(fields) - given)}")
        values = {}
        for name, default in ((f.name, f.default) for f in fields.values()):
            value = data[name]
            if isinstance(default, tuple):
                ok = isinstance(value, list) and len(value) == len(default)
                ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
                value = tuple(value) if ok else value
            elif isinstance(default, float):
                ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            else:
                ok = isinstance(value, type(default)) and not isinstance(value, bool)
            if not ok:
                raise ValueError(f"front-end config key {name!r}: expected {type(default).__name__}, got {value!r}")
            values[name] = value
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> FrontEndConfig:
        """Parse to_json() output; ValueError when it is not a valid config of this schema."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"front-end config is not valid JSON: {err}") from None
        return cls.from_dict(data)
