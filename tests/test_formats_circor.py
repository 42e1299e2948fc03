"""CirCor 2022 layout: a tree written by hand in the published layout, and the writer's round trip."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

import runtime.formats.wav as wav_module
from runtime.formats import (
    CSV_COLUMNS,
    FormatError,
    load_circor,
    read_segmentation,
    read_wfdb_header,
    write_circor,
    write_wav,
)
from runtime.records import Audio, Demographics, Patient, RecordingData, Segment

RATE = 4000
FULL_FIELDS = """#Age: Child
#Sex: Female
#Height: 98.0
#Weight: 15.9
#Pregnancy status: False
#Murmur: Present
#Murmur locations: AV+MV+PV+TV
#Most audible location: TV
#Systolic murmur timing: Holosystolic
#Systolic murmur shape: Plateau
#Systolic murmur grading: III/VI
#Systolic murmur pitch: High
#Systolic murmur quality: Harsh
#Diastolic murmur timing: nan
#Diastolic murmur shape: nan
#Diastolic murmur grading: nan
#Diastolic murmur pitch: nan
#Diastolic murmur quality: nan
#Campaign: CC2015
#Additional ID: nan
#Outcome: Abnormal
"""
NAN_FIELDS = """#Age: nan
#Sex: Male
#Height: nan
#Weight: nan
#Pregnancy status: nan
#Murmur: Unknown
#Murmur locations: nan
#Most audible location: nan
#Systolic murmur timing: nan
#Systolic murmur shape: nan
#Systolic murmur grading: nan
#Systolic murmur pitch: nan
#Systolic murmur quality: nan
#Diastolic murmur timing: nan
#Diastolic murmur shape: nan
#Diastolic murmur grading: nan
#Diastolic murmur pitch: nan
#Diastolic murmur quality: nan
#Campaign: CC2014
#Additional ID: 50321
#Outcome: Normal
"""
HIDDEN_FIELDS = """#Age: Young Adult
#Sex: Female
#Height: 160.5
#Weight: 55.0
#Pregnancy status: True
#Campaign: CC2015
#Additional ID: nan
"""
CSV_HEADER = ",".join(CSV_COLUMNS)


def add_recording(folder: Path, stem: str, site: str, *, frames: int = 400, tsv: bool = True,
                  hea_rate: int = RATE) -> None:
    samples = (np.arange(frames) % 200 - 100).astype(np.int16)
    write_wav(folder / f"{stem}.wav", Audio(samples, RATE))
    (folder / f"{stem}.hea").write_text(f"{stem} 1 {hea_rate} {frames}\n{stem}.wav 16+44 1 16 0 0 0 0 {site}\n")
    if tsv:
        (folder / f"{stem}.tsv").write_text("0.0\t0.05\t0\n0.05\t0.06\t1\n0.06\t0.1\t2\n")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Five patients in the published layout, with the quirks of the real data."""
    data = tmp_path / "training_data"
    data.mkdir()
    # A full patient: four sites, segmentations, a Present murmur described.
    for site in ("AV", "PV", "TV", "MV"):
        add_recording(data, f"2530_{site}", site)
    (data / "2530.txt").write_text(
        "2530 4 4000\n" + "".join(f"{s} 2530_{s}.hea 2530_{s}.wav 2530_{s}.tsv\n" for s in ("AV", "PV", "TV", "MV"))
        + FULL_FIELDS
    )
    # Repeats at MV named _1 and _2, a Phc site, a line without .tsv, nan values, CRLF line ends.
    add_recording(data, "50782_MV_1", "MV", tsv=False)
    add_recording(data, "50782_MV_2", "MV")
    add_recording(data, "50782_Phc", "Phc")
    lines = ["50782 3 4000", "MV 50782_MV_1.hea 50782_MV_1.wav", "MV 50782_MV_2.hea 50782_MV_2.wav 50782_MV_2.tsv",
             "Phc 50782_Phc.hea 50782_Phc.wav 50782_Phc.tsv", *NAN_FIELDS.splitlines()]
    (data / "50782.txt").write_bytes("\r\n".join(lines).encode() + b"\r\n")
    # A hidden-set patient: no Murmur/Outcome lines, no .tsv; "Young Adult" spelled as in the csv.
    add_recording(data, "9979_AV", "AV", tsv=False)
    add_recording(data, "9979_TV", "TV", tsv=False, hea_rate=2000)
    (data / "9979.txt").write_text("9979 2 4000\nAV 9979_AV.hea 9979_AV.wav\nTV 9979_TV.hea 9979_TV.wav\n"
                                   + HIDDEN_FIELDS)
    # Listed files missing: 85_AV.wav and 85_PV.tsv.
    add_recording(data, "85_PV", "PV", tsv=False)
    (data / "85.txt").write_text("85 2 4000\nAV 85_AV.hea 85_AV.wav 85_AV.tsv\nPV 85_PV.hea 85_PV.wav 85_PV.tsv\n"
                                 + FULL_FIELDS)
    # Nothing of patient 13's recording exists.
    (data / "13.txt").write_text("13 1 4000\nAV 13_AV.hea 13_AV.wav 13_AV.tsv\n" + FULL_FIELDS)
    rows = [
        "2530,AV+PV+TV+MV,Child,Female,98.0,15.9,False,Present,AV+MV+PV+TV,TV,Holosystolic,Plateau,III/VI,High,"
        "Harsh,nan,nan,nan,nan,nan,Abnormal,CC2015,nan",
        '50782,"MV+MV+Phc",Infant,Male,nan,nan,nan,Unknown,nan,nan,nan,nan,nan,nan,nan,nan,nan,nan,nan,nan,Normal,'
        "CC2014,50321",
        "9979,AV+TV,Young Adult,Female,160.5,55,True,nan,nan,nan,nan,nan,nan,nan,nan,nan,nan,nan,nan,nan,nan,CC2015,nan",
        "85,AV+PV,Child,Female,98.0,15.9,False,Present,AV+MV+PV+TV,TV,Holosystolic,Plateau,III/VI,High,Harsh,nan,"
        "nan,nan,nan,nan,Abnormal,CC2015,nan",
        "4242,AV,Child,Female,nan,nan,False,Absent,nan,nan,nan,nan,nan,nan,nan,nan,nan,nan,nan,nan,Normal,CC2015,nan",
    ]
    (tmp_path / "training_data.csv").write_text("\ufeff" + CSV_HEADER + "\n" + "\n".join(rows) + "\n")
    return tmp_path


