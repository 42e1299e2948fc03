"""Shared test fixtures: where the real data lives, and a skip that says why when it is absent."""

from __future__ import annotations

import os
import shutil
import subprocess
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


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 2 MiB tmpfs, mounted for the test and unmounted after; skips where mounting is not permitted."""
    mount = shutil.which("mount")
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    if mount is None:
        pytest.skip("no mount command: cannot make a small file system to fill")
    done = subprocess.run([mount, "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mountpoint)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)]).returncode != 0:
            subprocess.run(["umount", "-l", str(mountpoint)], check=True)
