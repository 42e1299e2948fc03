"""Quality gate on children: RETAKE rates on the shared CirCor and PhysioNet 2016 recordings, the
heart-rate estimate against the annotated beats, and the catch rate on spoiled real recordings.

Run (POSIX): python benchmarks/quality_children.py. Prints a summary and writes
benchmarks/results/quality_children.json. Reads ../shared/data/circor and ../shared/data/physionet2016
in place (PCG_SHARED_DATA overrides ../shared/data); a tree that is absent is skipped with the reason.
Figures, not a test: nothing is asserted and nothing is timed.

What is measured:
- CirCor, the way `pcg-runtime triage` uses the gate: per patient and site the longest recording
  (runtime.batch's repeat rule); a patient is retaken when any of those fails. Rates per patient
  by age group (no age group: the pregnant patients, with "Young adult"), per used recording by
  site, and per recording over all 2,102. The 45 murmur-Unknown patients (the annotator could not
  tell, often for noise) are counted apart and left out of every other CirCor figure.
- PhysioNet 2016: every recording is a patient; rates per database.
- Heart rate: the gate's estimate against the beat rate a cardiac physiologist annotated in the
  CirCor .tsv files (60 / the median S1-to-next-S1 interval; intervals over 2 s span unannotated
  gaps and are left out). The .tsv files are read here only; the gate never sees them.
- Catch rate: a seeded sample of clean recordings (CirCor outside murmur-Unknown, and PhysioNet
  2016), each spoiled once per kind below; a spoiled copy counts only when the gate passes its
  original (so rejecting clean recordings cannot raise the catch rate). Levels are measured in the
  band the front-end analyses (25-400 Hz), so that 1 kHz CirCor and 2 kHz PhysioNet files are
  spoiled alike:
    flat          a dead line: all zeros, or a constant offset with one bit of dither.
    clipped       gain until 15-40 % of the samples sit at full scale (heavy saturation).
    disconnected  no heart: sensor noise (1-8 LSB RMS) and mains hum (50 or 60 Hz with its third
                  harmonic, -55 to -35 dBFS).
    rubbing       friction of the chest piece on skin or clothes: bursts of band-limited white
                  noise (low edge 20-80 Hz, high edge 250 Hz to the Nyquist rate, Hann envelope),
                  0.1-0.4 s long, at random times (Poisson, one a second on average), each 6-16 dB
                  above the recording's RMS, added to the recording.
    talking       speech synthesized with espeak-ng (Brazilian Portuguese, six voice variants,
                  pitch 30-70, 160 words a minute; sentences an operator or parent says during a
                  screening), with 0.1-0.6 s pauses, as loud as the recording (0 dB), added to it.
                  Needs espeak-ng (apt-get install espeak-ng); skipped with a message without it.
    noise         white or pink (1/f) Gaussian noise at 0 dB and -5 dB SNR, added.
  A mix that would pass full scale is scaled to peak at 90 % of it (a recorder's gain set for it):
  the gate must find the rubbing, voices or noise themselves, not the clipping they would cause.
  The overall catch rate is the mean over the six kinds (noise pooled over its four variants), and
  also given pooled over every spoiled copy.
"""

from __future__ import annotations

import os

from one_core import machine_info  # first: one thread, one core, before numpy

