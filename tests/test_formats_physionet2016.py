"""PhysioNet 2016 layout: the shared tree read in place, and small trees written by hand."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from runtime.formats import FormatError, load_physionet2016, write_wav
from runtime.records import Audio


def test_shared_tree_has_the_documented_counts(physionet2016_root):
    dataset = load_physionet2016(physionet2016_root)
    assert dataset.format == "physionet2016"
    assert dataset.problems == []
    assert len(dataset) == 1178
    assert sum(p.outcome == "Abnormal" for p in dataset.patients) == 527
    counts = Counter((p.group, p.outcome) for p in dataset.patients)
    assert {group: (counts[group, "Abnormal"] + counts[group, "Normal"], counts[group, "Abnormal"])
            for group, _ in counts} == {
        "training-a": (409, 292), "training-c": (31, 24), "training-d": (55, 28), "training-e": (683, 183)}


def test_shared_recordings_are_single_site_unlabelled_for_murmur(physionet2016_root):
    dataset = load_physionet2016(physionet2016_root)
    assert len({p.patient_id for p in dataset.patients}) == 1178
    for patient in dataset.patients:
        assert [r.site for r in patient.recordings] == ["Phc"]
        assert patient.murmur is None
        assert patient.demographics.age_group is None and patient.demographics.height_cm is None
        assert patient.recordings[0].path.name == f"{patient.patient_id}.wav"


def test_a_sample_of_shared_recordings_reads_at_2000_hz(physionet2016_root):
    patients = load_physionet2016(physionet2016_root).patients
    for patient in patients[::59]:
        audio = patient.recordings[0].read()
        assert audio.rate_hz == 2000
        assert audio.samples.dtype == np.int16
        assert 5.0 <= audio.duration_s <= 125.0
        assert np.abs(audio.samples.astype(np.int32)).max() > 0


def test_one_database_folder_can_be_given_directly(physionet2016_root):
    dataset = load_physionet2016(physionet2016_root / "training-c")
    assert len(dataset) == 31
    assert {p.group for p in dataset.patients} == {"training-c"}


def make_database(folder: Path, reference: bytes, wavs: list[str]) -> None:
    folder.mkdir(parents=True)
    (folder / "REFERENCE.csv").write_bytes(reference)
    for name in wavs:
        write_wav(folder / f"{name}.wav", Audio(np.ones(10, np.int16), 2000))


def test_small_tree_with_crlf_missing_and_unlisted_files(tmp_path):
    make_database(tmp_path / "training-x", b"x0001,1\r\nx0002,-1\r\nx0003,1\r\n\r\n", ["x0001", "x0002", "x0009"])
    make_database(tmp_path / "training-y", b"y0001,-1\n", ["y0001"])
    (tmp_path / "notes").mkdir()
    dataset = load_physionet2016(tmp_path)
    assert [(p.patient_id, p.outcome, p.group) for p in dataset.patients] == [
        ("x0001", "Abnormal", "training-x"), ("x0002", "Normal", "training-x"), ("y0001", "Normal", "training-y")]
    assert dataset.problems == [
        "training-x/x0003.wav: listed in training-x/REFERENCE.csv but missing; left out",
        "training-x/x0009.wav: not in training-x/REFERENCE.csv, so unlabelled; left out",
    ]


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        (b"x0001,1\r\nx0002;1\r\n", "line 2: row 'x0002;1'; expected '<record>,<label>'"),
        (b"x0001,1\nx0002,0\n", "line 2: label '0' for x0002; expected 1 (abnormal) or -1 (normal)"),
        (b"x0001,1,0.5\n", "line 1: row 'x0001,1,0.5'"),
        (b"x0001,1\n\nx0001,-1\n", "line 3: record x0001 listed twice (first on line 1)"),
        (b",1\n", "line 1: row ',1'"),
    ],
    ids=["separator", "label", "columns", "twice", "no-name"],
)
def test_malformed_reference_line_names_file_and_line(tmp_path, reference, message):
    make_database(tmp_path / "training-x", reference, ["x0001", "x0002"])
    with pytest.raises(FormatError) as info:
        load_physionet2016(tmp_path)
    assert f"{tmp_path / 'training-x' / 'REFERENCE.csv'} {message}" in str(info.value)


def test_folder_without_reference_is_refused(tmp_path):
    (tmp_path / "training-x").mkdir()
    with pytest.raises(FormatError, match="no REFERENCE.csv in the folder or its subfolders"):
        load_physionet2016(tmp_path)
