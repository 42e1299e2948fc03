"""pcg-synth: synthetic patients written in the exact CirCor layout, from firmware_bridge.heart.

Each patient gets demographics drawn plausibly for an age group, a heart (rate, S1/S2 timing, maybe
S3/S4, maybe murmurs) and 1-7 recordings (4 kHz, 16-bit, the true segmentation as .tsv): the four
guided sites minus some missing ones, sometimes a Phc recording or a repeat `_1` at one site.

Murmur label (what a listener can tell from the recordings):
  Unknown  more than half of the patient's recordings are unusable (drowned in noise, clipped or
           flat); whatever murmur the heart has cannot be judged.
  Present  the heart has a murmur and it is heard at its most audible site (always a usable recording).
  Absent   otherwise.

Outcome rule (applied to the patient's true findings, whether or not the recordings show them):
Abnormal when ANY of these holds, else Normal.
  1. a diastolic murmur, at every age;
  2. a systolic murmur of grade III/VI, at every age;
  3. a systolic murmur that is holosystolic, late-systolic or harsh, at every age;
  4. any systolic murmur in a Neonate or Infant (suggests a shunt) - the same soft ejection murmur
     (grade I-II/VI, early- or mid-systolic, not harsh) in a Child, Adolescent or Young adult is an
     innocent flow murmur and does not count;
  5. a resting heart rate outside the normal range FOR THE AGE GROUP: Neonate 120-160, Infant
     110-150, Child 75-115, Adolescent and Young adult 60-100 bpm, all shifted up by 12 bpm in
     pregnancy (140 bpm is normal in an infant and abnormal in an adolescent; 108 bpm is normal
     in a pregnant young woman only);
  6. an S4 gallop, at every age;
  7. a Neonate or Infant weighing less than 80 % of the expected weight for their height.
Then 3 % of outcomes (LABEL_NOISE_RATE) are flipped at random, a stand-in for clinical label noise.
Sex, campaign and a physiological S3 never change the outcome. The true age group decides; as in
CirCor, pregnant patients' age is written `nan` (and a few others' too).

Same seed, same arguments -> the same bytes in every file.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from firmware_bridge import heart
from firmware_bridge.heart import Murmur
from runtime.formats.circor import MURMUR_DESCRIPTION_FIELDS, write_circor
from runtime.records import AGE_GROUPS, Audio, Demographics, Patient, RecordingData, Segment
from runtime.sites import GUIDED_SITES, OTHER_SITE, SITES

RATE_HZ = 4000
DEFAULT_DURATION_S = (10.0, 20.0)
DEFAULT_SITES_MISSING_RATE = 0.07
LABEL_NOISE_RATE = 0.03

_AGE_GROUP_SHARE = {"Neonate": 0.03, "Infant": 0.17, "Child": 0.62, "Adolescent": 0.13, "Young adult": 0.05}
_AGE_YEARS = {"Neonate": (0.0, 27 / 365), "Infant": (28 / 365, 1.0), "Child": (1.0, 12.0),
              "Adolescent": (12.0, 19.0), "Young adult": (19.0, 22.0)}
_PREGNANT_SHARE = {"Adolescent": 0.15, "Young adult": 0.5}  # of female patients
_MURMUR_SHARE = {"Present": 0.19, "Unknown": 0.07, "Absent": 0.74}
_HIDDEN_MURMUR_IN_UNKNOWN = 0.3
_ABNORMAL_HEART_RATE_SHARE = 0.27
_S4_SHARE, _S3_SHARE = 0.1, 0.12
_UNDERWEIGHT_SHARE = 0.2  # of neonates and infants: failure to thrive
_UNDERWEIGHT_RATIO = 0.8
_UNUSABLE_KIND_SHARE = {"noise": 0.6, "clipped": 0.2, "flat": 0.2}
_UNUSABLE_SHARE = 0.04  # of recordings of a Present/Absent patient (at most one, never the loudest site)
_PHC_SHARE, _REPEAT_SHARE = 0.06, 0.08
_CC2014_SHARE = 0.35
# Sex-averaged growth medians (WHO/CDC-like): age in years -> height cm, weight kg.
_GROWTH_AGE_Y = np.array([0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 22.0])
_GROWTH_HEIGHT_CM = np.array([50, 61, 67, 75, 87, 103, 116, 128, 139, 150, 161, 168, 171, 172], dtype=float)
_GROWTH_WEIGHT_KG = np.array([3.4, 6.0, 7.8, 9.6, 12.2, 16.3, 20.5, 25.5, 32.0, 40.0, 50.0, 58.0, 63.0, 66.0])


@dataclass(frozen=True)
class Findings:
    """A patient's true state: what the outcome rule reads."""

    age_group: str
    pregnant: bool
    heart_rate_bpm: float
    systolic_murmur: Murmur | None
    diastolic_murmur: Murmur | None
    s4: bool
    height_cm: float
    weight_kg: float


