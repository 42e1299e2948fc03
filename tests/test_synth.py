"""pcg-synth: the CirCor tree it writes, its determinism, and the outcome rule it labels with."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from firmware_bridge.heart import Murmur
from runtime.formats.circor import load_circor, read_segmentation
from runtime.records import AGE_GROUPS
from runtime.sites import GUIDED_SITES
from trainer.synth import Findings, generate_dataset, outcome_rule

REPO_ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--patients", "24", "--seed", "7", "--duration", "3:5"]


def _pcg_synth(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer.synth", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)


def _tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def cli_tree(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("synth") / "cli"
    result = _pcg_synth("--out", str(out), *ARGS)
    assert result.returncode == 0, result.stderr
    return out, result.stdout


@pytest.fixture(scope="module")
def same_seed_in_process(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "function"
    return out, generate_dataset(out, 24, 7, duration_s=(3.0, 5.0))


def test_the_tree_loads_and_matches_the_summary(cli_tree, same_seed_in_process):
    root, stdout = cli_tree
    _, summary = same_seed_in_process
    dataset = load_circor(root)
    assert dataset.problems == []
    assert len(dataset) == summary["patients"] == 24
    assert "24 patients" in stdout and f"{summary['files']} files" in stdout
    assert Counter(p.murmur for p in dataset.patients) == Counter({k: v for k, v in summary["murmur"].items() if v})
    assert Counter(p.outcome for p in dataset.patients) == Counter({k: v for k, v in summary["outcome"].items() if v})
    recordings = [r for p in dataset.patients for r in p.recordings]
    assert len(recordings) == summary["recordings"]
    assert Counter(r.site for r in recordings) == Counter({k: v for k, v in summary["sites"].items() if v})
    missing = sum(1 for p in dataset.patients if not set(GUIDED_SITES) <= set(p.sites))
    assert missing == summary["patients_missing_a_guided_site"] > 0
    assert sum(r.repeat > 0 for r in recordings) == summary["repeat_recordings"] > 0
    for patient in dataset.patients:
        truth = summary["truth"][patient.patient_id]
        assert patient.outcome == truth["outcome"] and patient.murmur == truth["murmur"]
        names = [f"{r.site}_{r.repeat}" if r.repeat else r.site for r in patient.recordings]
        assert sorted(names) == sorted(truth["sites"])
        assert patient.group in ("CC2014", "CC2015")
        audio = patient.recordings[0].read()
        assert audio.rate_hz == 4000 and 3.0 <= audio.duration_s <= 5.0


def test_murmur_descriptions_are_written_only_for_present_murmurs(cli_tree):
    dataset = load_circor(cli_tree[0])
    for patient in dataset.patients:
        described = patient.annotations.get("Most audible location")
        if patient.murmur == "Present":
            assert described in patient.annotations["Murmur locations"].split("+")
            assert described in patient.sites
            assert (patient.annotations["Systolic murmur timing"] or patient.annotations["Diastolic murmur timing"])
        else:
            assert described is None and patient.annotations.get("Systolic murmur timing") is None


def test_tsv_is_the_true_segmentation_of_its_audio(cli_tree, same_seed_in_process):
    dataset = load_circor(cli_tree[0])
    truth = same_seed_in_process[1]["truth"]
    checked = 0
    for patient in dataset.patients:
        for recording in patient.recordings:
            segments = read_segmentation(recording.segmentation_path)
            audio = recording.read()
            assert segments[0].start_s == 0.0
            assert segments[-1].end_s == pytest.approx(audio.duration_s)
            name = f"{recording.site}_{recording.repeat}" if recording.repeat else recording.site
            if name in truth[patient.patient_id]["unusable"]:
                assert [s.state for s in segments] == [0]
                continue
            for previous, current in zip(segments, segments[1:]):
                assert current.start_s == previous.end_s and current.state == previous.state % 4 + 1
            # The heart sounds are where the .tsv says: S1 and S2 carry more power than systole and diastole.
            x = audio.as_float()
            states = np.zeros(len(x), dtype=int)
            for s in segments:
                states[round(s.start_s * 4000) : round(s.end_s * 4000)] = s.state
            heart_sounds = np.isin(states, (1, 3))
            assert np.mean(x[heart_sounds] ** 2) > 2 * np.mean(x[~heart_sounds] ** 2), (patient.patient_id, name)
            checked += 1
    assert checked > 40


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(cli_tree, same_seed_in_process, tmp_path):
    assert _tree_hash(cli_tree[0]) == _tree_hash(same_seed_in_process[0])
    other = tmp_path / "other"
    assert _pcg_synth("--out", str(other), "--patients", "24", "--seed", "8", "--duration", "3:5").returncode == 0
    assert _tree_hash(other) != _tree_hash(cli_tree[0])


def test_hidden_set_has_no_labels_and_the_same_audio(cli_tree, tmp_path):
    hidden = tmp_path / "hidden"
    result = _pcg_synth("--out", str(hidden), *ARGS, "--hidden")
    assert result.returncode == 0, result.stderr
    dataset = load_circor(hidden)
    assert all(p.murmur is None and p.outcome is None for p in dataset.patients)
    assert not list(hidden.rglob("*.tsv"))
    labelled = cli_tree[0] / "training_data"
    for wav in (hidden / "training_data").glob("*.wav"):
        assert wav.read_bytes() == (labelled / wav.name).read_bytes()


def test_generated_labels_follow_the_documented_rule_and_demographics_are_plausible(tmp_path):
    summary = generate_dataset(tmp_path / "big", 160, 3, duration_s=(1.0, 1.0), label_noise_rate=0.0)
    truth = summary["truth"]
    assert summary["label_flips"] == 0
    assert all(t["outcome"] == outcome_rule(t["findings"])[0] for t in truth.values())
    assert {k for k, v in summary["murmur"].items() if v} == {"Present", "Unknown", "Absent"}
    assert 0.25 < summary["outcome"]["Abnormal"] / 160 < 0.7
    dataset = load_circor(tmp_path / "big")
    heights = {group: [] for group in AGE_GROUPS}
    for patient in dataset.patients:
        findings = truth[patient.patient_id]["findings"]
        d = patient.demographics
        if d.pregnant:
            assert d.sex == "Female" and findings.age_group in ("Adolescent", "Young adult")
            assert d.age_group is None  # as in CirCor
        if d.height_cm is not None and d.age_group is not None:
            heights[d.age_group].append(d.height_cm)
        # Unknown means most recordings are unusable.
        unusable = len(truth[patient.patient_id]["unusable"])
        assert (patient.murmur == "Unknown") == (2 * unusable > len(patient.recordings))
    medians = [np.median(heights[g]) for g in ("Infant", "Child", "Adolescent") if heights[g]]
    assert medians == sorted(medians) and len(medians) == 3
    assert any(p.demographics.height_cm is None for p in dataset.patients)


SOFT_EJECTION = Murmur("Early-systolic", "Decrescendo", "Medium", "II/VI", "Blowing")


def _findings(age_group: str, heart_rate_bpm: float, *, systolic=None, diastolic=None, pregnant=False) -> Findings:
    height = {"Neonate": 50.0, "Infant": 70.0, "Child": 120.0, "Adolescent": 160.0, "Young adult": 170.0}[age_group]
    weight = {"Neonate": 3.4, "Infant": 8.5, "Child": 23.0, "Adolescent": 50.0, "Young adult": 65.0}[age_group]
    return Findings(age_group, pregnant, heart_rate_bpm, systolic, diastolic, False, height, weight)


def test_the_same_soft_murmur_is_innocent_in_a_child_and_abnormal_in_an_infant():
    assert outcome_rule(_findings("Child", 95.0, systolic=SOFT_EJECTION)) == ("Normal", ())
    outcome, reasons = outcome_rule(_findings("Infant", 130.0, systolic=SOFT_EJECTION))
    assert outcome == "Abnormal" and reasons == ("systolic murmur at age group Infant",)
    assert outcome_rule(_findings("Infant", 130.0)) == ("Normal", ())


def test_the_same_heart_rate_is_normal_for_an_infant_and_abnormal_for_an_adolescent():
    assert outcome_rule(_findings("Infant", 140.0))[0] == "Normal"
    assert outcome_rule(_findings("Adolescent", 140.0))[0] == "Abnormal"
    assert outcome_rule(_findings("Child", 70.0))[0] == "Abnormal"
    assert outcome_rule(_findings("Young adult", 70.0))[0] == "Normal"
    # Pregnancy shifts the normal range up.
    assert outcome_rule(_findings("Young adult", 108.0))[0] == "Abnormal"
    assert outcome_rule(_findings("Young adult", 108.0, pregnant=True))[0] == "Normal"


@pytest.mark.parametrize("age_group", AGE_GROUPS)
def test_diastolic_and_loud_murmurs_are_abnormal_at_every_age(age_group):
    heart_rate = {"Neonate": 140.0, "Infant": 130.0, "Child": 95.0, "Adolescent": 80.0, "Young adult": 80.0}[age_group]
    diastolic = Murmur("Early-diastolic", "Decrescendo", "High", "I/IV", "Blowing")
    loud = Murmur("Early-systolic", "Decrescendo", "Medium", "III/VI", "Blowing")
    harsh_holosystolic = Murmur("Holosystolic", "Plateau", "Medium", "I/VI", "Harsh")
    for findings in (
        _findings(age_group, heart_rate, diastolic=diastolic),
        _findings(age_group, heart_rate, systolic=loud),
        _findings(age_group, heart_rate, systolic=harsh_holosystolic),
    ):
        assert outcome_rule(findings)[0] == "Abnormal"
    assert outcome_rule(_findings(age_group, heart_rate))[0] == "Normal"


def test_an_underweight_infant_is_abnormal_and_an_underweight_child_is_not():
    thin_infant = _findings("Infant", 130.0)
    assert outcome_rule(Findings(**{**thin_infant.__dict__, "weight_kg": 0.7 * thin_infant.weight_kg}))[0] == "Abnormal"
    thin_child = _findings("Child", 95.0)
    assert outcome_rule(Findings(**{**thin_child.__dict__, "weight_kg": 0.7 * thin_child.weight_kg}))[0] == "Normal"


def test_help_documents_the_outcome_rule():
    result = _pcg_synth("--help")
    assert result.returncode == 0
    assert "FOR THE AGE GROUP" in result.stdout and "innocent flow murmur" in result.stdout
    assert "Unknown" in result.stdout and "label noise" in result.stdout


def test_refuses_a_non_empty_folder_and_a_bad_duration(tmp_path):
    (tmp_path / "old.txt").write_text("x")
    result = _pcg_synth("--out", str(tmp_path), "--patients", "2")
    assert result.returncode == 2 and "not an empty folder" in result.stderr
    assert (tmp_path / "old.txt").read_text() == "x" and not (tmp_path / "training_data").exists()
    result = _pcg_synth("--out", str(tmp_path / "new"), "--patients", "2", "--duration", "20:10")
    assert result.returncode == 2 and "MIN <= MAX" in result.stderr
