"""The C reference (firmware_bridge/c) against the shared vectors and the Python codec."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from firmware_bridge import protocol as p

REPO = Path(__file__).resolve().parents[1]
C_DIR = REPO / "firmware_bridge" / "c"
VECTORS = REPO / "tests" / "vectors"
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2"]


def _load_make_vectors():
    spec = importlib.util.spec_from_file_location("make_vectors", VECTORS / "make_vectors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_vectors = _load_make_vectors()
DOC = json.loads((VECTORS / "vectors.json").read_text())


@pytest.fixture(scope="module")
def c_run(tmp_path_factory) -> subprocess.CompletedProcess:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not found on PATH: the C reference cannot be compiled here")
    out = tmp_path_factory.mktemp("c") / "test_pcg_proto"
    build = subprocess.run(
        [gcc, *CFLAGS, "-I", str(C_DIR), "-I", str(VECTORS), str(C_DIR / "pcg_proto.c"), str(C_DIR / "test_pcg_proto.c"),
         "-o", str(out)],
        capture_output=True, text=True,
    )
    assert build.returncode == 0 and build.stderr == "", build.stderr
    return subprocess.run([str(out)], capture_output=True, text=True, timeout=60)


def test_c_unit_tests_pass(c_run):
    assert c_run.returncode == 0, c_run.stdout
    assert c_run.stdout.rstrip().splitlines()[-1].startswith("ok: ")


def test_c_frames_equal_python_frames_and_decode_in_python(c_run):
    c_frames = dict(line.split()[1:] for line in c_run.stdout.splitlines() if line.startswith("frame "))
    assert set(c_frames) == {v["name"] for v in DOC["device_to_host"]}
    for vector in DOC["device_to_host"]:
        message = make_vectors.message_from_fields(vector["message"])
        wire = bytes.fromhex(c_frames[vector["name"]])
        assert wire == p.encode(message, vector["seq"]), vector["name"]
        assert p.decode_all(wire) == [message], vector["name"]


def test_vector_files_are_what_the_generator_produces():
    assert (VECTORS / "vectors.json").read_text() == make_vectors.build_json()
    assert (VECTORS / "pcg_vectors.h").read_text() == make_vectors.build_header(DOC)


def test_python_decodes_host_command_vectors():
    for vector in DOC["host_to_device"]:
        events = p.decode_all(bytes.fromhex(vector["wire_hex"]))
        assert events == [make_vectors.message_from_fields(vector["message"])], vector["name"]


def test_python_counts_damaged_host_frames_like_the_c_decoder():
    counters = {"crc": "crc_errors", "length": "length_errors", "version": "version_errors"}
    for vector in DOC["host_to_device_invalid"]:
        if vector["counted_as"] not in counters:
            continue  # bad commands are well-formed frames: a device concern, not the codec's
        decoder = p.Decoder()
        events = decoder.feed(bytes.fromhex(vector["wire_hex"]))
        assert not any(isinstance(e, (p.Start, p.Stop, p.SetSite)) for e in events), vector["name"]
        assert getattr(decoder.stats, counters[vector["counted_as"]]) == 1, vector["name"]
