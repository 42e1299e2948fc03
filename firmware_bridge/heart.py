"""Physiological heart-sound model (numpy only): what the virtual stethoscope streams and pcg-synth writes.

A `HeartProfile` describes one patient's heart and one recording's conditions: heart rate and its
variability (respiratory sinus arrhythmia + random jitter), S1 (M1, T1) and S2 (A2, P2 with a split
that widens on inspiration), optional S3/S4, a systolic and/or diastolic murmur in the CirCor
vocabulary, and the noises of a real auscultation (breathing, contact/friction bursts, speech-like
ambient noise, mains hum, a sensor floor) seen through the stethoscope's low-pass response.
A recording can also be deliberately unusable ("noise", "clipped", "flat"): the material of the
CirCor "Unknown" murmur class and of quality-gate tests.

- `synthesize(profile, site, duration_s, rate_hz, rng)` -> (float64 samples in [-1, 1], segments),
  the segments being the true CirCor segmentation (1 S1, 2 systole, 3 S2, 4 diastole; one 0 interval
  for an unusable recording, which no annotator could segment).
- `HeartSoundGenerator(profile, site, rate_hz, seed).read(n_samples)` -> int16, endless and
  continuous; the concatenation of reads does not depend on the read sizes and equals
  `to_pcm16(synthesize(..., rng=np.random.default_rng(seed))[0])` over the same span.

How: the signal is rendered in fixed blocks of `block_samples`; every sound is an event (a beat, a
noise frame, a contact burst) rendered whole into an accumulator when it starts before the end of the
block being emitted, each kind of event drawing from its own random stream. Broadband noises are
frames of shaped complex-Gaussian spectra, sine-windowed and overlap-added at 50 % (the squared
windows sum to one, so the noise is stationary and has no seams); the stethoscope response is part
of each broadband source's spectral shape (the heart sounds themselves lie below its cut-off).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np

#: CirCor age groups (the same strings as runtime.records.AGE_GROUPS; firmware_bridge may not import runtime).
AGE_GROUPS: tuple[str, ...] = ("Neonate", "Infant", "Child", "Adolescent", "Young adult")
#: Auscultation site names (the same strings as runtime.sites.SITES).
SITES: tuple[str, ...] = ("AV", "PV", "TV", "MV", "Phc")

#: Normal resting heart rate per age group, beats per minute (inclusive bounds).
NORMAL_HEART_RATE_BPM: dict[str, tuple[float, float]] = {
    "Neonate": (120.0, 160.0),
    "Infant": (110.0, 150.0),
    "Child": (75.0, 115.0),
    "Adolescent": (60.0, 100.0),
    "Young adult": (60.0, 100.0),
}
#: Pregnancy raises the resting heart rate by about 10-15 bpm: the normal range shifts up by this much.
PREGNANCY_HEART_RATE_SHIFT_BPM = 12.0
_RESPIRATION_RATE_BPM = {
    "Neonate": (40.0, 60.0),
    "Infant": (30.0, 45.0),
    "Child": (18.0, 28.0),
    "Adolescent": (12.0, 20.0),
    "Young adult": (12.0, 18.0),
}

SYSTOLIC_TIMINGS: tuple[str, ...] = ("Early-systolic", "Mid-systolic", "Late-systolic", "Holosystolic")
DIASTOLIC_TIMINGS: tuple[str, ...] = ("Early-diastolic", "Mid-diastolic", "Holodiastolic")
SHAPES: tuple[str, ...] = ("Plateau", "Diamond", "Decrescendo", "Crescendo")
PITCHES: tuple[str, ...] = ("Low", "Medium", "High")
SYSTOLIC_GRADES: tuple[str, ...] = ("I/VI", "II/VI", "III/VI")
DIASTOLIC_GRADES: tuple[str, ...] = ("I/IV", "II/IV", "III/IV")
QUALITIES: tuple[str, ...] = ("Harsh", "Blowing", "Musical")
#: Deliberately unusable recordings: buried in noise, saturated, or a disconnected (flat) sensor.
UNUSABLE_KINDS: tuple[str, ...] = ("noise", "clipped", "flat")

# Where in the systolic (S1 end -> S2 start) or diastolic (S2 end -> next S1) interval a murmur
# sounds, as fractions of that interval.
_TIMING_WINDOW = {
    "Early-systolic": (0.0, 0.45),
    "Mid-systolic": (0.2, 0.8),
    "Late-systolic": (0.55, 1.0),
    "Holosystolic": (0.0, 1.0),
    "Early-diastolic": (0.0, 0.45),
    "Mid-diastolic": (0.25, 0.75),
    "Holodiastolic": (0.0, 1.0),
}
_PITCH_CENTRE_HZ = {"Low": 90.0, "Medium": 180.0, "High": 320.0}
# Murmur RMS at its loudest, relative to the S1 peak amplitude.
_GRADE_LEVEL = {"I/VI": 0.08, "II/VI": 0.15, "III/VI": 0.28, "I/IV": 0.06, "II/IV": 0.11, "III/IV": 0.2}
# Murmur gain at its most audible site, at the other listed sites, and elsewhere.
_MURMUR_GAIN_MOST_AUDIBLE, _MURMUR_GAIN_LISTED, _MURMUR_GAIN_ELSEWHERE = 1.0, 0.45, 0.0
# Per site: (M1, T1, A2, P2) gains. S1 is loudest at the apex/tricuspid area, S2 at the base.
_SITE_GAINS = {
    "AV": (0.6, 0.3, 1.0, 0.45),
    "PV": (0.55, 0.3, 0.9, 0.8),
    "TV": (0.7, 0.9, 0.55, 0.3),
    "MV": (1.0, 0.45, 0.5, 0.25),
    "Phc": (0.8, 0.5, 0.7, 0.4),
}


class Interval(NamedTuple):
    """One interval of the true segmentation, in seconds; state as in CirCor .tsv files."""

    start_s: float
    end_s: float
    state: int  # 0 unannotated, 1 S1, 2 systole, 3 S2, 4 diastole


@dataclass(frozen=True)
class Murmur:
    """One murmur in the CirCor vocabulary. The timing says whether it is systolic or diastolic."""

    timing: str  # SYSTOLIC_TIMINGS or DIASTOLIC_TIMINGS
    shape: str  # SHAPES
    pitch: str  # PITCHES
    grade: str  # SYSTOLIC_GRADES for a systolic murmur, DIASTOLIC_GRADES for a diastolic one
    quality: str  # QUALITIES

    def __post_init__(self):
        grades = SYSTOLIC_GRADES if self.systolic else DIASTOLIC_GRADES
        for name, value, allowed in (
            ("timing", self.timing, SYSTOLIC_TIMINGS + DIASTOLIC_TIMINGS),
            ("shape", self.shape, SHAPES),
            ("pitch", self.pitch, PITCHES),
            ("grade", self.grade, grades),
            ("quality", self.quality, QUALITIES),
        ):
            if value not in allowed:
                raise ValueError(f"murmur {name} {value!r} is not one of {', '.join(allowed)}")

    @property
    def systolic(self) -> bool:
        return self.timing in SYSTOLIC_TIMINGS


@dataclass(frozen=True)
class HeartProfile:
    """One patient's heart and one recording's conditions. Levels are fractions of full scale."""

    heart_rate_bpm: float
    rsa_fraction: float = 0.04  # peak RR-interval modulation by breathing (shorter on inspiration)
    rr_jitter_fraction: float = 0.015  # random beat-to-beat RR variation, standard deviation
    respiration_rate_bpm: float = 16.0
    amplitude: float = 0.4  # S1 peak at the loudest site
    s1_hz: float = 60.0  # M1 centre frequency; T1 sits ~1.4 times higher
    s2_hz: float = 90.0  # A2 centre frequency; P2 a little lower
    s2_split_ms: float = 30.0  # A2-P2 split at expiration
    s2_split_inspiration_ms: float = 25.0  # added at peak inspiration (0: a fixed split)
    s3_level: float = 0.0  # relative to S1; 0 means no S3
    s4_level: float = 0.0  # relative to S1; 0 means no S4
    systolic_murmur: Murmur | None = None
    diastolic_murmur: Murmur | None = None
    murmur_sites: tuple[str, ...] = ()  # where a murmur is audible (CirCor "Murmur locations")
    most_audible_site: str | None = None
    breath_level: float = 0.01  # breath-noise RMS at peak inspiration
    ambient_level: float = 0.0  # speech-like room noise RMS while someone talks
    hum_level: float = 0.0  # mains hum amplitude
    mains_hz: float = 50.0
    contact_rate_hz: float = 0.05  # friction/contact bursts per second
    contact_level: float = 0.1  # burst peak amplitude
    floor_level: float = 0.002  # sensor noise RMS
    lowpass_hz: float = 800.0  # stethoscope response cut-off (2nd-order)
    unusable: str | None = None  # one of UNUSABLE_KINDS for a deliberately unusable recording

    def __post_init__(self):
        if not 20.0 <= self.heart_rate_bpm <= 300.0:
            raise ValueError(f"heart_rate_bpm {self.heart_rate_bpm} is outside 20-300")
        if self.systolic_murmur is not None and not self.systolic_murmur.systolic:
            raise ValueError(f"systolic_murmur has diastolic timing {self.systolic_murmur.timing!r}")
        if self.diastolic_murmur is not None and self.diastolic_murmur.systolic:
            raise ValueError(f"diastolic_murmur has systolic timing {self.diastolic_murmur.timing!r}")
        for site in self.murmur_sites:
            _check_site(site)
        if self.most_audible_site is not None and self.most_audible_site not in self.murmur_sites:
            raise ValueError(f"most_audible_site {self.most_audible_site!r} is not in murmur_sites {self.murmur_sites}")
        if self.unusable is not None and self.unusable not in UNUSABLE_KINDS:
            raise ValueError(f"unusable {self.unusable!r} is not one of {', '.join(UNUSABLE_KINDS)}")

    @property
    def murmurs(self) -> tuple[Murmur, ...]:
        return tuple(m for m in (self.systolic_murmur, self.diastolic_murmur) if m is not None)

    def murmur_gain(self, site: str) -> float:
        """Murmur loudness at `site` relative to its most audible site (1.0 there, 0.0 where not listed)."""
        if site == self.most_audible_site:
            return _MURMUR_GAIN_MOST_AUDIBLE
        return _MURMUR_GAIN_LISTED if site in self.murmur_sites else _MURMUR_GAIN_ELSEWHERE


def normal_heart_rate_range(age_group: str, pregnant: bool = False) -> tuple[float, float]:
    """Normal resting heart-rate range (bpm) for `age_group`, shifted up during pregnancy."""
    low, high = NORMAL_HEART_RATE_BPM[_check_age_group(age_group)]
    shift = PREGNANCY_HEART_RATE_SHIFT_BPM if pregnant else 0.0
    return low + shift, high + shift


def random_murmur(rng: np.random.Generator, systolic: bool, **fixed: str) -> Murmur:
    """A murmur drawn with CirCor-like frequencies; keyword arguments (timing=..., grade=...) fix fields."""

    def pick(name: str, values: tuple[str, ...], weights: tuple[float, ...]) -> str:
        value = str(values[rng.choice(len(values), p=np.asarray(weights) / sum(weights))])
        return fixed.get(name, value)

    if systolic:
        timing = pick("timing", SYSTOLIC_TIMINGS, (0.4, 0.15, 0.03, 0.42))
        grade = pick("grade", SYSTOLIC_GRADES, (0.55, 0.27, 0.18))
    else:
        timing = pick("timing", DIASTOLIC_TIMINGS, (0.6, 0.25, 0.15))
        grade = pick("grade", DIASTOLIC_GRADES, (0.6, 0.3, 0.1))
    shape = pick("shape", SHAPES, (0.5, 0.2, 0.25, 0.05))
    pitch = pick("pitch", PITCHES, (0.45, 0.35, 0.2))
    quality = pick("quality", QUALITIES, (0.35, 0.58, 0.07))
    return Murmur(timing=timing, shape=shape, pitch=pitch, grade=grade, quality=quality)


def random_profile(
    rng: np.random.Generator,
    age_group: str,
    *,
    pregnant: bool = False,
    heart_rate_bpm: float | None = None,
    systolic_murmur: Murmur | None = None,
    diastolic_murmur: Murmur | None = None,
    murmur_sites: tuple[str, ...] = (),
    most_audible_site: str | None = None,
    s3: bool = False,
    s4: bool = False,
) -> HeartProfile:
    """A plausible profile for `age_group`. The heart rate is drawn inside the normal range for the
    age (and pregnancy) unless given. With a murmur and no `murmur_sites`, the most audible site is
    one of the four guided sites and each other guided site hears it with probability one half."""
    low, high = normal_heart_rate_range(age_group, pregnant)
    if heart_rate_bpm is None:
        heart_rate_bpm = float(np.clip(rng.normal((low + high) / 2, (high - low) / 5), low + 4, high - 4))
    if (systolic_murmur or diastolic_murmur) and not murmur_sites:
        most_audible_site = str(rng.choice(SITES[:4]))
        murmur_sites = tuple(s for s in SITES[:4] if s == most_audible_site or rng.random() < 0.5)
    young = age_group in ("Neonate", "Infant")
    resp_low, resp_high = _RESPIRATION_RATE_BPM[age_group]
    heart = HeartProfile(
        heart_rate_bpm=float(heart_rate_bpm),
        rsa_fraction=float(rng.uniform(0.01, 0.03) if young else rng.uniform(0.03, 0.08)),
        rr_jitter_fraction=float(rng.uniform(0.008, 0.025)),
        respiration_rate_bpm=float(rng.uniform(resp_low, resp_high)),
        amplitude=float(rng.uniform(0.3, 0.5)),
        s1_hz=float(rng.uniform(45.0, 75.0)),
        s2_hz=float(rng.uniform(70.0, 120.0)),
        s2_split_ms=float(rng.uniform(10.0, 25.0) if young else rng.uniform(15.0, 35.0)),
        s2_split_inspiration_ms=float(rng.uniform(5.0, 15.0) if young else rng.uniform(15.0, 35.0)),
        s3_level=float(rng.uniform(0.25, 0.45)) if s3 else 0.0,
        s4_level=float(rng.uniform(0.25, 0.45)) if s4 else 0.0,
        systolic_murmur=systolic_murmur,
        diastolic_murmur=diastolic_murmur,
        murmur_sites=tuple(murmur_sites),
        most_audible_site=most_audible_site,
    )
    return with_random_conditions(heart, rng)


def with_random_conditions(profile: HeartProfile, rng: np.random.Generator) -> HeartProfile:
    """`profile` with freshly drawn recording conditions (breathing, room noise, hum, contact bursts,
    sensor floor, stethoscope cut-off): the same heart heard in another recording."""
    return replace(
        profile,
        breath_level=float(rng.uniform(0.004, 0.03)),
        ambient_level=float(rng.uniform(0.003, 0.02)) if rng.random() < 0.5 else 0.0,
        hum_level=float(rng.uniform(0.002, 0.01)) if rng.random() < 0.2 else 0.0,
        mains_hz=50.0 if rng.random() < 0.5 else 60.0,
        contact_rate_hz=float(rng.uniform(0.0, 0.3)),
        contact_level=float(rng.uniform(0.05, 0.2)),
        floor_level=float(rng.uniform(0.001, 0.004)),
        lowpass_hz=float(rng.uniform(500.0, 1000.0)),
    )


def synthesize(
    profile: HeartProfile, site: str, duration_s: float, rate_hz: int, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[Interval, ...]]:
    """`duration_s` of PCG at `site`: float64 samples in [-1, 1] (shape [round(duration_s * rate_hz)])
    and the true segmentation covering [0, duration_s] in cycle order S1 -> systole -> S2 -> diastole
    (one state-0 interval for an unusable recording)."""
    n_samples = int(round(duration_s * rate_hz))
    engine = _Engine(profile, site, rate_hz, rng, keep_segments=True)
    blocks = [engine.next_block() for _ in range(-(-n_samples // engine.block_samples))]
    samples = np.concatenate(blocks)[:n_samples] if blocks else np.zeros(0)
    end_s = n_samples / rate_hz
    if profile.unusable is not None:
        return samples, (Interval(0.0, end_s, 0),)
    segments = tuple(
        Interval(max(start, 0.0), min(end, end_s), state)
        for start, end, state in engine.segments
        if end > 0.0 and start < end_s
    )
    return samples, segments


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] to int16 (values outside are clipped; 1.0 maps to 32767)."""
    return np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)


