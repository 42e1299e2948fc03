"""pcg-runtime end to end: the virtual stethoscope over a real pseudo-terminal, the bundled model in
a real ONNX Runtime session, a real SQLite store; the triage, export and model commands."""

from __future__ import annotations

import csv
import io
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.cli import InputError, demographics_from_file, main, parse_age_group, prompt_demographics
from runtime.formats.wav import write_wav
from runtime.records import Audio
from runtime.store import Store

LEAN_RUN = """
import json, sys
from runtime.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "scipy", "onnx") if m in sys.modules)
print(json.dumps({"exit": code, "heavy": heavy}))
"""


def run_lean(*args: str) -> tuple[dict, dict]:
    done = subprocess.run([sys.executable, "-c", LEAN_RUN, *args], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    *report, status = done.stdout.strip().split("\n")
    status = json.loads(status)
    assert status["exit"] == 0, done.stderr
    return json.loads("\n".join(report)), status


def test_a_simulated_patient_is_screened_with_the_bundled_model_and_stored_without_torch_or_scipy(tmp_path):
    root = tmp_path / "db"
    report, status = run_lean("--device", "sim", "--seconds", "6", "--speed", "10", "--seed", "3", "--db", str(root),
                              "--consent", "--age-group", "Child", "--sex", "F", "--height", "120", "--json")
    assert status == {"exit": 0, "heavy": []}
    result = report["result"]
    assert result["decision"] in ("REFER", "NO_REFER")
    assert 0.0 <= result["probability"] <= 1.0 and result["threshold"] is not None
    assert (result["decision"] == "REFER") == (result["probability"] >= result["threshold"])
    assert set(result["site_contributions"]) == {"AV", "PV", "TV", "MV"}
    assert result["model"]["graph_sha256"] and result["model"]["provider"] == "CPUExecutionProvider"
    # the children's model reads the demographics: what was not given is said, and it is not "without demographics"
    assert any(note.startswith("not given: weight") for note in result["unused"])
    assert not any("without demographics" in note for note in result["unused"])
    assert set(result["murmur"]) == {"Present", "Unknown", "Absent"}  # its murmur head, beside the outcome
    assert "research use" in result["disclaimer"]
    assert [s["site"] for s in report["sites"]] == ["AV", "PV", "TV", "MV"]
    # a loaded test machine may fall behind the 10x emulator, and the link then drops frames: the
    # sites count what they lost and the decoder counts at least as much
    assert sum(s["samples_lost"] for s in report["sites"]) <= report["device"]["samples_lost"]
    assert all(s["quality"]["ok"] for s in report["sites"] if s["samples_lost"] == 0)
    with Store.open(root, read_only=True) as store:
        assert store.query("PRAGMA integrity_check")[0][0] == "ok"
        (code,) = store.query("SELECT code FROM patients")[0]
        (decision, probability, model_id) = store.query("SELECT decision, probability, model_id FROM results")[0]
        (sha,) = store.query("SELECT graph_sha256 FROM models WHERE id = ?", (model_id,))[0]
        demo = store.find_patient(code).demographics
        kinds = {k for (k,) in store.query("SELECT kind FROM device_events")}
    assert code == report["patient_code"] and decision == result["decision"]
    assert probability == pytest.approx(result["probability"]) and sha == result["model"]["graph_sha256"]
    assert (demo.age_group, demo.sex, demo.height_cm, demo.weight_kg) == ("Child", "Female", 120.0, None)
    assert {"device_connected", "model_loaded", "link_counters"} <= kinds


def test_demographics_from_a_json_file_and_their_errors(tmp_path):
    good = tmp_path / "d.json"
    good.write_text(json.dumps({"age_group": "infant", "sex": "Male", "height_cm": 70, "weight_kg": None,
                                "pregnant": None, "consent": True}))
    assert demographics_from_file(good) == ({"age_group": "Infant", "sex": "Male", "height_cm": 70.0}, True, None)
    good.write_text(json.dumps({"consent": True, "consent_reuse": False}))
    assert demographics_from_file(good) == ({}, True, False)
    for content, words in [({"name": "Ana"}, "unknown keys ['name']"), ({"sex": "X"}, "sex 'X'"),
                           ({"pregnant": "yes"}, "pregnant must be"), ([1, 2], "JSON object"),
                           ({"consent_reuse": 1}, "consent_reuse must be true or false")]:
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(content))
        with pytest.raises(InputError, match=words.replace("[", r"\[").replace("]", r"\]")):
            demographics_from_file(bad)


