"""A folder of plain WAV files: one patient per file, or one per name prefix for site-named files.

`<prefix>_<SITE>.wav` (and `<prefix>_<SITE>_<n>.wav`, a repeat) with SITE one of AV, PV, TV, MV,
Phc join the patient `<prefix>`; any other `<name>.wav` is patient `<name>` with one recording at
"Phc" (site unknown). Only the folder itself is listed (not subfolders); names starting with "."
are skipped (editor and OS droppings such as macOS "._x.wav"). No labels; no audio is read.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from runtime.formats.errors import FormatError
from runtime.records import Dataset, Patient, Recording
from runtime.sites import OTHER_SITE, SITES

_SITE_NAME = re.compile(r"^(?P<prefix>.+)_(?P<site>" + "|".join(SITES) + r")(?:_(?P<repeat>[1-9][0-9]*))?$")


def load_wav_folder(root: str | Path) -> Dataset:
    """Index the .wav files directly inside `root` as patients (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise FormatError(root, "no such folder", expected="a folder of .wav files")
    with os.scandir(root) as entries:
        names = sorted(e.name for e in entries
                       if e.name.lower().endswith(".wav") and not e.name.startswith(".") and e.is_file())
    if not names:
        raise FormatError(root, "no .wav files", expected="a folder holding <name>.wav or <patient>_<SITE>.wav files")
    problems: list[str] = []
    recordings: dict[str, dict[tuple[str, int], Recording]] = {}
    for name in names:
        stem = name[:-4]
        match = _SITE_NAME.match(stem)
        if match:
            patient_id, site, repeat = match["prefix"], match["site"], int(match["repeat"] or 0)
        else:
            patient_id, site, repeat = stem, OTHER_SITE, 0
        slots = recordings.setdefault(patient_id, {})
        if (site, repeat) in slots:
            problems.append(f"{name}: patient {patient_id} already has {slots[(site, repeat)].path.name} "
                            f"at {site}; left out")
            continue
        slots[(site, repeat)] = Recording(site=site, path=root / name, repeat=repeat)
    patients = [
        Patient(patient_id=pid, recordings=[slots[key] for key in sorted(slots, key=lambda k: (SITES.index(k[0]), k[1]))])
        for pid, slots in sorted(recordings.items())
    ]
    return Dataset(root=root, format="wav", patients=patients, problems=problems)