class HeartSoundGenerator:
    """Endless, continuous int16 PCG for one profile at one site; reads of any size concatenate to
    the same signal. `reset()` restarts it from the beginning."""

    def __init__(self, profile: HeartProfile, site: str, rate_hz: int, seed: int):
        self.profile = profile
        self.site = _check_site(site)
        self.rate_hz = int(rate_hz)
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        self._engine = _Engine(self.profile, self.site, self.rate_hz, np.random.default_rng(self.seed))
        self._pending = np.zeros(0, dtype=np.int16)

    def read(self, n_samples: int) -> np.ndarray:
        """The next `n_samples` samples as int16, shape [n_samples]."""
        if n_samples < 0:
            raise ValueError(f"n_samples must be >= 0, got {n_samples}")
        parts = [self._pending]
        have = len(self._pending)
        while have < n_samples:
            block = to_pcm16(self._engine.next_block())
            parts.append(block)
            have += len(block)
        joined = np.concatenate(parts)
        self._pending = joined[n_samples:]
        return joined[:n_samples]


def _check_site(site: str) -> str:
    if site not in SITES:
        raise ValueError(f"unknown auscultation site {site!r}; expected one of {', '.join(SITES)}")
    return site


def _check_age_group(age_group: str) -> str:
    if age_group not in AGE_GROUPS:
        raise ValueError(f"unknown age group {age_group!r}; expected one of {', '.join(AGE_GROUPS)}")
    return age_group


