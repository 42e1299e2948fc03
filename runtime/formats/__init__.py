"""Recording formats: readers and writers from files to the one data model in runtime.records.

Owns WAV files (`wav`), the CirCor 2022 layout (`circor`), the PhysioNet 2016 layout
(`physionet2016`) and plain WAV folders (`wavdir`), and `load_dataset`, which tells them apart.
Indexing never reads audio (`Recording.read()` does); every file it cannot accept raises
FormatError naming the file, the line, the problem and what was expected; damage that does not
stop loading (a listed file missing, a header that disagrees) is listed in `Dataset.problems`.
"""

from __future__ import annotations

from pathlib import Path

from runtime.formats.circor import (
    CSV_COLUMNS,
    WfdbHeader,
    load_circor,
    looks_like_patient_file,
    read_segmentation,
    read_wfdb_header,
    recording_stem,
    write_circor,
)
from runtime.formats.errors import FormatError
from runtime.formats.physionet2016 import load_physionet2016, read_reference
from runtime.formats.wav import WavHeader, read_wav, read_wav_header, write_wav
from runtime.formats.wavdir import load_wav_folder
from runtime.records import Dataset

FORMATS: tuple[str, ...] = ("circor", "physionet2016", "wav")
_LOADERS = {"circor": load_circor, "physionet2016": load_physionet2016, "wav": load_wav_folder}


def detect_format(root: str | Path) -> str:
    """Which layout `root` holds: "circor", "physionet2016" or "wav" (checked in that order).

    circor: training_data.csv, or training_data/<ID>.txt, or <ID>.txt files whose first line is a
    patient header; physionet2016: REFERENCE.csv in the folder or a subfolder; wav: .wav files.
    """
    root = Path(root)
    if not root.is_dir():
        raise FormatError(root, "no such folder", expected="a dataset folder")
    if (root / "training_data.csv").is_file():
        return "circor"
    if (root / "training_data").is_dir() and any((root / "training_data").glob("*.txt")):
        return "circor"
    if any(looks_like_patient_file(path) for path in root.glob("*.txt")):
        return "circor"
    if (root / "REFERENCE.csv").is_file() or any(root.glob("*/REFERENCE.csv")):
        return "physionet2016"
    if any(path.suffix.lower() == ".wav" and not path.name.startswith(".") for path in root.iterdir()):
        return "wav"
    raise FormatError(
        root, "no dataset recognised",
        expected="training_data.csv or training_data/<ID>.txt (CirCor 2022), REFERENCE.csv in the folder "
                 "or a subfolder (PhysioNet 2016), or .wav files (a plain WAV folder)",
    )


def load_dataset(root: str | Path, format: str | None = None) -> Dataset:
    """Index the dataset at `root`, detecting its layout unless `format` names one of FORMATS."""
    if format is None:
        format = detect_format(root)
    if format not in _LOADERS:
        raise ValueError(f"unknown dataset format {format!r}; expected one of {', '.join(FORMATS)}")
    return _LOADERS[format](root)


__all__ = [
    "CSV_COLUMNS", "FORMATS", "FormatError", "WavHeader", "WfdbHeader",
    "detect_format", "load_circor", "load_dataset", "load_physionet2016", "load_wav_folder",
    "read_reference", "read_segmentation", "read_wav", "read_wav_header", "read_wfdb_header",
    "recording_stem", "write_circor", "write_wav",
]