def expected_weight_kg(height_cm: float) -> float:
    """Median weight for a height, from the growth medians."""
    return float(np.interp(height_cm, _GROWTH_HEIGHT_CM, _GROWTH_WEIGHT_KG))


def is_soft_ejection_murmur(murmur: Murmur) -> bool:
    """Grade I-II/VI, early- or mid-systolic, not harsh: innocent from childhood on (rule 4)."""
    return (murmur.systolic and murmur.grade in ("I/VI", "II/VI")
            and murmur.timing in ("Early-systolic", "Mid-systolic") and murmur.quality != "Harsh")


def outcome_rule(findings: Findings) -> tuple[str, tuple[str, ...]]:
    """The documented outcome rule (module docstring): ("Abnormal" or "Normal", the reasons)."""
    f = findings
    young = f.age_group in ("Neonate", "Infant")
    reasons = []
    if f.diastolic_murmur is not None:
        reasons.append("diastolic murmur")
    if f.systolic_murmur is not None:
        m = f.systolic_murmur
        if m.grade == "III/VI":
            reasons.append("systolic murmur grade III/VI")
        elif not is_soft_ejection_murmur(m):
            reasons.append(f"{m.timing.lower()} {m.quality.lower()} systolic murmur")
        elif young:
            reasons.append(f"systolic murmur at age group {f.age_group}")
    low, high = heart.normal_heart_rate_range(f.age_group, f.pregnant)
    if not low <= f.heart_rate_bpm <= high:
        reasons.append(f"heart rate {f.heart_rate_bpm:.0f} bpm outside {low:.0f}-{high:.0f} for the age group")
    if f.s4:
        reasons.append("S4 gallop")
    if young and f.weight_kg < _UNDERWEIGHT_RATIO * expected_weight_kg(f.height_cm):
        reasons.append("weight under 80 % of expected for height")
    return ("Abnormal" if reasons else "Normal"), tuple(reasons)