def by_id(dataset):
    return {p.patient_id: p for p in dataset.patients}


def test_patients_come_from_the_patient_files_sorted_numerically(tree):
    dataset = load_circor(tree)
    assert dataset.format == "circor"
    assert [p.patient_id for p in dataset.patients] == ["85", "2530", "9979", "50782"]


def test_full_patient_fields_are_parsed(tree):
    patient = by_id(load_circor(tree))["2530"]
    assert patient.demographics == Demographics("Child", "Female", 98.0, 15.9, False)
    assert (patient.murmur, patient.outcome, patient.group) == ("Present", "Abnormal", "CC2015")
    assert patient.annotations["Murmur locations"] == "AV+MV+PV+TV"
    assert patient.annotations["Systolic murmur grading"] == "III/VI"
    assert patient.annotations["Diastolic murmur timing"] is None
    assert patient.annotations["Additional ID"] is None
    assert len(patient.annotations) == 13
    assert [r.site for r in patient.recordings] == ["AV", "PV", "TV", "MV"]
    recording = patient.recordings[0]
    data = tree / "training_data"
    assert (recording.path, recording.header_path, recording.segmentation_path, recording.repeat) == (
        data / "2530_AV.wav", data / "2530_AV.hea", data / "2530_AV.tsv", 0)


def test_repeats_phc_site_nan_values_and_crlf(tree):
    patient = by_id(load_circor(tree))["50782"]
    assert [(r.site, r.repeat, r.path.name) for r in patient.recordings] == [
        ("MV", 1, "50782_MV_1.wav"), ("MV", 2, "50782_MV_2.wav"), ("Phc", 0, "50782_Phc.wav")]
    assert patient.recordings[0].segmentation_path is None
    assert patient.sites == ["MV", "Phc"]
    assert patient.demographics == Demographics(None, "Male", None, None, None)
    assert (patient.murmur, patient.outcome, patient.group) == ("Unknown", "Normal", "CC2014")
    assert patient.annotations["Additional ID"] == "50321"