def test_absurd_demographics_are_refused_with_the_field_and_nothing_is_stored(tmp_path, capsys):
    root = tmp_path / "db"
    code = main(["--device", "sim", "--seconds", "1", "--speed", "40", "--db", str(root), "--consent", "--yes",
                 "--sex", "M", "--pregnant", "yes", "--weight", "900"])
    err = capsys.readouterr().err
    assert code == 2 and "weight 900" in err and "pregnancy recorded for a male" in err
    with Store.open(root, read_only=True) as store:
        assert store.query("SELECT COUNT(*) FROM patients")[0][0] == 0
        assert store.query("SELECT COUNT(*) FROM recordings")[0][0] == 0


def test_terminal_prompts_accept_short_answers_reask_on_errors_and_skip_pregnancy_for_males(monkeypatch, capsys):
    answers = "ch\nm\n1000\n130\n\n"  # Child, Male, height out of range -> asked again, 130, weight unknown
    monkeypatch.setattr(sys, "stdin", io.StringIO(answers))
    fields = prompt_demographics({})
    out = capsys.readouterr().out
    assert fields == {"age_group": "Child", "sex": "Male", "height_cm": 130.0}
    assert "outside 30 to 230 cm" in out and "pregnant" not in out
    with pytest.raises(InputError):
        parse_age_group("adult")  # ambiguous prefix is not guessed: Young adult must be said