def generate_dataset(
    out_dir: str | Path,
    n_patients: int,
    seed: int,
    *,
    hidden: bool = False,
    sites_missing_rate: float = DEFAULT_SITES_MISSING_RATE,
    duration_s: tuple[float, float] = DEFAULT_DURATION_S,
    label_noise_rate: float = LABEL_NOISE_RATE,
) -> dict:
    """Write `n_patients` synthetic patients in the CirCor layout under `out_dir`; return a summary:
    counts per murmur, outcome, age group and site, recordings, files written, and `truth`
    (per patient ID: findings, the rule's outcome and reasons, whether the label was flipped)."""
    if n_patients < 1:
        raise ValueError(f"n_patients must be at least 1, got {n_patients}")
    if not 0.0 <= sites_missing_rate < 1.0:
        raise ValueError(f"sites_missing_rate must be in [0, 1), got {sites_missing_rate}")
    if not 1.0 <= duration_s[0] <= duration_s[1]:
        raise ValueError(f"durations must satisfy 1 <= MIN <= MAX seconds, got {duration_s[0]}:{duration_s[1]}")
    out_dir = Path(out_dir)
    ids = np.sort(np.random.default_rng(seed).choice(np.arange(1000, 90000), size=n_patients, replace=False))
    truth: dict[str, dict] = {}
    recordings_written: list[tuple[str, int]] = []  # (site, repeat)

    def patients():
        for index, pid in enumerate(ids):
            rng = np.random.default_rng([seed, index])
            patient, recordings, patient_truth = _make_patient(
                str(pid), rng, sites_missing_rate, duration_s, label_noise_rate)
            truth[patient.patient_id] = patient_truth
            recordings_written.extend((r.site, r.repeat) for r in recordings)
            yield patient, recordings

    write_circor(out_dir, patients(), hidden=hidden)
    files = sorted(p for p in out_dir.rglob("*") if p.is_file())
    return {
        "out_dir": str(out_dir),
        "patients": n_patients,
        "recordings": len(recordings_written),
        "files": len(files),
        "murmur": _counts((t["murmur"] for t in truth.values()), ("Present", "Unknown", "Absent")),
        "outcome": _counts((t["outcome"] for t in truth.values()), ("Abnormal", "Normal")),
        "age_group": _counts((t["findings"].age_group for t in truth.values()), AGE_GROUPS),
        "sites": _counts((site for site, _ in recordings_written), SITES),
        "repeat_recordings": sum(repeat > 0 for _, repeat in recordings_written),
        "patients_missing_a_guided_site": sum(
            not set(GUIDED_SITES) <= set(t["sites"]) for t in truth.values()),
        "unusable_recordings": sum(len(t["unusable"]) for t in truth.values()),
        "label_flips": sum(t["label_flipped"] for t in truth.values()),
        "truth": truth,
    }


def _counts(values, order) -> dict[str, int]:
    counted = Counter(values)
    return {key: counted.get(key, 0) for key in order}


def _pick(rng: np.random.Generator, shares: dict[str, float]) -> str:
    keys = list(shares)
    return keys[int(rng.choice(len(keys), p=np.array([shares[k] for k in keys]) / sum(shares.values())))]