@dataclass
class _Levels:
    """The levels actually rendered: the profile's, changed for an unusable recording."""

    heart: float
    breath: float
    ambient: float
    hum: float
    contact_rate_hz: float
    contact: float
    floor: float
    drive: float  # gain before the output stage
    hard_clip: bool
    always_talking: bool = False

    @classmethod
    def of(cls, p: HeartProfile) -> _Levels:
        levels = cls(p.amplitude, p.breath_level, p.ambient_level, p.hum_level, p.contact_rate_hz,
                     p.contact_level, p.floor_level, 1.0, False)
        if p.unusable == "noise":
            levels.heart *= 0.12
            levels.breath = max(6 * p.breath_level, 0.06)
            levels.ambient, levels.always_talking = 0.08, True
            levels.contact_rate_hz, levels.contact = 2.0, 0.35
            levels.floor = 0.02
        elif p.unusable == "clipped":
            levels.drive, levels.hard_clip = 6.0, True
            levels.contact_rate_hz = max(p.contact_rate_hz, 0.5)
        elif p.unusable == "flat":
            levels.heart *= 0.01
            levels.breath = levels.ambient = 0.0
            levels.hum = 0.003
            levels.contact_rate_hz, levels.contact = 0.2, 0.03
            levels.floor = 0.0005
        return levels


