"""The field box installs from one bundle with no network: scripts/make_bundle.py builds it here
(the project's wheel, its runtime dependencies, the service files and docs, SHA256SUMS), its
install.sh installs it into a fresh prefix with pip --no-index, and that install screens a
simulated patient. A damaged bundle installs nothing.

Building needs the package index (pip download); without it the test skips, saying so. Only the
x86-64 wheels are fetched here (this machine's), to keep the test short.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    if shutil.which("sha256sum") is None:
        pytest.skip("no sha256sum here: install.sh checks the bundle with it")
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "make_bundle.py"), "--out", str(out),
                           "--platforms", "x86_64"], capture_output=True, text=True, timeout=600)
    if done.returncode == 2 and "index reachable" in done.stderr:
        pytest.skip(f"cannot build the bundle without the package index: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    (root,) = [p for p in out.iterdir() if p.is_dir()]
    return root


def install(bundle: Path, prefix: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "PIP_INDEX_URL": "http://127.0.0.1:9/unreachable",
           "PIP_NO_CACHE_DIR": "1"}
    return subprocess.run(["sh", str(bundle / "install.sh"), "--prefix", str(prefix)], capture_output=True, text=True,
                          timeout=600, env=env)


def test_the_bundle_holds_what_a_box_needs_and_no_training_stack(bundle):
    wheels = sorted(p.name for p in (bundle / "wheels" / "x86_64").iterdir())
    names = {w.split("-")[0].lower() for w in wheels}
    assert {"pcg_screen", "numpy", "onnxruntime", "pyserial", "cryptography"} <= names
    assert not {"torch", "scipy"} & names
    for needed in ("install.sh", "SHA256SUMS", "bundle.json", "README.md", "deploy/pcg-kiosk.service",
                   "deploy/pcg-kiosk-browser.sh", "deploy/pcg-kiosk-browser.desktop", "docs/deploy-raspberry-pi.md",
                   "docs/deploy-raspberry-pi-kiosk.md"):
        assert (bundle / needed).is_file(), needed
    listed = {line.split("  ", 1)[1] for line in (bundle / "SHA256SUMS").read_text().splitlines()}
    on_disk = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} - {"SHA256SUMS"}
    assert listed == on_disk
    info = json.loads((bundle / "bundle.json").read_text())
    assert info["platforms"] == ["x86_64"] and info["bundled_model"]


def test_a_fresh_offline_install_from_the_bundle_screens_a_simulated_patient(bundle, tmp_path):
    prefix = tmp_path / "pcg"
    done = install(bundle, prefix)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the bundled model verified" in done.stdout
    version = subprocess.run([str(prefix / "bin" / "pcg-runtime"), "--version"], capture_output=True, text=True, timeout=60)
    assert version.stdout.startswith("pcg-runtime 0.") and "bundled model" in version.stdout
    lean = subprocess.run([str(prefix / "bin" / "python"), "-c",
                           "import importlib.util as u; print(u.find_spec('torch') is None and u.find_spec('scipy') is None)"],
                          capture_output=True, text=True, timeout=60)
    assert lean.stdout.strip() == "True"
    screened = subprocess.run([str(prefix / "bin" / "pcg-runtime"), "--device", "sim", "--no-store", "--yes", "--json",
                               "--speed", "50", "--seconds", "6"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert screened.returncode == 0, screened.stderr
    result = json.loads(screened.stdout)["result"]
    assert result["decision"] in ("REFER", "NO_REFER", "RETAKE") and result["probability"] is not None
    assert (prefix / "share" / "pcg-kiosk-browser.sh").is_file() and (prefix / "share" / "doc" / "deploy-raspberry-pi.md").is_file()


def test_a_damaged_bundle_installs_nothing(bundle, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(bundle, damaged)
    wheel = next((damaged / "wheels" / "x86_64").glob("pcg_screen-*.whl"))
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0xFF
    wheel.write_bytes(bytes(data))
    done = install(damaged, tmp_path / "pcg")
    assert done.returncode == 2 and "the bundle is damaged" in done.stderr
    assert not (tmp_path / "pcg").exists()