def test_hidden_set_patient_has_no_labels(tree):
    patient = by_id(load_circor(tree))["9979"]
    assert patient.murmur is None and patient.outcome is None
    assert patient.demographics == Demographics("Young adult", "Female", 160.5, 55.0, True)
    assert all(r.segmentation_path is None for r in patient.recordings)
    assert patient.annotations == {"Additional ID": None}


def test_listed_but_missing_files_are_problems_not_crashes(tree):
    dataset = load_circor(tree)
    patient = by_id(dataset)["85"]
    assert [r.site for r in patient.recordings] == ["PV"]
    assert patient.recordings[0].segmentation_path is None
    assert "training_data/85_AV.wav: listed in training_data/85.txt line 2 but missing; recording left out" \
        in dataset.problems
    assert "training_data/85_PV.tsv: listed in training_data/85.txt line 3 but missing" in dataset.problems


def test_patient_without_any_recording_is_left_out_with_a_problem(tree):
    dataset = load_circor(tree)
    assert "13" not in by_id(dataset)
    assert "training_data/13.txt: no recordings left; patient left out" in dataset.problems
    assert all(p.recordings for p in dataset.patients)


def test_header_disagreeing_with_the_wav_is_a_problem(tree):
    problems = load_circor(tree).problems
    assert "training_data/9979_TV.hea: declares 2000 Hz but 9979_TV.wav is 4000 Hz" in problems


def test_csv_disagreement_is_a_problem_and_the_patient_file_wins(tree):
    dataset = load_circor(tree)
    assert by_id(dataset)["50782"].demographics.age_group is None
    assert ("training_data.csv line 3: patient 50782 Age is 'Infant' but training_data/50782.txt says 'nan'; "
            "using training_data/50782.txt") in dataset.problems
    assert "training_data.csv line 6: patient 4242 has no patient file 4242.txt; left out" in dataset.problems
    assert "training_data/13.txt: patient 13 is not in training_data.csv" in dataset.problems
    # Spelling ("Young Adult"), number formatting ("55") and repeated sites ("MV+MV") are not disagreements.
    assert not [p for p in dataset.problems if "9979" in p and "csv" in p]
    assert not [p for p in dataset.problems if "Recording locations" in p]


def test_problems_are_exactly_the_damage_in_the_tree(tree):
    assert load_circor(tree).problems == [
        "training_data/13_AV.wav: listed in training_data/13.txt line 2 but missing; recording left out",
        "training_data/13.txt: no recordings left; patient left out",
        "training_data/85_AV.wav: listed in training_data/85.txt line 2 but missing; recording left out",
        "training_data/85_PV.tsv: listed in training_data/85.txt line 3 but missing",
        "training_data/9979_TV.hea: declares 2000 Hz but 9979_TV.wav is 4000 Hz",
        "training_data.csv line 3: patient 50782 Age is 'Infant' but training_data/50782.txt says 'nan'; "
        "using training_data/50782.txt",
        "training_data.csv line 6: patient 4242 has no patient file 4242.txt; left out",
        "training_data/13.txt: patient 13 is not in training_data.csv",
    ]


def test_csv_is_optional(tree):
    (tree / "training_data.csv").unlink()
    dataset = load_circor(tree)
    assert len(dataset) == 4
    assert not [p for p in dataset.problems if "csv" in p]


def test_root_may_be_the_training_data_folder_itself(tree):
    (tree / "training_data" / "README.txt").write_text("not a patient\n")
    dataset = load_circor(tree / "training_data")
    assert [p.patient_id for p in dataset.patients] == ["85", "2530", "9979", "50782"]


