"""`pcg-runtime --device sim --kiosk`: serves on the loopback, answers, and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request

from kiosk_fixtures import REPO_ROOT


def test_kiosk_serves_the_virtual_stethoscope_and_stops_on_sigterm(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "--device", "sim", "--kiosk", "--port", "0", "--db", str(tmp_path / "store"),
         "--seconds", "2"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = process.stdout.readline()
        match = re.search(r"serving on (http://127\.0\.0\.1:\d+/)", line)
        assert match, line + process.stderr.read() if process.poll() is not None else line
        with urllib.request.urlopen(match.group(1) + "api/state", timeout=30) as response:
            state = json.loads(response.read())
        assert state["type"] == "state" and state["seconds_per_site"] == 2.0
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_kiosk_on_a_network_address_without_a_token_is_refused(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "--device", "sim", "--kiosk", "--kiosk-host", "0.0.0.0", "--port", "0",
         "--db", str(tmp_path / "store")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, env={k: v for k, v in os.environ.items() if k != "PCG_KIOSK_TOKEN"},
    )
    assert done.returncode == 2
    assert "token" in done.stderr and "serving on" not in done.stdout