def _make_patient(pid: str, rng: np.random.Generator, sites_missing_rate: float,
                  duration_s: tuple[float, float], label_noise_rate: float):
    # Demographics.
    age_group = _pick(rng, _AGE_GROUP_SHARE)
    sex = "Female" if rng.random() < 0.5 else "Male"
    pregnant = sex == "Female" and rng.random() < _PREGNANT_SHARE.get(age_group, 0.0)
    age_y = rng.uniform(*_AGE_YEARS[age_group])
    male_teen = 1.0 + (0.06 * min(max(age_y - 12.0, 0.0) / 4.0, 1.0) if sex == "Male" else 0.0)
    height_cm = float(np.interp(age_y, _GROWTH_AGE_Y, _GROWTH_HEIGHT_CM)) * male_teen * (1.0 + 0.03 * rng.normal())
    weight_kg = float(np.interp(age_y, _GROWTH_AGE_Y, _GROWTH_WEIGHT_KG)) * male_teen**2 * math.exp(0.1 * rng.normal())
    young = age_group in ("Neonate", "Infant")
    if young and rng.random() < _UNDERWEIGHT_SHARE:
        weight_kg *= rng.uniform(0.6, 0.78)
    if pregnant:
        weight_kg += rng.uniform(5.0, 12.0)
    height_cm, weight_kg = round(height_cm, 1), round(weight_kg, 1)

    # The heart.
    murmur_label = _pick(rng, _MURMUR_SHARE)
    has_murmur = murmur_label == "Present" or (murmur_label == "Unknown" and rng.random() < _HIDDEN_MURMUR_IN_UNKNOWN)
    systolic = diastolic = None
    if has_murmur:
        if rng.random() < 0.92:
            systolic = heart.random_murmur(rng, systolic=True)
            diastolic = heart.random_murmur(rng, systolic=False) if rng.random() < 0.08 else None
        else:
            diastolic = heart.random_murmur(rng, systolic=False)
    low, high = heart.normal_heart_rate_range(age_group, pregnant)
    heart_rate = None
    if rng.random() < _ABNORMAL_HEART_RATE_SHARE:
        heart_rate = high + rng.uniform(8.0, 40.0) if rng.random() < 0.65 else max(low - rng.uniform(8.0, 25.0), 45.0)
    s4 = bool(rng.random() < _S4_SHARE)

    # Recordings: sites, repeats, which are unusable.
    sites = [s for s in GUIDED_SITES if rng.random() >= sites_missing_rate] or [str(rng.choice(GUIDED_SITES))]
    if rng.random() < _PHC_SHARE:
        sites.append(OTHER_SITE)
    slots = [(site, 0) for site in sites]
    if rng.random() < _REPEAT_SHARE:
        site = sites[int(rng.integers(len(sites)))]
        repeats = 2 if rng.random() < 0.2 else 1
        slots += [(site, n) for n in range(1, repeats + 1)]
    slots.sort(key=lambda slot: (SITES.index(slot[0]), slot[1]))

    murmur_sites: tuple[str, ...] = ()
    most_audible = None
    unusable: dict[tuple[str, int], str] = {}
    if murmur_label == "Unknown":
        unusable = {slot: _pick(rng, _UNUSABLE_KIND_SHARE) for slot in slots}
    if has_murmur:
        guided = [s for s in sites if s in GUIDED_SITES] or sites
        most_audible = guided[int(rng.integers(len(guided)))]
        murmur_sites = tuple(s for s in sites if s == most_audible or rng.random() < 0.55)
    if murmur_label != "Unknown" and len(slots) >= 3 and rng.random() < _UNUSABLE_SHARE * len(slots):
        candidates = [slot for slot in slots if slot[0] != most_audible]
        unusable[candidates[int(rng.integers(len(candidates)))]] = _pick(rng, _UNUSABLE_KIND_SHARE)

    profile = heart.random_profile(
        rng, age_group, pregnant=pregnant, heart_rate_bpm=heart_rate, systolic_murmur=systolic,
        diastolic_murmur=diastolic, murmur_sites=murmur_sites, most_audible_site=most_audible,
        s3=bool(rng.random() < _S3_SHARE), s4=s4,
    )
    recordings = []
    for site, repeat in slots:
        recording_profile = replace(heart.with_random_conditions(profile, rng), unusable=unusable.get((site, repeat)))
        duration = rng.uniform(*duration_s)
        samples, intervals = heart.synthesize(recording_profile, site, duration, RATE_HZ, rng)
        # Boundaries on whole samples; an edge interval shorter than half a sample vanishes.
        on_samples = [(round(start * RATE_HZ), round(end * RATE_HZ), state) for start, end, state in intervals]
        segments = tuple(Segment(a / RATE_HZ, b / RATE_HZ, state) for a, b, state in on_samples if b > a)
        recordings.append(RecordingData(site, Audio(heart.to_pcm16(samples), RATE_HZ), repeat, segments))

    # Labels.
    findings = Findings(age_group, pregnant, profile.heart_rate_bpm, systolic, diastolic, s4, height_cm, weight_kg)
    rule_outcome, reasons = outcome_rule(findings)
    flipped = bool(rng.random() < label_noise_rate)
    outcome = ("Normal" if rule_outcome == "Abnormal" else "Abnormal") if flipped else rule_outcome

    annotations: dict[str, str | None] = {key: None for key in MURMUR_DESCRIPTION_FIELDS}
    if murmur_label == "Present":
        annotations["Murmur locations"] = "+".join(sorted(murmur_sites))
        annotations["Most audible location"] = most_audible
        for prefix, murmur in (("Systolic", systolic), ("Diastolic", diastolic)):
            if murmur is not None:
                annotations[f"{prefix} murmur timing"] = murmur.timing
                annotations[f"{prefix} murmur shape"] = murmur.shape
                annotations[f"{prefix} murmur grading"] = murmur.grade
                annotations[f"{prefix} murmur pitch"] = murmur.pitch
                annotations[f"{prefix} murmur quality"] = murmur.quality
    annotations["Additional ID"] = None
    written_age = None if pregnant or rng.random() < 0.02 else age_group
    missing_size = rng.random() < 0.05
    demographics = Demographics(
        age_group=written_age,
        sex=sex,
        height_cm=None if missing_size or rng.random() < 0.03 else height_cm,
        weight_kg=None if missing_size or rng.random() < 0.03 else weight_kg,
        pregnant=pregnant,
    )
    patient = Patient(
        patient_id=pid,
        recordings=[],
        demographics=demographics,
        murmur=murmur_label,
        outcome=outcome,
        group="CC2014" if rng.random() < _CC2014_SHARE else "CC2015",
        annotations=annotations,
    )
    patient_truth = {
        "findings": findings,
        "murmur": murmur_label,
        "outcome": outcome,
        "rule_outcome": rule_outcome,
        "reasons": reasons,
        "label_flipped": flipped,
        "sites": [f"{site}_{repeat}" if repeat else site for site, repeat in slots],
        "unusable": {f"{site}_{repeat}" if repeat else site: kind for (site, repeat), kind in unusable.items()},
    }
    return patient, recordings, patient_truth