def test_indexing_reads_no_audio(tree, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("audio read while indexing")

    monkeypatch.setattr(wav_module.np, "fromfile", refuse)
    dataset = load_circor(tree)
    assert len(dataset) == 4
    with pytest.raises(AssertionError, match="audio read"):
        dataset.patients[0].recordings[0].read()


def test_recording_reads_its_audio(tree):
    audio = by_id(load_circor(tree))["2530"].recordings[0].read()
    assert (audio.rate_hz, len(audio.samples), int(audio.samples[0])) == (4000, 400, -100)


def test_segmentation_is_sorted_without_duplicate_lines(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_text("0.5\t0.9\t2\n0.0\t0.5\t1\n0.5\t0.9\t2\n\n0.9\t1.25\t3.0\n")
    assert read_segmentation(path) == (Segment(0.0, 0.5, 1), Segment(0.5, 0.9, 2), Segment(0.9, 1.25, 3))


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("0.0\t0.5\t1\n0.5\t0.9\t7\n", ["line 2", "unknown state '7'", "4 (diastole)"]),
        ("0.0\t0.5\n", ["line 1", "2 fields"]),
        ("0.0\t0.5\t1\n0.9\t0.5\t2\n", ["line 2", "from 0.9 s to 0.5 s"]),
        ("0.0\tabc\t1\n", ["line 1", "not a number"]),
    ],
)
def test_malformed_segmentation_names_file_and_line(tmp_path, text, fragments):
    path = tmp_path / "a.tsv"
    path.write_text(text)
    with pytest.raises(FormatError) as info:
        read_segmentation(path)
    assert str(path) in str(info.value)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_wfdb_header_is_parsed(tmp_path):
    path = tmp_path / "13918_AV.hea"
    path.write_text("13918_AV 1 4000 41152\r\n13918_AV.wav 16+44 1 16 0 0 0 0 AV\r\n")
    header = read_wfdb_header(path)
    assert (header.record, header.rate_hz, header.frames, header.signal_file, header.description) == (
        "13918_AV", 4000, 41152, "13918_AV.wav", "AV")


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("13918_AV 1 4000\n13918_AV.wav 16+44\n", ["line 1", "record line"]),
        ("13918_AV 2 4000 41152\n13918_AV.wav 16+44\n", ["line 1", "2 signals"]),
        ("13918_AV 1 4000 41152\n", ["no signal line"]),
    ],
)
def test_malformed_wfdb_header_names_file_and_line(tmp_path, text, fragments):
    path = tmp_path / "13918_AV.hea"
    path.write_text(text)
    with pytest.raises(FormatError) as info:
        read_wfdb_header(path)
    for fragment in [str(path), *fragments]:
        assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("first_lines", "fields", "message"),
    [
        ("2530 1 4000\nXX 2530_XX.hea 2530_XX.wav\n", FULL_FIELDS,
         "line 2: unknown site 'XX'; expected AV, PV, TV, MV or Phc"),
        ("2530 4000\nAV 2530_AV.hea 2530_AV.wav\n", FULL_FIELDS, "line 1: header '2530 4000'"),
        ("2531 1 4000\nAV 2531_AV.hea 2531_AV.wav\n", FULL_FIELDS, "line 1: header names patient '2531'"),
        ("2530 2 4000\nAV 2530_AV.hea 2530_AV.wav\n", FULL_FIELDS,
         "line 1: header declares 2 recordings but 1 recording lines follow"),
        ("2530 1 4000\nAV 2530_MV.hea 2530_MV.wav\n", FULL_FIELDS,
         "line 2: recording file '2530_MV.wav' does not match site AV"),
        ("2530 1 4000\nAV 2530_AV.wav 2530_AV.hea\n", FULL_FIELDS, "line 2: file '2530_AV.wav' where a .hea"),
        ("2530 1 4000\nAV 2530_AV.hea 2530_AV_1.wav\n", FULL_FIELDS, "line 2: '2530_AV.hea' does not match"),
        ("2530 1 4000\nAV 2530_AV.hea\n", FULL_FIELDS, "line 2: 2 fields"),
        ("2530 2 4000\nAV 2530_AV.hea 2530_AV.wav\nAV 2530_AV.hea 2530_AV.wav\n", FULL_FIELDS,
         "line 3: 2530_AV.wav listed twice (first on line 2)"),
        ("2530 1 4000\nAV 2530_AV.hea 2530_AV.wav\n", FULL_FIELDS.replace("Child", "Toddler"),
         "line 3: unknown Age 'Toddler'; expected Neonate, Infant, Child, Adolescent, Young adult or nan"),
        ("2530 1 4000\nAV 2530_AV.hea 2530_AV.wav\n", FULL_FIELDS.replace("98.0", "tall"),
         "line 5: Height 'tall' is not a number"),
        ("2530 1 4000\nAV 2530_AV.hea 2530_AV.wav\n", FULL_FIELDS.replace("#Murmur: Present", "#Murmur: Maybe"),
         "line 8: unknown Murmur 'Maybe'"),
        ("2530 1 4000\nAV 2530_AV.hea 2530_AV.wav\n", FULL_FIELDS.replace("#Sex", "Sex"),
         "line 4: unexpected line 'Sex: Female'; expected '#Key: value'"),
        ("2530 1 4000\nAV 2530_AV.hea 2530_AV.wav\n", FULL_FIELDS + "#Age: Infant\n",
         "line 24: second 'Age' field (first on line 3)"),
    ],
    ids=["site", "header", "id", "count", "file-site", "order", "stems", "fields", "twice", "age", "height",
         "murmur", "no-hash", "duplicate"],
)
def test_malformed_patient_file_names_file_and_line(tmp_path, first_lines, fields, message):
    data = tmp_path / "training_data"
    data.mkdir()
    path = data / "2530.txt"
    path.write_text(first_lines + fields)
    with pytest.raises(FormatError) as info:
        load_circor(tmp_path)
    assert f"{path} {message}" in str(info.value)