@dataclass
class _Engine:
    """Renders blocks of `block_samples` in order; see the module docstring."""

    profile: HeartProfile
    site: str
    rate_hz: int
    rng: np.random.Generator
    keep_segments: bool = False  # a stream runs forever; only synthesize() needs the segmentation
    segments: list[tuple[float, float, int]] = field(default_factory=list)

    def __post_init__(self):
        p, rate = self.profile, self.rate_hz
        _check_site(self.site)
        if rate < 500:
            raise ValueError(f"rate_hz must be >= 500, got {rate}")
        self.levels = _Levels.of(p)
        seeds = self.rng.integers(0, 2**63, size=6)
        self._beat_rng, self._murmur_rng, self._noise_rng, self._talk_rng, self._contact_rng, phase_rng = (
            np.random.default_rng(int(s)) for s in seeds
        )
        self._resp_phase0 = phase_rng.uniform(0, 2 * np.pi)
        self._hum_phase = phase_rng.uniform(0, 2 * np.pi, size=2)
        self._mean_rr_s = 60.0 / p.heart_rate_bpm
        self._next_onset_s = -phase_rng.uniform(0.0, self._mean_rr_s)  # start mid-cycle
        # Noise frames: ~64 ms, hop half a frame; the block is a whole number of hops.
        self.frame = 2 ** max(4, round(math.log2(0.064 * rate)))
        self.hop = self.frame // 2
        self.block_samples = 16 * self.frame
        self._window = np.sin(np.pi * (np.arange(self.frame) + 0.5) / self.frame)
        self._next_frame_start = -self.hop
        self._noise_shapes = self._broadband_shapes()
        self._talk_until_s, self._talking = 0.0, self.levels.always_talking
        self._talk_spans: list[tuple[float, float]] = []
        self._next_contact_s = self._contact_gap()
        self._pos = 0  # absolute index of the accumulator's first sample
        self._acc = np.zeros(2 * self.block_samples)

    # ---- output -------------------------------------------------------------------------------

    def next_block(self) -> np.ndarray:
        end = self._pos + self.block_samples
        end_s = end / self.rate_hz
        while self._next_onset_s * self.rate_hz < end:
            self._render_beat()
        if any(level > 0 for level in (self.levels.breath, self.levels.ambient, self.levels.floor)):
            self._render_noise_frames(end)
        else:
            self._next_frame_start = end
        while self._next_contact_s < end_s:
            self._render_contact(self._next_contact_s)
            self._next_contact_s += self._contact_gap()
        block = self._acc[: self.block_samples].copy()
        if self.levels.hum > 0:
            block += self._hum(np.arange(self._pos, end) / self.rate_hz)
        self._acc = np.concatenate([self._acc[self.block_samples :], np.zeros(self.block_samples)])
        self._pos = end
        block *= self.levels.drive
        return np.clip(block, -1.0, 1.0) if self.levels.hard_clip else _soft_limit(block)

    def _add(self, start: int, x: np.ndarray) -> None:
        rel = start - self._pos
        if rel < 0:  # only before time zero
            x, rel = x[-rel:], 0
        need = rel + len(x)
        if need > len(self._acc):
            self._acc = np.concatenate([self._acc, np.zeros(need - len(self._acc) + self.block_samples)])
        self._acc[rel:need] += x

    # ---- heart --------------------------------------------------------------------------------

    def _breathing(self, t_s: float | np.ndarray):
        """The respiratory cycle, sin(phase): positive during inspiration."""
        return np.sin(2 * np.pi * self.profile.respiration_rate_bpm / 60.0 * t_s + self._resp_phase0)

    def _inspiration(self, t_s: float | np.ndarray):
        """0 at expiration, up to 1 at peak inspiration."""
        return np.maximum(self._breathing(t_s), 0.0)

    def _render_beat(self) -> None:
        p, rng, rate = self.profile, self._beat_rng, self.rate_hz
        onset = self._next_onset_s
        breathing = float(self._breathing(onset))
        insp = max(breathing, 0.0)
        # Sinus arrhythmia: the heart speeds up on inspiration (symmetric, so the mean rate is kept).
        rr = self._mean_rr_s * (1.0 - p.rsa_fraction * breathing + p.rr_jitter_fraction * rng.normal())
        rr = float(np.clip(rr, 0.6 * self._mean_rr_s, 1.5 * self._mean_rr_s))
        next_onset = onset + rr
        # Systole (S1 onset -> S2 onset) shortens with heart rate, but less than the cycle does.
        systole = min(0.33 * math.sqrt(rr), 0.6 * rr)
        s1_len = 0.12 * rr**0.4
        split = (p.s2_split_ms + p.s2_split_inspiration_ms * insp) / 1000.0
        s2_len = 0.09 * rr**0.4 + split
        s2_on, s2_end = onset + systole, onset + systole + s2_len
        if self.keep_segments:
            self.segments += [
                (onset, onset + s1_len, 1),
                (onset + s1_len, s2_on, 2),
                (s2_on, s2_end, 3),
                (s2_end, next_onset, 4),
            ]
        self._next_onset_s = next_onset

        g_m1, g_t1, g_a2, g_p2 = _SITE_GAINS[self.site]
        amp = self.levels.heart * (1.0 + 0.08 * rng.normal()) * (1.0 - 0.1 * insp)
        # Every draw happens whether or not the sound is used, so the beat stream is the same
        # for profiles that differ only in S3/S4.
        jitter = 1.0 + 0.05 * rng.normal(size=6)
        phases = rng.uniform(0, 2 * np.pi, size=6)
        sounds = [  # (time s, centre Hz, decay ms, amplitude)
            (onset + 0.012, p.s1_hz * jitter[0], 9.0, g_m1),
            (onset + 0.012 + 0.025 * rr**0.3, 1.4 * p.s1_hz * jitter[1], 8.0, g_t1),
            (s2_on + 0.006, p.s2_hz * jitter[2], 6.0, g_a2),
            (s2_on + 0.006 + split, 0.85 * p.s2_hz * jitter[3], 6.0, g_p2),
            (s2_on + 0.14 * math.sqrt(rr), 35.0 * jitter[4], 18.0, p.s3_level),
            (next_onset - 0.09 * math.sqrt(rr), 30.0 * jitter[5], 16.0, p.s4_level),
        ]
        for (t_s, hz, tau_ms, gain), phase in zip(sounds, phases):
            if gain > 0:
                self._add(int(round(t_s * rate)), amp * gain * _transient(hz, tau_ms / 1000.0, phase, rate))

        for murmur in p.murmurs:
            gain = p.murmur_gain(self.site)
            if murmur.systolic:
                span = (onset + s1_len, s2_on)
            else:
                span = (s2_end, next_onset)
            # One draw per murmur and beat whatever the site, so the streams stay aligned.
            seed = int(self._murmur_rng.integers(0, 2**63))
            if gain > 0:
                self._render_murmur(murmur, span, self.levels.heart * gain, np.random.default_rng(seed))

    def _render_murmur(self, murmur: Murmur, span: tuple[float, float], scale: float, local: np.random.Generator):
        rate = self.rate_hz
        lo, hi = _TIMING_WINDOW[murmur.timing]
        start = int(math.ceil((span[0] + lo * (span[1] - span[0])) * rate))
        stop = int(math.floor((span[0] + hi * (span[1] - span[0])) * rate))
        n = stop - start
        if n < 8:
            return
        centre = _PITCH_CENTRE_HZ[murmur.pitch] * (1.0 + 0.03 * local.normal())
        if murmur.quality == "Musical":
            t = np.arange(n) / rate
            vibrato = 0.01 * np.sin(2 * np.pi * 5.0 * t + local.uniform(0, 2 * np.pi))
            phase = 2 * np.pi * centre * np.cumsum(1.0 + vibrato) / rate + local.uniform(0, 2 * np.pi)
            x = np.sin(phase) + 0.35 * np.sin(2 * phase) + 0.15 * np.sin(3 * phase)
            x = x + 0.3 * _shaped_noise(local, n, rate, lambda f: _band(f, centre, 0.3 * centre))
        else:
            width = 0.7 if murmur.quality == "Harsh" else 0.35
            cutoff_hz = self.profile.lowpass_hz
            x = _shaped_noise(local, n, rate, lambda f: _band(f, centre, width * centre) * _lowpass(f, cutoff_hz))
            if murmur.quality == "Harsh":  # rough: irregular amplitude flutter
                x *= 1.0 + 0.5 * np.sin(2 * np.pi * local.uniform(25, 45) * np.arange(n) / rate)
        x /= max(float(np.sqrt(np.mean(x**2))), 1e-12)
        level = _GRADE_LEVEL[murmur.grade] * (1.0 + 0.06 * local.normal())
        self._add(start, scale * level * _shape_envelope(murmur.shape, n, rate) * x)

    # ---- noises -------------------------------------------------------------------------------

    def _broadband_shapes(self) -> np.ndarray:
        """Unit-power spectral shapes [breath, speech, floor] x rfft bins, stethoscope response included."""
        f = np.fft.rfftfreq(self.frame, 1.0 / self.rate_hz)
        lp = _lowpass(f, self.profile.lowpass_hz) * (f > 15.0)
        shapes = np.stack([
            _band(f, 250.0, 180.0) * lp,  # breath: broad, mostly 100-600 Hz
            (_band(f, 500.0, 250.0) + 0.6 * _band(f, 1500.0, 400.0)) * lp,  # speech formants
            lp,  # sensor floor
        ])
        full_power = 2 * np.sum(shapes**2, axis=1, keepdims=True) - shapes[:, :1] ** 2
        return shapes / np.sqrt(full_power / self.frame)

    def _talking_at(self, t_s: np.ndarray) -> np.ndarray:
        """1 while someone in the room talks (alternating exponential spurts and pauses)."""
        if self.levels.always_talking:
            return np.ones_like(t_s)
        last = float(t_s[-1])
        while self._talk_until_s <= last:
            duration = self._talk_rng.exponential(2.0 if not self._talking else 1.5)
            if self._talking:
                self._talk_spans.append((self._talk_until_s, self._talk_until_s + duration))
            self._talk_until_s += duration
            self._talking = not self._talking
        self._talk_spans = [s for s in self._talk_spans if s[1] >= float(t_s[0])]
        on = np.zeros_like(t_s)
        for a, b in self._talk_spans:
            on[(t_s >= a) & (t_s < b)] = 1.0
        return on

    def _render_noise_frames(self, end: int) -> None:
        first = self._next_frame_start
        count = -(-(end - first) // self.hop)
        starts = first + self.hop * np.arange(count)
        centre_s = (starts + self.hop) / self.rate_hz
        lv = self.levels
        breath = lv.breath * (0.25 + np.power(self._inspiration(centre_s), 1.5))
        ambient = np.zeros(count)
        if lv.ambient > 0:
            syllables = 0.4 + 0.6 * np.sin(np.pi * 4.5 * centre_s) ** 2
            ambient = lv.ambient * self._talking_at(centre_s) * syllables
        gains = np.stack([breath, ambient, np.full(count, lv.floor)], axis=1)  # [frames, sources]
        magnitude = np.sqrt((gains**2) @ (self._noise_shapes**2))  # [frames, bins]
        bins = magnitude.shape[1]
        spectrum = self._noise_rng.standard_normal((count, 2 * bins)).view(np.complex128) * magnitude
        frames = np.fft.irfft(spectrum * math.sqrt(self.frame / 2.0), n=self.frame, axis=1) * self._window
        out = np.zeros((count + 1) * self.hop)
        out[: count * self.hop] += frames[:, : self.hop].ravel()
        out[self.hop :] += frames[:, self.hop :].ravel()
        self._add(int(first), out)
        self._next_frame_start = int(first + count * self.hop)

    def _contact_gap(self) -> float:
        rate = self.levels.contact_rate_hz
        return float(self._contact_rng.exponential(1.0 / rate)) if rate > 0 else math.inf

    def _render_contact(self, t_s: float) -> None:
        rng, rate = self._contact_rng, self.rate_hz
        duration = rng.uniform(0.02, 0.15)
        level = self.levels.contact * rng.uniform(0.4, 1.2)
        n = max(8, int(duration * rate))
        seed = int(rng.integers(0, 2**63))
        x = _shaped_noise(np.random.default_rng(seed), n, rate,
                          lambda f: _lowpass(f, self.profile.lowpass_hz) / np.sqrt(np.maximum(f, 20.0) / 20.0))
        t = np.arange(n) / rate
        envelope = np.minimum(t / 0.003, 1.0) * np.exp(-t / (duration / 3.0))
        x = x * envelope
        self._add(int(round(t_s * rate)), level * x / max(float(np.max(np.abs(x))), 1e-12))

    def _hum(self, t_s: np.ndarray) -> np.ndarray:
        w = 2 * np.pi * self.profile.mains_hz * t_s
        return self.levels.hum * (np.sin(w + self._hum_phase[0]) + 0.35 * np.sin(3 * w + self._hum_phase[1]))


def _transient(hz: float, tau_s: float, phase: float, rate_hz: int) -> np.ndarray:
    """A damped low-frequency tone with a gamma envelope peaking (at 1) tau_s after its start."""
    t = np.arange(int(7 * tau_s * rate_hz)) / rate_hz
    u = t / tau_s
    envelope = u * u * np.exp(2.0 * (1.0 - u))
    return envelope * np.sin(2 * np.pi * hz * t * (1.0 - 0.1 * u / 7.0) + phase)


def _band(f: np.ndarray, centre_hz: float, width_hz: float) -> np.ndarray:
    return np.exp(-0.5 * ((f - centre_hz) / width_hz) ** 2)


def _lowpass(f: np.ndarray, cutoff_hz: float) -> np.ndarray:
    return 1.0 / np.sqrt(1.0 + (f / cutoff_hz) ** 4)


def _shaped_noise(rng: np.random.Generator, n: int, rate_hz: int, shape) -> np.ndarray:
    """n samples of Gaussian noise with magnitude spectrum `shape(f)` (scale arbitrary)."""
    size = 1 << max(4, (n - 1).bit_length())
    f = np.fft.rfftfreq(size, 1.0 / rate_hz)
    spectrum = rng.standard_normal((len(f), 2)).view(np.complex128)[:, 0] * shape(f)
    return np.fft.irfft(spectrum, n=size)[:n]


def _shape_envelope(shape: str, n: int, rate_hz: int) -> np.ndarray:
    """Murmur loudness over its window: peak 1, 8 ms raised-cosine edges so it never clicks."""
    u = (np.arange(n) + 0.5) / n
    if shape == "Plateau":
        env = np.ones(n)
    elif shape == "Diamond":
        env = 1.0 - np.abs(2.0 * u - 1.0)
    elif shape == "Decrescendo":
        env = 1.0 - u
    else:  # Crescendo
        env = u
    edge = min(int(0.008 * rate_hz), n // 2)
    if edge > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(edge) + 0.5) / edge)
        env[:edge] *= ramp
        env[n - edge :] *= ramp[::-1]
    return env


def _soft_limit(x: np.ndarray, knee: float = 0.75, ceiling: float = 0.98) -> np.ndarray:
    """Identity below `knee`, smoothly compressed above it, never reaching `ceiling`."""
    over = np.abs(x) > knee
    if not np.any(over):
        return x
    y = x.copy()
    room = ceiling - knee
    y[over] = np.sign(x[over]) * (knee + room * np.tanh((np.abs(x[over]) - knee) / room))
    return y
