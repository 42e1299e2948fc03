"""pcg-runtime end to end through a real pseudo-terminal and the virtual stethoscope."""

import json
import subprocess
import sys

from runtime.dsp import FrontEndConfig

LEAN_RUN = """
import json, sys
from runtime.cli import main
code = main(["--device", "sim", "--seconds", "2", "--speed", "40", "--seed", "3", "--json"])
heavy = sorted(m for m in ("torch", "scipy") if m in sys.modules)
print(json.dumps({"exit": code, "heavy": heavy}))
"""


def run_lean():
    done = subprocess.run([sys.executable, "-c", LEAN_RUN], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    report = json.loads(text[: text.rindex("\n{")])
    return report, json.loads(text[text.rindex("\n{") :])


def test_simulated_patient_is_recorded_at_four_sites_without_torch_or_scipy():
    report, status = run_lean()
    assert status == {"exit": 0, "heavy": []}
    assert [s["site"] for s in report["sites"]] == ["AV", "PV", "TV", "MV"]
    for site in report["sites"]:
        assert site["samples"] == 2 * site["rate_hz"]
        assert site["samples_lost"] == 0
        assert site["frames"] == FrontEndConfig().frames_for(2000)  # 2 s at the 1 kHz target rate
        assert -40 < site["rms_dbfs"] < -10
    assert report["patient_tensor"]["shape"][:2] == [5, 48]
    assert report["patient_tensor"]["sites_present"] == ["AV", "PV", "TV", "MV"]
    assert report["decoder"]["crc_errors"] == 0
    assert report["decision"] is None and "research use" in report["disclaimer"]


def test_missing_device_is_a_clear_error():
    done = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "--device", "/dev/nonexistent-stethoscope", "--seconds", "1"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert "cannot open stethoscope port /dev/nonexistent-stethoscope" in done.stderr


def test_recording_with_a_store_keeps_every_site_as_a_wav_and_a_row(tmp_path):
    from runtime.cli import main
    from runtime.store import Store

    root = tmp_path / "store"
    assert main(["--device", "sim", "--seconds", "1.5", "--speed", "40", "--db", str(root), "--consent", "--json"]) == 0
    with Store.open(root, read_only=True) as store:
        assert store.query("PRAGMA integrity_check")[0][0] == "ok"
        (code,) = store.query("SELECT code FROM patients")[0]
        (session_id,) = store.query("SELECT id FROM sessions")[0]
        recordings = store.recordings(store.session(session_id))
        assert store.find_patient(code).code == code
        assert [r.site for r in recordings] == ["AV", "PV", "TV", "MV"]
        for rec in recordings:
            assert (rec.status, rec.samples_written, rec.gaps) == ("complete", 6000, ())
            audio = store.read_audio(rec)
            assert audio.rate_hz == 4000 and len(audio.samples) == 6000 and audio.samples.std() > 100
        kinds = [k for (k,) in store.query("SELECT kind FROM device_events ORDER BY seq")]
        assert kinds == ["device_connected", "link_counters"]


def test_storing_without_consent_is_refused_before_anything_is_recorded(tmp_path, capsys):
    import pytest

    from runtime.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["--device", "sim", "--db", str(tmp_path / "store")])
    assert stop.value.code == 2
    assert "--consent" in capsys.readouterr().err
    assert not (tmp_path / "store").exists()