def test_malformed_csv_row_names_file_and_line(tree):
    with open(tree / "training_data.csv", "a") as f:
        f.write("77,AV,Child\n")
    with pytest.raises(FormatError, match=r"training_data.csv line 7: 3 cells; expected 23"):
        load_circor(tree)


def test_empty_folder_is_refused(tmp_path):
    (tmp_path / "training_data").mkdir()
    with pytest.raises(FormatError, match="no patient files"):
        load_circor(tmp_path)


# --- writer -------------------------------------------------------------------------------------

ANNOTATIONS = {
    "Murmur locations": "AV+MV", "Most audible location": "MV", "Systolic murmur timing": "Early-systolic",
    "Systolic murmur shape": "Decrescendo", "Systolic murmur grading": "I/VI", "Systolic murmur pitch": "Low",
    "Systolic murmur quality": "Blowing", "Diastolic murmur timing": None, "Diastolic murmur shape": None,
    "Diastolic murmur grading": None, "Diastolic murmur pitch": None, "Diastolic murmur quality": None,
    "Additional ID": "77001",
}


def synthetic_patients():
    rng = np.random.default_rng(7)

    def audio(n):
        return Audio(rng.integers(-32768, 32767, n, dtype=np.int16), RATE)

    # numpy scalars, as a synthesiser produces them, must be written as plain numbers.
    segments = (Segment(0.0, 0.123456789, 1), Segment(0.123456789, 0.3, 2),
                Segment(np.float64(0.3), np.float64(0.31), np.int64(0)))
    first = Patient(
        "1234", [], Demographics("Child", "Female", np.float64(123.0), 13.5, False), murmur="Present", outcome="Abnormal",
        group="CC2015", annotations=dict(ANNOTATIONS))
    second = Patient(
        "77", [], Demographics(None, None, None, None, None), murmur="Absent", outcome="Normal", group="",
        annotations={key: None for key in ANNOTATIONS})
    return [
        (first, [RecordingData("AV", audio(500), 0, segments), RecordingData("MV", audio(300), 1, segments),
                 RecordingData("MV", audio(301), 2, None), RecordingData("Phc", audio(40), 0, segments)]),
        (second, [RecordingData("TV", audio(1000), 0, segments)]),
    ]


def test_writer_then_reader_round_trips_every_field(tmp_path):
    originals = synthetic_patients()
    write_circor(tmp_path, iter(originals))
    dataset = load_circor(tmp_path)
    assert dataset.problems == []
    assert [p.patient_id for p in dataset.patients] == ["77", "1234"]
    loaded = by_id(dataset)
    for original, recordings in originals:
        patient = loaded[original.patient_id]
        assert patient.demographics == original.demographics
        assert (patient.murmur, patient.outcome, patient.group) == (original.murmur, original.outcome, original.group)
        assert patient.annotations == original.annotations
        assert [(r.site, r.repeat) for r in patient.recordings] == [(r.site, r.repeat) for r in recordings]
        for written, read in zip(recordings, patient.recordings):
            audio = read.read()
            assert audio.rate_hz == written.audio.rate_hz
            np.testing.assert_array_equal(audio.samples, written.audio.samples)
            if written.segments is None:
                assert read.segmentation_path is None
            else:
                assert read_segmentation(read.segmentation_path) == written.segments


