"""pcg-runtime end to end: the virtual stethoscope over a real pseudo-terminal, the bundled model in
a real ONNX Runtime session, a real SQLite store; the triage, export and model commands."""

from __future__ import annotations

import csv
import io
import json
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
    assert any("demographics" in note for note in result["unused"])  # the bundled model ignores them: said so
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
    assert demographics_from_file(good) == ({"age_group": "Infant", "sex": "Male", "height_cm": 70.0}, True)
    for content, words in [({"name": "Ana"}, "unknown keys ['name']"), ({"sex": "X"}, "sex 'X'"),
                           ({"pregnant": "yes"}, "pregnant must be"), ([1, 2], "JSON object")]:
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
    assert list(next(csv.reader(out.open()))) == ["patient_id", "outcome_probability", "decision", "reason"]
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
    assert main(["--device", "sim", "--seconds", "6", "--speed", "40", "--db", str(root), "--consent", "--json"]) == 0
    capsys.readouterr()
    assert main(["export", "--db", str(root), "--format", "json", "--out", str(tmp_path / "e1")]) == 0
    first = json.loads((tmp_path / "e1" / "records.json").read_text())
    assert {t: len(rows) for t, rows in first["tables"].items() if rows}.keys() >= {"patients", "recordings", "results"}
    next_seq = first["max_seq"]
    assert f"--after {next_seq}" in capsys.readouterr().out
    assert main(["export", "--db", str(root), "--format", "csv", "--after", str(next_seq), "--out", str(tmp_path / "e2")]) == 0
    assert "nothing new" in capsys.readouterr().out
    assert main(["export", "--db", str(root), "--format", "circor", "--out", str(tmp_path / "circor")]) == 0
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
