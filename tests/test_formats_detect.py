"""detect_format and load_dataset: each layout recognised, anything else refused with what was sought."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.formats import FormatError, detect_format, load_dataset, load_wav_folder, write_wav
from runtime.records import Audio


def wav(path, rate=4000):
    write_wav(path, Audio(np.arange(8, dtype=np.int16), rate))


def test_circor_is_recognised_by_its_csv(tmp_path):
    (tmp_path / "training_data.csv").write_text("Patient ID\n")
    assert detect_format(tmp_path) == "circor"


def test_circor_is_recognised_by_training_data_patient_files(tmp_path):
    (tmp_path / "training_data").mkdir()
    (tmp_path / "training_data" / "5.txt").write_text("5 1 4000\nAV 5_AV.hea 5_AV.wav\n")
    assert detect_format(tmp_path) == "circor"


def test_circor_is_recognised_by_a_patient_header_among_wavs(tmp_path):
    wav(tmp_path / "5_AV.wav")
    (tmp_path / "5.txt").write_text("5 1 4000\nAV 5_AV.hea 5_AV.wav\n")
    assert detect_format(tmp_path) == "circor"
    (tmp_path / "5.txt").write_text("just notes\n")
    assert detect_format(tmp_path) == "wav"


def test_physionet2016_is_recognised_at_root_or_in_subfolders(tmp_path):
    (tmp_path / "training-a").mkdir()
    (tmp_path / "training-a" / "REFERENCE.csv").write_text("a0001,1\n")
    assert detect_format(tmp_path) == "physionet2016"
    assert detect_format(tmp_path / "training-a") == "physionet2016"


def test_shared_tree_is_detected_and_indexed(physionet2016_root):
    dataset = load_dataset(physionet2016_root)
    assert (dataset.format, len(dataset)) == ("physionet2016", 1178)


def test_indexing_reads_no_audio(tmp_path):
    (tmp_path / "REFERENCE.csv").write_text("a0001,1\n")
    (tmp_path / "a0001.wav").write_bytes(b"RIFF not really audio")
    dataset = load_dataset(tmp_path)
    assert len(dataset) == 1 and dataset.problems == []
    with pytest.raises(FormatError, match="a0001.wav"):
        dataset.patients[0].recordings[0].read()


def test_unrecognised_folder_says_what_was_looked_for(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(FormatError) as info:
        detect_format(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "no dataset recognised" in message
    for sought in ("training_data.csv", "REFERENCE.csv", ".wav"):
        assert sought in message


def test_missing_folder_is_refused(tmp_path):
    with pytest.raises(FormatError, match="no such folder"):
        load_dataset(tmp_path / "absent")


def test_wav_folder_groups_site_named_files_into_patients(tmp_path):
    for name in ("p1_MV", "p1_AV", "p1_AV_2", "p1_Phc", "lone", "p2_XX", "q_TV"):
        wav(tmp_path / f"{name}.wav")
    (tmp_path / "._p1_AV.wav").write_bytes(b"\x00\x05")  # macOS resource fork, not audio
    dataset = load_dataset(tmp_path)
    assert dataset.format == "wav"
    assert dataset.problems == []
    assert [(p.patient_id, [(r.site, r.repeat) for r in p.recordings]) for p in dataset.patients] == [
        ("lone", [("Phc", 0)]),
        ("p1", [("AV", 0), ("AV", 2), ("MV", 0), ("Phc", 0)]),
        ("p2_XX", [("Phc", 0)]),
        ("q", [("TV", 0)]),
    ]
    assert all(p.murmur is None and p.outcome is None for p in dataset.patients)
    assert dataset.patients[1].recordings[0].path == tmp_path / "p1_AV.wav"


def test_wav_folder_reports_two_files_for_one_slot(tmp_path):
    wav(tmp_path / "p.wav")
    wav(tmp_path / "p_Phc.wav")
    dataset = load_wav_folder(tmp_path)
    assert [r.path.name for r in dataset.patients[0].recordings] == ["p.wav"]
    assert dataset.problems == ["p_Phc.wav: patient p already has p.wav at Phc; left out"]


def test_empty_wav_folder_is_refused(tmp_path):
    with pytest.raises(FormatError, match="no .wav files"):
        load_wav_folder(tmp_path)


def test_load_dataset_refuses_an_unknown_format_name(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset format 'mp3'"):
        load_dataset(tmp_path, format="mp3")


def test_formats_import_neither_scipy_nor_torch():
    import subprocess
    import sys

    code = ("import sys, runtime.formats; "
            "print(sorted(m for m in ('scipy', 'torch') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