import argparse  # noqa: E402
import collections  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from runtime.dsp import FrontEndConfig, resample  # noqa: E402
from runtime.formats import FormatError, load_dataset, read_segmentation, read_wav  # noqa: E402
from runtime.quality import QualityThresholds, SiteQuality, assess  # noqa: E402
from runtime.records import AGE_GROUPS, Audio  # noqa: E402
from runtime.sites import SITES  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "quality_children.json"
SHARED_DATA = Path(os.environ.get("PCG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
CIRCOR = SHARED_DATA / "circor"
PHYSIONET2016 = SHARED_DATA / "physionet2016"
NO_AGE_GROUP = "Young adult / unknown"
SEED = 2022
MAX_BEAT_INTERVAL_S = 2.0


def rate(retakes: int, total: int) -> dict:
    return {"n": total, "retake": retakes, "retake_rate": round(retakes / total, 4) if total else None}


# --- CirCor ------------------------------------------------------------------------------------


def annotated_bpm(segmentation_path: Path | None) -> float | None:
    """60 / the median interval between consecutive annotated S1 onsets; None without one."""
    if segmentation_path is None:
        return None
    try:
        segments = read_segmentation(segmentation_path)
    except (FormatError, OSError):
        return None
    onsets = np.array([s.start_s for s in segments if s.state == 1])
    intervals = np.diff(onsets)
    intervals = intervals[(intervals > 0) & (intervals < MAX_BEAT_INTERVAL_S)]
    return 60.0 / float(np.median(intervals)) if len(intervals) else None


def circor_figures(root: Path, config: FrontEndConfig, thresholds: QualityThresholds) -> dict:
    dataset = load_dataset(root)
    verdicts = []  # (patient, recording, samples, SiteQuality, annotated bpm)
    for patient in dataset.patients:
        for recording in patient.recordings:
            audio = recording.read()
            quality = assess(audio, recording.site, config, thresholds=thresholds)
            verdicts.append((patient, recording, len(audio.samples), quality, annotated_bpm(recording.segmentation_path)))

    # runtime.batch's repeat rule: per site the longest recording (ties: the first)
    used: dict[str, dict[str, tuple]] = collections.defaultdict(dict)
    for v in verdicts:
        patient, recording, n = v[0], v[1], v[2]
        if recording.site not in used[patient.patient_id] or n > used[patient.patient_id][recording.site][2]:
            used[patient.patient_id][recording.site] = v
    patients = {p.patient_id: p for p in dataset.patients}

    def age(patient) -> str:
        group = patient.demographics.age_group
        return group if group in AGE_GROUPS[:-1] else NO_AGE_GROUP

    def patient_rate(ids) -> dict:
        ids = list(ids)
        return rate(sum(any(not v[3].ok for v in used[i].values()) for i in ids), len(ids))

    clean_ids = [i for i, p in patients.items() if p.murmur != "Unknown"]
    unknown_ids = [i for i, p in patients.items() if p.murmur == "Unknown"]
    used_clean = [v for i in clean_ids for v in used[i].values()]
    all_clean = [v for v in verdicts if v[0].murmur != "Unknown"]
    groups = [*AGE_GROUPS[:-1], NO_AGE_GROUP]
    retaken = [
        {"patient": i, "age_group": age(patients[i]), "murmur": patients[i].murmur,
         "sites": {s: list(v[3].reasons) for s, v in used[i].items() if not v[3].ok}}
        for i in patients if any(not v[3].ok for v in used[i].values())
    ]
    return {
        "root": str(root),
        "patients": patient_rate(clean_ids),
        "patients_per_age_group": {g: patient_rate(i for i in clean_ids if age(patients[i]) == g) for g in groups},
        "used_recordings_per_site": {
            s: rate(sum(not v[3].ok for v in used_clean if v[1].site == s), sum(v[1].site == s for v in used_clean))
            for s in SITES
        },
        "recordings": rate(sum(not v[3].ok for v in all_clean), len(all_clean)),
        "recordings_per_age_group": {
            g: rate(sum(not v[3].ok for v in all_clean if age(v[0]) == g), sum(age(v[0]) == g for v in all_clean))
            for g in groups
        },
        "reasons_used_recordings": _reasons(v[3] for v in used_clean),
        "murmur_unknown": {
            "patients": patient_rate(unknown_ids),
            "recordings": rate(sum(not v[3].ok for v in verdicts if v[0].murmur == "Unknown"),
                               sum(v[0].murmur == "Unknown" for v in verdicts)),
            "reasons_used_recordings": _reasons(v[3] for i in unknown_ids for v in used[i].values()),
        },
        "heart_rate_vs_annotation": {
            "all_recordings": _heart_rate_accuracy([(v[3], v[4]) for v in verdicts]),
            "passed_recordings": _heart_rate_accuracy([(v[3], v[4]) for v in verdicts if v[3].ok]),
            "per_annotated_rate": {
                name: _heart_rate_accuracy([(v[3], v[4]) for v in verdicts if v[4] is not None and low <= v[4] < high])
                for name, (low, high) in {"below 100 bpm": (0, 100), "100-140 bpm": (100, 140),
                                          "140 bpm and above": (140, 1000)}.items()
            },
        },
        "retaken_patients": retaken,
    }


def _reasons(qualities) -> dict:
    counts = collections.Counter(r for q in qualities for r in q.reasons)
    return dict(counts.most_common())


def _heart_rate_accuracy(pairs: list[tuple[SiteQuality, float | None]]) -> dict:
    annotated = [(q.heart_rate_bpm, bpm) for q, bpm in pairs if bpm is not None]
    measured = [(m, a) for m, a in annotated if m is not None]
    if not measured:
        return {"annotated": len(annotated), "estimated": 0}
    error = np.array([m - a for m, a in measured])
    relative = np.abs(error) / np.array([a for _, a in measured])
    return {
        "annotated": len(annotated),
        "estimated": len(measured),
        "median_abs_error_bpm": round(float(np.median(np.abs(error))), 2),
        "median_abs_relative_error": round(float(np.median(relative)), 4),
        "within_10_percent": round(float(np.mean(relative <= 0.10)), 4),
        "read_double": round(float(np.mean(np.abs(np.array([m / a for m, a in measured]) - 2.0) <= 0.2)), 4),
        "read_half": round(float(np.mean(np.abs(np.array([m / a for m, a in measured]) - 0.5) <= 0.05)), 4),
        "annotated_bpm_median": round(float(statistics.median(a for _, a in annotated)), 1),
    }


# --- PhysioNet 2016 ------------------------------------------------------------------------------


def physionet_figures(root: Path, config: FrontEndConfig, thresholds: QualityThresholds) -> dict:
    verdicts = []
    for patient in load_dataset(root).patients:
        recording = patient.recordings[0]
        verdicts.append((patient, assess(recording.read(), recording.site, config, thresholds=thresholds)))
    databases = sorted({p.group for p, _ in verdicts})
    return {
        "root": str(root),
        "recordings": rate(sum(not q.ok for _, q in verdicts), len(verdicts)),
        "per_database": {d: rate(sum(not q.ok for p, q in verdicts if p.group == d), sum(p.group == d for p, _ in verdicts))
                         for d in databases},
        "per_label": {label: rate(sum(not q.ok for p, q in verdicts if p.outcome == label),
                                  sum(p.outcome == label for p, _ in verdicts)) for label in ("Normal", "Abnormal")},
        "reasons": _reasons(q for _, q in verdicts),
        "retaken": [{"record": p.patient_id, "database": p.group, "reasons": list(q.reasons)} for p, q in verdicts if not q.ok],
    }


# --- spoiling real recordings --------------------------------------------------------------------


def in_band_power(x: np.ndarray, rate_hz: int, band_hz: tuple[float, float]) -> float:
    """Mean power of x (DC removed) in band_hz, from its spectrum (Parseval)."""
    spectrum = np.fft.rfft(x - x.mean())
    freqs = np.fft.rfftfreq(len(x), 1.0 / rate_hz)
    inside = (freqs >= band_hz[0]) & (freqs <= band_hz[1])
    return float(2.0 * np.sum(np.abs(spectrum[inside]) ** 2) / len(x) ** 2)


def shaped_noise(n: int, rate_hz: int, rng: np.random.Generator, slope: float = 0.0,
                 band_hz: tuple[float, float] | None = None) -> np.ndarray:
    """Gaussian noise of unit RMS whose power spectrum goes as f**slope (0 white, -1 pink), within band_hz."""
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    freqs = np.fft.rfftfreq(n, 1.0 / rate_hz)
    gain = np.ones_like(freqs)
    if slope:
        gain[1:] = freqs[1:] ** (slope / 2.0)
        gain[0] = 0.0
    if band_hz is not None:
        gain *= (freqs >= band_hz[0]) & (freqs <= band_hz[1])
    x = np.fft.irfft(spectrum * gain, n)
    return x / np.sqrt(np.mean(x**2))


def _pcm(x: np.ndarray, rate_hz: int) -> Audio:
    return Audio(np.clip(np.round(x), -32768, 32767).astype(np.int16), rate_hz)


def _mix(x: np.ndarray, rate_hz: int) -> Audio:
    """A recording with something added, scaled to peak at 90 % of full scale where it would go over
    (a recorder's gain set for it), so that the gate must find the spoil itself, not its clipping."""
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    return _pcm(x * (0.9 * 32767.0 / peak) if peak > 0.9 * 32767.0 else x, rate_hz)


class Spoiler:
    """The field's ways of spoiling a recording, each a function (Audio, rng) -> Audio."""

    PHRASES = ("Bom dia, vamos ouvir o coração da criança agora.", "Fique quietinho, por favor, respira devagar.",
               "Muito bem, agora o outro lado.", "Mãe, segura ele no colo um pouquinho.", "Quantos anos ele tem?",
               "Ele teve febre essa semana?", "Pode levantar a blusa dele?", "Está tudo bem, não dói nada.")
    VOICES = ("pt-br", "pt-br+f3", "pt-br+m3", "pt-br+f5", "pt-br+m1", "pt-br+f2")

    def __init__(self, band_hz: tuple[float, float]):
        self.band_hz = band_hz
        self.espeak = shutil.which("espeak-ng")
        self._speech: dict[tuple, np.ndarray] = {}

    def kinds(self) -> dict:
        kinds = {"flat": self.flat, "clipped": self.clipped, "disconnected": self.disconnected, "rubbing": self.rubbing}
        if self.espeak:
            kinds["talking"] = self.talking
        for colour, slope in (("white", 0.0), ("pink", -1.0)):
            for snr_db in (0.0, -5.0):
                kinds[f"noise_{colour}_{snr_db:+.0f}dB"] = self._noise(slope, snr_db)
        return kinds

    def flat(self, audio: Audio, rng) -> Audio:
        n = len(audio.samples)
        if rng.random() < 0.5:
            return Audio(np.zeros(n, np.int16), audio.rate_hz)
        return _pcm(rng.integers(-2000, 2000) + rng.integers(0, 2, n), audio.rate_hz)

    def clipped(self, audio: Audio, rng) -> Audio:
        x = audio.samples.astype(np.float64)
        x -= x.mean()
        level = np.percentile(np.abs(x), 100.0 - rng.uniform(15.0, 40.0))
        return _pcm(x * 32767.0 / max(level, 1.0), audio.rate_hz)

    def disconnected(self, audio: Audio, rng) -> Audio:
        n, rate_hz = len(audio.samples), audio.rate_hz
        t = np.arange(n) / rate_hz
        mains = float(rng.choice([50.0, 60.0]))
        hum = 32768.0 * 10 ** (rng.uniform(-55.0, -35.0) / 20.0)
        x = rng.uniform(1.0, 8.0) * rng.standard_normal(n)
        x += hum * (np.sin(2 * np.pi * mains * t + rng.uniform(0, 2 * np.pi))
                    + 0.3 * np.sin(2 * np.pi * 3 * mains * t + rng.uniform(0, 2 * np.pi)))
        return _pcm(x, rate_hz)

    def rubbing(self, audio: Audio, rng) -> Audio:
        x = audio.samples.astype(np.float64)
        n, rate_hz = len(x), audio.rate_hz
        level = np.sqrt(in_band_power(x, rate_hz, self.band_hz))
        out = x.copy()
        t = rng.exponential(1.0)
        while t < n / rate_hz:
            duration = rng.uniform(0.1, 0.4)
            m = int(duration * rate_hz)
            envelope = np.hanning(m)
            envelope /= np.sqrt(np.mean(envelope**2))
            band = (rng.uniform(20.0, 80.0), rng.uniform(250.0, rate_hz / 2))
            burst = shaped_noise(m, rate_hz, rng, band_hz=band) * envelope * level * 10 ** (rng.uniform(6.0, 16.0) / 20)
            start = int(t * rate_hz)
            stop = min(n, start + m)
            out[start:stop] += burst[: stop - start]
            t += duration + rng.exponential(1.0)
        return _mix(out, rate_hz)

    def talking(self, audio: Audio, rng) -> Audio:
        x = audio.samples.astype(np.float64)
        n, rate_hz = len(x), audio.rate_hz
        parts = [np.zeros(int(rng.uniform(0.0, 0.5) * rate_hz))]
        while sum(map(len, parts)) < n:
            parts.append(self._sentence(rng, rate_hz))
            parts.append(np.zeros(int(rng.uniform(0.1, 0.6) * rate_hz)))
        speech = np.concatenate(parts)[:n]
        speech *= np.sqrt(in_band_power(x, rate_hz, self.band_hz) / in_band_power(speech, rate_hz, self.band_hz))
        return _mix(x + speech, rate_hz)

    def _sentence(self, rng, rate_hz: int) -> np.ndarray:
        voice = self.VOICES[rng.integers(len(self.VOICES))]
        text = self.PHRASES[rng.integers(len(self.PHRASES))]
        pitch = int(rng.integers(30, 71))
        key = (voice, text, pitch, rate_hz)
        if key not in self._speech:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "speech.wav"
                subprocess.run([self.espeak, "-v", voice, "-p", str(pitch), "-s", "160", "-w", str(path), text],
                               check=True, capture_output=True)
                speech = read_wav(path)
            self._speech[key] = resample(speech.as_float(), speech.rate_hz, rate_hz)
        return self._speech[key]

    def _noise(self, slope: float, snr_db: float):
        def spoil(audio: Audio, rng) -> Audio:
            x = audio.samples.astype(np.float64)
            noise = shaped_noise(len(x), audio.rate_hz, rng, slope=slope)
            noise *= np.sqrt(in_band_power(x, audio.rate_hz, self.band_hz) * 10 ** (-snr_db / 10)
                             / in_band_power(noise, audio.rate_hz, self.band_hz))
            return _mix(x + noise, audio.rate_hz)
        return spoil


def spoiled_figures(circor_root: Path | None, physionet_root: Path | None, config: FrontEndConfig,
                    thresholds: QualityThresholds, n_circor: int, n_physionet: int) -> dict:
    rng = np.random.default_rng(SEED)
    sample = []
    if circor_root is not None:
        recordings = [(p.patient_id, r) for p in load_dataset(circor_root).patients if p.murmur != "Unknown"
                      for r in p.recordings]
        sample += [("circor", *recordings[i]) for i in sorted(rng.choice(len(recordings), n_circor, replace=False))]
    if physionet_root is not None:
        patients = load_dataset(physionet_root).patients
        sample += [("physionet2016", patients[i].patient_id, patients[i].recordings[0])
                   for i in sorted(rng.choice(len(patients), n_physionet, replace=False))]
    spoiler = Spoiler(config.band_hz)
    kinds = spoiler.kinds()
    caught: dict[str, list[bool]] = collections.defaultdict(list)
    caught_per_dataset: dict[str, list[bool]] = collections.defaultdict(list)
    reasons: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    originals_failed = []
    for index, (dataset, patient_id, recording) in enumerate(sample):
        audio = recording.read()
        if not assess(audio, recording.site, config, thresholds=thresholds).ok:
            originals_failed.append(recording.path.name)
            continue
        for k, (kind, spoil) in enumerate(kinds.items()):
            spoiled = spoil(audio, np.random.default_rng([SEED, index, k]))
            quality = assess(spoiled, recording.site, config, thresholds=thresholds)
            caught[kind].append(not quality.ok)
            caught_per_dataset[f"{kind}/{dataset}"].append(not quality.ok)
            reasons[kind].update(quality.reasons)
    per_kind = {k: {"spoiled": len(v), "caught": sum(v), "catch_rate": round(float(np.mean(v)), 4)} for k, v in caught.items()}
    by_family = collections.defaultdict(list)
    for kind, values in caught.items():
        by_family[kind.split("_")[0]].extend(values)
    families = {k: round(float(np.mean(v)), 4) for k, v in by_family.items()}
    pooled = [c for v in caught.values() for c in v]
    return {
        "seed": SEED,
        "sample": {"circor_recordings": sum(s[0] == "circor" for s in sample),
                   "physionet2016_recordings": sum(s[0] == "physionet2016" for s in sample),
                   "originals_failed_and_left_out": originals_failed},
        "talking": "espeak-ng " + _espeak_version(spoiler.espeak) if spoiler.espeak else
                   "skipped: espeak-ng is not installed (apt-get install espeak-ng)",
        "per_kind": per_kind,
        "per_kind_and_dataset": {k: round(float(np.mean(v)), 4) for k, v in caught_per_dataset.items()},
        "reasons_per_kind": {k: dict(v.most_common()) for k, v in reasons.items()},
        "catch_rate_per_family": families,
        "catch_rate_mean_of_families": round(float(np.mean(list(families.values()))), 4) if families else None,
        "catch_rate_pooled": round(float(np.mean(pooled)), 4) if pooled else None,
    }


def _espeak_version(path: str) -> str:
    done = subprocess.run([path, "--version"], capture_output=True, text=True)
    return done.stdout.split(":")[1].split()[0] if ":" in done.stdout else "unknown version"


# --- report ----------------------------------------------------------------------------------------


def _pct(r: dict) -> str:
    return f"{r['retake']:4d} / {r['n']:4d}  {100 * r['retake_rate']:5.1f}%" if r["n"] else "   -"


def print_summary(result: dict) -> None:
    circor = result["circor"]
    if "skipped" in circor:
        print(f"CirCor: skipped, {circor['skipped']}")
    else:
        print(f"CirCor, patients outside murmur-Unknown, RETAKE: {_pct(circor['patients'])}")
        for group, r in circor["patients_per_age_group"].items():
            print(f"  age group {group:22s} {_pct(r)}")
        for site, r in circor["used_recordings_per_site"].items():
            print(f"  site {site:27s} {_pct(r)}  (recordings triage uses)")
        print(f"  all recordings                 {_pct(circor['recordings'])}")
        print("  reasons: " + ", ".join(f"{k} {v}" for k, v in circor["reasons_used_recordings"].items()))
        unknown = circor["murmur_unknown"]
        print(f"  murmur-Unknown patients        {_pct(unknown['patients'])}   recordings {_pct(unknown['recordings'])}")
        hr = circor["heart_rate_vs_annotation"]["all_recordings"]
        print(f"  heart rate vs annotated beats ({hr['estimated']} of {hr['annotated']} recordings): median error "
              f"{hr['median_abs_error_bpm']:.1f} bpm ({100 * hr['median_abs_relative_error']:.1f}%), within 10% "
              f"{100 * hr['within_10_percent']:.1f}%, read double {100 * hr['read_double']:.1f}%, read half "
              f"{100 * hr['read_half']:.1f}%")
        for name, r in circor["heart_rate_vs_annotation"]["per_annotated_rate"].items():
            if r.get("estimated"):
                print(f"    annotated {name:18s} within 10% {100 * r['within_10_percent']:5.1f}% of {r['estimated']}")
    physionet = result["physionet2016"]
    if "skipped" in physionet:
        print(f"PhysioNet 2016: skipped, {physionet['skipped']}")
    else:
        print(f"PhysioNet 2016 recordings RETAKE: {_pct(physionet['recordings'])}")
        for database, r in physionet["per_database"].items():
            print(f"  {database:30s} {_pct(r)}")
        print("  reasons: " + ", ".join(f"{k} {v}" for k, v in physionet["reasons"].items()))
    spoiled = result["spoiled"]
    if "skipped" in spoiled:
        print(f"spoiled recordings: skipped, {spoiled['skipped']}")
        return
    print(f"spoiled copies of {spoiled['sample']['circor_recordings']} CirCor and "
          f"{spoiled['sample']['physionet2016_recordings']} PhysioNet 2016 recordings "
          f"({len(spoiled['sample']['originals_failed_and_left_out'])} left out: the gate fails the original); "
          f"talking: {spoiled['talking']}")
    for kind, r in spoiled["per_kind"].items():
        print(f"  caught {kind:22s} {r['caught']:4d} / {r['spoiled']:4d}  {100 * r['catch_rate']:5.1f}%   "
              + ", ".join(f"{k} {v}" for k, v in spoiled["reasons_per_kind"][kind].items()))
    print(f"  catch rate, mean of the kinds {100 * spoiled['catch_rate_mean_of_families']:.1f}% "
          f"({', '.join(f'{k} {100 * v:.1f}%' for k, v in spoiled['catch_rate_per_family'].items())}); "
          f"pooled {100 * spoiled['catch_rate_pooled']:.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--circor-sample", type=int, default=200, help="CirCor recordings to spoil (default 200)")
    parser.add_argument("--physionet-sample", type=int, default=100, help="PhysioNet 2016 recordings to spoil (default 100)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default {RESULTS.relative_to(REPO_ROOT)})")
    args = parser.parse_args()
    config, thresholds = FrontEndConfig(), QualityThresholds()
    started = time.perf_counter()
    circor_root = CIRCOR if (CIRCOR / "training_data.csv").is_file() else None
    physionet_root = PHYSIONET2016 if (PHYSIONET2016 / "training-a" / "REFERENCE.csv").is_file() else None
    result = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config_hash": config.config_hash(),
        "thresholds": asdict(thresholds),
        "circor": circor_figures(circor_root, config, thresholds) if circor_root else
                  {"skipped": f"no CirCor tree at {CIRCOR} (set PCG_SHARED_DATA)"},
        "physionet2016": physionet_figures(physionet_root, config, thresholds) if physionet_root else
                         {"skipped": f"no PhysioNet 2016 tree at {PHYSIONET2016} (set PCG_SHARED_DATA)"},
        "spoiled": spoiled_figures(circor_root, physionet_root, config, thresholds, args.circor_sample,
                                   args.physionet_sample) if circor_root or physionet_root else
                   {"skipped": f"no shared recordings under {SHARED_DATA} to spoil (set PCG_SHARED_DATA)"},
    }
    result["seconds"] = round(time.perf_counter() - started, 1)
    print_summary(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