def test_missing_device_is_a_clear_error():
    done = subprocess.run([sys.executable, "-m", "runtime.cli", "--device", "/dev/nonexistent-stethoscope",
                           "--no-store", "--seconds", "1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "cannot open stethoscope port /dev/nonexistent-stethoscope" in done.stderr


def test_a_tampered_model_is_refused_with_the_reason(tmp_path):
    from runtime.inference import default_model_path

    data = bytearray(default_model_path().read_bytes())
    middle = len(data) // 2
    data[middle] ^= 0xFF  # a flipped byte in the weights
    tampered = tmp_path / "tampered.onnx"
    tampered.write_bytes(bytes(data))
    done = subprocess.run([sys.executable, "-m", "runtime.cli", "--device", "sim", "--no-store", "--model", str(tampered)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and "model refused" in done.stderr
    assert "hash" in done.stderr or "manifest" in done.stderr or "load" in done.stderr
    # every command refuses it the same way, before touching any data
    assert main(["triage", str(tmp_path / "no-such-folder"), "--model", str(tampered), "--out", str(tmp_path / "r.csv")]) == 3
    assert main(["model", "--model", str(tampered)]) == 3
    assert not (tmp_path / "r.csv").exists()


def _write_wav_folder(root: Path) -> dict[str, int]:
    """Plain WAV files: two normal-length synthetic hearts, one 1-second recording, one unreadable file."""
    from firmware_bridge.heart import HeartSoundGenerator, random_profile

    root.mkdir()
    lengths = {"long1": 12.0, "long2": 9.0, "short": 1.0}
    for k, (name, seconds) in enumerate(lengths.items()):
        profile = random_profile(np.random.default_rng(k), "Child")
        write_wav(root / f"{name}.wav", Audio(HeartSoundGenerator(profile, "MV", 2000, k).read(int(seconds * 2000)), 2000))
    (root / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    return lengths


def test_triage_gives_every_patient_a_row_with_retake_reasons(tmp_path, capsys):
    _write_wav_folder(tmp_path / "wavs")
    out = tmp_path / "results.csv"
    assert main(["triage", str(tmp_path / "wavs"), "--out", str(out), "--quiet"]) == 0
    rows = {r["patient_id"]: r for r in csv.DictReader(out.open())}
    assert list(next(csv.reader(out.open()))) == ["patient_id", "outcome_probability", "decision", "reason",
                                                  "murmur_present", "murmur_unknown", "murmur_absent"]  # contract 6
    assert set(rows) >= {"long1", "long2", "short"}
    for name in ("long1", "long2"):
        assert rows[name]["decision"] in ("REFER", "NO_REFER") and 0 <= float(rows[name]["outcome_probability"]) <= 1
    # a 1-second recording: RETAKE, with the reason, and still the model's probability on what there is
    assert rows["short"]["decision"] == "RETAKE" and "only 1.0 s recorded" in rows["short"]["reason"]
    assert 0 <= float(rows["short"]["outcome_probability"]) <= 1
    # an unreadable file: still a row, RETAKE with the read error and no probability
    assert rows["broken"]["decision"] == "RETAKE" and rows["broken"]["outcome_probability"] == ""
    assert rows["broken"]["reason"].startswith("unreadable: ") and "broken.wav" in rows["broken"]["reason"]
    assert "research use" in capsys.readouterr().out


def test_triage_of_shared_recordings_is_scored_by_pcg_eval(physionet2016_root, tmp_path):
    from trainer.evaluate import main as evaluate

    out = tmp_path / "c.csv"
    assert main(["triage", str(physionet2016_root / "training-c"), "--out", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 31 and all(r["decision"] in ("REFER", "NO_REFER", "RETAKE") for r in rows)
    assert evaluate([str(out), str(physionet2016_root / "training-c"), "--json", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["outcome"]["n"] == 31


def test_export_after_a_screening_is_repeatable(tmp_path, capsys):
    root = tmp_path / "db"
    assert main(["--device", "sim", "--seconds", "6", "--speed", "40", "--db", str(root), "--consent", "--consent-reuse",
                 "--json"]) == 0
    capsys.readouterr()
    assert main(["export", "--db", str(root), "--format", "json", "--out", str(tmp_path / "e1")]) == 0
    first = json.loads((tmp_path / "e1" / "records.json").read_text())
    assert {t: len(rows) for t, rows in first["tables"].items() if rows}.keys() >= {"patients", "recordings", "results"}
    next_seq = first["max_seq"]
    assert f"--after {next_seq}" in capsys.readouterr().out
    assert main(["export", "--db", str(root), "--format", "csv", "--after", str(next_seq), "--out", str(tmp_path / "e2")]) == 0
    assert "nothing new" in capsys.readouterr().out
    assert main(["export", "--db", str(root), "--format", "circor", "--out", str(tmp_path / "circor")]) == 0
    assert "1 patients who consented to reuse written" in capsys.readouterr().out
    assert len(list((tmp_path / "circor").rglob("*.wav"))) == 4
    assert main(["export", "--db", str(tmp_path / "nowhere"), "--out", str(tmp_path / "e3")]) == 2


def test_model_command_prints_the_provenance(capsys):
    assert main(["model"]) == 0
    out = capsys.readouterr().out
    assert "verified" in out and "AUROC" in out and "operating point" in out and "research use" in out


def test_a_patient_with_one_unreadable_site_is_scored_on_the_others(tmp_path):
    from firmware_bridge.heart import HeartSoundGenerator, random_profile

    root = tmp_path / "wavs"
    root.mkdir()
    profile = random_profile(np.random.default_rng(7), "Child")
    write_wav(root / "p1_AV.wav", Audio(HeartSoundGenerator(profile, "AV", 4000, 7).read(40000), 4000))
    (root / "p1_MV.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    out = tmp_path / "results.csv"
    assert main(["triage", str(root), "--out", str(out), "--quiet"]) == 0
    (row,) = list(csv.DictReader(out.open()))
    assert row["patient_id"] == "p1" and row["decision"] in ("REFER", "NO_REFER")
    assert 0 <= float(row["outcome_probability"]) <= 1


def _hostile_wav(samples: np.ndarray, declared_rate_hz: int) -> bytes:
    """A 16-bit mono WAV whose header declares any 32-bit rate (write_wav refuses absurd ones)."""
    data = samples.astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, declared_rate_hz, (2 * declared_rate_hz) & 0xFFFFFFFF, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_triage_gives_every_patient_a_row_around_files_with_hostile_rates(tmp_path):
    """Hostile files in the middle of a folder: a rate whose resampling filter once took gigabytes
    (96001 Hz), rates no recorder uses (1 Hz, 2^32-1 Hz), a truncated header. Each is its patient's
    row with the reason; the patients after them are still screened."""
    from firmware_bridge.heart import HeartSoundGenerator, random_profile

    def heart(seed: int, rate_hz: int, seconds: float = 10.0) -> np.ndarray:
        profile = random_profile(np.random.default_rng(seed), "Child")
        return HeartSoundGenerator(profile, "MV", rate_hz, seed).read(int(seconds * rate_hz))

    root = tmp_path / "wavs"
    root.mkdir()
    write_wav(root / "p1.wav", Audio(heart(1, 4000), 4000))
    (root / "p2.wav").write_bytes(_hostile_wav(heart(2, 96001), 96001))
    (root / "p3.wav").write_bytes(_hostile_wav(heart(3, 4000), 1))
    (root / "p4.wav").write_bytes(_hostile_wav(heart(4, 4000), 2**32 - 1))
    (root / "p5.wav").write_bytes(_hostile_wav(heart(5, 4000), 4000)[:30])
    write_wav(root / "p6_AV.wav", Audio(heart(6, 4000), 4000))
    (root / "p6_MV.wav").write_bytes(_hostile_wav(heart(7, 4000), 100))  # too low: p6 is scored on AV alone
    write_wav(root / "p7.wav", Audio(heart(8, 2000), 2000))
    out = tmp_path / "results.csv"
    assert main(["triage", str(root), "--out", str(out), "--quiet"]) == 0
    rows = {r["patient_id"]: r for r in csv.DictReader(out.open())}
    assert list(rows) == ["p1", "p2", "p3", "p4", "p5", "p6", "p7"]
    for scored in ("p1", "p2", "p6", "p7"):
        assert rows[scored]["decision"] in ("REFER", "NO_REFER", "RETAKE"), rows[scored]
        assert 0 <= float(rows[scored]["outcome_probability"]) <= 1
    for refused, words in (("p3", ["p3.wav", "1 Hz", "too low", "954 to 192000 Hz"]),
                           ("p4", ["p4.wav", "4294967295 Hz", "at most 192000 Hz"]),
                           ("p5", ["p5.wav", "truncated"])):
        row = rows[refused]
        assert row["decision"] == "RETAKE" and row["outcome_probability"] == "", row
        assert row["reason"].startswith("unreadable: ") and all(w in row["reason"] for w in words), row["reason"]


MEMORY_CAPPED_RUN = """
import resource, sys
from runtime.cli import main
def vm_size():
    return int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
assert main(["triage", sys.argv[1], "--out", sys.argv[2], "--quiet"]) == 0  # loads everything a run needs
limit = vm_size() + 400 * 2**20  # room for any normal recording, not for two hours of audio
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
sys.exit(main(["triage", sys.argv[3], "--out", sys.argv[4], "--quiet"]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="caps memory with RLIMIT_AS and reads /proc")
def test_a_recording_too_long_for_memory_is_its_patients_row_not_the_end_of_the_batch(tmp_path):
    from firmware_bridge.heart import HeartSoundGenerator, random_profile

    small, large = tmp_path / "small", tmp_path / "large"
    small.mkdir()
    large.mkdir()
    for k, name in enumerate(("p1", "p3")):
        profile = random_profile(np.random.default_rng(k), "Child")
        audio = Audio(HeartSoundGenerator(profile, "MV", 4000, k).read(40000), 4000)
        write_wav(small / f"{name}.wav", audio)
        write_wav(large / f"{name}.wav", audio)
    write_wav(large / "p2.wav", Audio(np.zeros(30_000_000, np.int16), 4000))  # 2 h 5 min: over 500 MB as float64
    out = tmp_path / "large.csv"
    done = subprocess.run([sys.executable, "-c", MEMORY_CAPPED_RUN, str(small), str(tmp_path / "small.csv"),
                           str(large), str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = {r["patient_id"]: r for r in csv.DictReader(out.open())}
    assert list(rows) == ["p1", "p2", "p3"]
    assert rows["p2"]["decision"] == "RETAKE" and rows["p2"]["outcome_probability"] == ""
    assert "p2.wav" in rows["p2"]["reason"] and "too long" in rows["p2"]["reason"]
    assert all(0 <= float(rows[p]["outcome_probability"]) <= 1 for p in ("p1", "p3"))


@pytest.mark.parametrize("uses, said, not_said", [
    (True, "the model uses these answers: they change its result", "does not use"),
    (False, "this model does not use these answers", "change its result"),
])
def test_the_prompt_says_whether_the_answers_change_the_result(monkeypatch, capsys, uses, said, not_said):
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n\n\n\n\n"))
    prompt_demographics({}, uses_demographics=uses)
    out = capsys.readouterr().out
    assert said in out and not_said not in out