def test_writer_produces_exactly_the_published_layout(tmp_path):
    write_circor(tmp_path, synthetic_patients())
    data = tmp_path / "training_data"
    assert sorted(p.name for p in data.iterdir()) == sorted(
        ["1234.txt", "77.txt"]
        + [f"1234_{s}.{e}" for s in ("AV", "MV_1", "Phc") for e in ("wav", "hea", "tsv")]
        + ["1234_MV_2.wav", "1234_MV_2.hea"] + [f"77_TV.{e}" for e in ("wav", "hea", "tsv")])
    assert (data / "1234.txt").read_text().splitlines()[:6] == [
        "1234 4 4000", "AV 1234_AV.hea 1234_AV.wav 1234_AV.tsv", "MV 1234_MV_1.hea 1234_MV_1.wav 1234_MV_1.tsv",
        "MV 1234_MV_2.hea 1234_MV_2.wav", "Phc 1234_Phc.hea 1234_Phc.wav 1234_Phc.tsv", "#Age: Child"]
    assert [line.split(":")[0] for line in (data / "1234.txt").read_text().splitlines()[5:]] == [
        f"#{line.split(':')[0][1:]}" for line in FULL_FIELDS.splitlines()]
    assert (data / "1234_MV_1.hea").read_text() == "1234_MV_1 1 4000 300\n1234_MV_1.wav 16+44 1 16 0 0 0 0 MV\n"
    with open(tmp_path / "training_data.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(CSV_COLUMNS)
    assert rows[0][1] == "Recording locations:"
    assert rows[1][:8] == ["1234", "AV+MV+MV+Phc", "Child", "Female", "123.0", "13.5", "False", "Present"]
    assert rows[2][2:8] == ["nan"] * 5 + ["Absent"]


def test_hidden_writer_leaves_out_labels_and_segmentations(tmp_path):
    write_circor(tmp_path, synthetic_patients(), hidden=True)
    data = tmp_path / "training_data"
    assert not list(data.glob("*.tsv"))
    text = (data / "1234.txt").read_text()
    assert "#Murmur" not in text and "#Outcome" not in text and "#Systolic" not in text
    assert "#Campaign: CC2015" in text and "#Additional ID: 77001" in text
    with open(tmp_path / "training_data.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {rows[0][c] for c in ("Murmur", "Outcome", "Murmur locations", "Systolic murmur grading")} == {"nan"}
    assert rows[0]["Campaign"] == "CC2015"
    dataset = load_circor(tmp_path)
    assert dataset.problems == []
    patient = by_id(dataset)["1234"]
    assert (patient.murmur, patient.outcome) == (None, None)
    assert patient.annotations == {"Additional ID": "77001"}
    assert patient.demographics.height_cm == 123.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p, r: (Patient("12 34", []), r), "spaces or slashes"),
        (lambda p, r: (p, []), "no recordings"),
        (lambda p, r: (p, [r[0], r[0]]), "same site and repeat"),
        (lambda p, r: (p, [r[0], RecordingData("PV", Audio(np.zeros(5, np.int16), 2000))]), "several rates"),
        (lambda p, r: (p, [RecordingData("XX", r[0].audio)]), "site outside"),
        (lambda p, r: (Patient("5", [], murmur="Maybe"), r), "'Maybe' is not one of"),
        (lambda p, r: (Patient("5", [], annotations={"Age": "x"}), r), "annotation 'Age'"),
    ],
)
def test_writer_refuses_patients_the_reader_could_not_load(tmp_path, change, message):
    patient, recordings = synthetic_patients()[0]
    with pytest.raises(ValueError, match=message):
        write_circor(tmp_path, [change(patient, recordings)])


def test_writer_refuses_a_patient_written_twice(tmp_path):
    patients = synthetic_patients()
    with pytest.raises(ValueError, match="written twice"):
        write_circor(tmp_path, [patients[0], patients[0]])
