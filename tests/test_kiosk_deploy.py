"""The Raspberry Pi deployment files agree with the kiosk: loopback only, same port, clean stop."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess

from kiosk_fixtures import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(DEPLOY / "pcg-kiosk.service")
    return parser


def test_service_serves_the_kiosk_on_the_loopback_only():
    service = unit()["Service"]
    command = service["ExecStart"].split()
    assert command[0].endswith("/pcg-runtime") and "--kiosk" in command
    assert "--kiosk-host" not in command and "--token" not in command
    assert service["IPAddressDeny"] == "any" and service["IPAddressAllow"] == "localhost"
    assert service["KillSignal"] == "SIGTERM" and service["Restart"] == "on-failure"
    assert "dialout" in service["SupplementaryGroups"]


def test_the_service_keeps_the_store_private_to_its_user():
    service = unit()["Service"]
    command = service["ExecStart"].split()
    assert command[command.index("--db") + 1] == f"/var/lib/{service['StateDirectory']}"
    assert service["StateDirectoryMode"] == "0700" and service["UMask"] == "0077"


def test_browser_opens_the_port_the_service_serves():
    port = re.search(r"--port (\d+)", unit()["Service"]["ExecStart"]).group(1)
    script = (DEPLOY / "pcg-kiosk-browser.sh").read_text()
    assert f"http://127.0.0.1:{port}/" in script and "--kiosk" in script
    desktop = (DEPLOY / "pcg-kiosk-browser.desktop").read_text()
    assert "Exec=/opt/pcg/share/pcg-kiosk-browser.sh" in desktop


def test_browser_script_is_valid_shell():
    shell = shutil.which("sh")
    assert subprocess.run([shell, "-n", str(DEPLOY / "pcg-kiosk-browser.sh")]).returncode == 0