def _duration(text: str) -> tuple[float, float]:
    low, colon, high = text.partition(":")
    try:
        result = (float(low), float(high if colon else low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not MIN:MAX in seconds, e.g. 10:20") from None
    if not 1.0 <= result[0] <= result[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: need 1 <= MIN <= MAX seconds")
    return result


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate in [0, 1)")
    return value


def main(argv: list[str] | None = None) -> int:
    doc = __doc__ or ""
    rule = doc[doc.index("Murmur label"):doc.index("Same seed")].rstrip()
    parser = argparse.ArgumentParser(
        prog="pcg-synth",
        description="Write synthetic patients in the exact CirCor 2022 layout (4 kHz 16-bit WAV, .hea, .tsv, "
                    "patient .txt, training_data.csv). Same seed and arguments give the same bytes.",
        epilog=rule,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, type=Path, help="new or empty folder to write")
    parser.add_argument("--patients", required=True, type=int, help="number of patients")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--hidden", action="store_true", help="write an unlabelled set: no Murmur/Outcome, no .tsv")
    parser.add_argument("--sites-missing-rate", type=_rate, default=DEFAULT_SITES_MISSING_RATE,
                        help=f"chance each guided site is not recorded (default {DEFAULT_SITES_MISSING_RATE})")
    parser.add_argument("--duration", type=_duration, default=DEFAULT_DURATION_S, metavar="MIN:MAX",
                        help="recording length range in seconds (default %d:%d)" % DEFAULT_DURATION_S)
    args = parser.parse_args(argv)
    if args.patients < 1:
        parser.error(f"--patients must be at least 1, got {args.patients}")
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        parser.error(f"--out {args.out} is not an empty folder; choose a new one so no old files mix in")

    started = time.perf_counter()
    summary = generate_dataset(args.out, args.patients, args.seed, hidden=args.hidden,
                               sites_missing_rate=args.sites_missing_rate, duration_s=args.duration)
    elapsed = time.perf_counter() - started

    def line(name: str, counts: dict[str, int]) -> str:
        return f"{name:<10}" + "  ".join(f"{key} {value}" for key, value in counts.items())

    print(f"pcg-synth: {summary['patients']} patients, {summary['recordings']} recordings, "
          f"{summary['files']} files in {args.out} ({elapsed:.1f} s)")
    print(line("murmur", summary["murmur"]) + ("   (labels not written: --hidden)" if args.hidden else ""))
    print(line("outcome", summary["outcome"]) + f"   ({summary['label_flips']} flipped as label noise)")
    print(line("age group", summary["age_group"]))
    print(line("sites", summary["sites"]) + f"   repeats {summary['repeat_recordings']}")
    print(f"{'':<10}{summary['patients_missing_a_guided_site']} patients miss a guided site, "
          f"{summary['unusable_recordings']} recordings unusable")
    return 0


if __name__ == "__main__":
    sys.exit(main())
