"""Shared test fixtures: where the real data lives, and a skip that says why when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PCG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
PHYSIONET2016 = SHARED_DATA / "physionet2016"
CIRCOR = SHARED_DATA / "circor"


@pytest.fixture(scope="session")
def physionet2016_root() -> Path:
    """The shared PhysioNet 2016 tree, read in place; skips with the reason when it is absent."""
    if not (PHYSIONET2016 / "training-a" / "REFERENCE.csv").is_file():
        pytest.skip(f"shared data absent: no PhysioNet 2016 tree at {PHYSIONET2016} (set PCG_SHARED_DATA)")
    return PHYSIONET2016


@pytest.fixture(scope="session")
def circor_root() -> Path:
    """The shared CirCor tree (the children), read in place; skips with the reason when it is absent."""
    if not (CIRCOR / "training_data.csv").is_file():
        pytest.skip(f"shared data absent: no CirCor tree at {CIRCOR} (set PCG_SHARED_DATA)")
    return CIRCOR
