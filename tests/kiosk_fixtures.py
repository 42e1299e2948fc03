"""Shared pieces of the kiosk tests: a kiosk on the virtual stethoscope, HTTP helpers, a headless browser.

Everything is real: the Emulator behind a pseudo-terminal, a ScreeningBox with a SQLite store and
the bundled model (None where this build has none yet), the kiosk's HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from firmware_bridge.emulator import Emulator, Faults
from runtime.kiosk import KioskServer
from runtime.store import Store

REPO_ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO_ROOT / "runs" / "kiosk-screenshots"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMEDRIVER_CANDIDATES = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def bundled_model():
    """The bundled default model, or None while this build ships none."""
    from runtime.inference import Model, default_model_path

    return Model.load(default_model_path()) if default_model_path().is_file() else None


@dataclass
class Kiosk:
    server: KioskServer
    store: Store
    emulator: Emulator
    seconds: float

    @property
    def url(self) -> str:
        return self.server.url

    def request(self, method: str, path: str, body=None, *, raw: bytes | None = None, headers: dict | None = None):
        """(status, headers, parsed JSON or bytes) of one request to the kiosk."""
        return http_request(self.url, method, path, body, raw=raw, headers=headers)

    def count(self, table: str) -> int:
        return self.store.query(f"SELECT COUNT(*) FROM {table}")[0][0]


def http_request(url: str, method: str, path: str, body=None, *, raw: bytes | None = None, headers: dict | None = None):
    """(status, headers, parsed JSON or bytes) of one request to the kiosk at `url`."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    sent = {"Content-Type": "application/json"} if data is not None else {}
    sent.update(headers or {})
    request = urllib.request.Request(url.rstrip("/") + path, data=data, method=method, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, reply_headers, payload = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, reply_headers, payload = error.code, error.headers, error.read()
    if reply_headers.get("Content-Type", "").startswith("application/json"):
        payload = json.loads(payload)
    return status, reply_headers, payload


class EventStream:
    """A client of the kiosk's event stream (/api/events) reading in a thread; keeps every event
    with its arrival time. A plain socket, so `close()` returns at once even while a read waits."""

    def __init__(self, url: str, headers: dict | None = None):
        self.events: list[dict] = []
        self.arrivals: list[float] = []
        address = urlsplit(url)
        self._socket = socket.create_connection((address.hostname, address.port), timeout=60)
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        self._socket.sendall(f"GET /api/events HTTP/1.1\r\nHost: {address.netloc}\r\n{extra}\r\n".encode())
        self._lines = self._socket.makefile("rb")
        status = self._lines.readline()
        assert b" 200 " in status, status
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for line in self._lines:
                if line.startswith(b"data: "):
                    self.events.append(json.loads(line[len(b"data: "):]))
                    self.arrivals.append(time.monotonic())
        except (OSError, ValueError):
            pass

    def wait_for(self, predicate, timeout_s: float = 30.0) -> dict:
        """The first event (since the stream opened) for which `predicate` is true."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for event in list(self.events):
                if predicate(event):
                    return event
            time.sleep(0.02)
        raise AssertionError(f"no such event in {timeout_s} s; got {[e['type'] for e in self.events]}")

    def close(self) -> None:
        try:
            self._socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._thread.join(5)
        self._lines.close()
        self._socket.close()


@contextmanager
def running_kiosk(tmp_path: Path, *, speed: float = 20.0, seconds: float = 6.0, faults: Faults = Faults(),
                  token: str | None = None, model="bundled", scenario: str | None = None, referral: dict | None = None):
    """A kiosk for the virtual stethoscope on a pseudo-terminal, with a fresh store in tmp_path.
    `scenario`: a practice patient (firmware_bridge.scenarios) instead of the emulator's own, the
    kiosk labelled practice as `pcg-runtime --scenario` labels it; `referral`: the box
    configuration's (runtime.config)."""
    from firmware_bridge.scenarios import scenario as practice_scenario
    from runtime.screening import ScreeningBox

    model = bundled_model() if model == "bundled" else model
    setup = {}
    if scenario is not None:
        practice = practice_scenario(scenario, seed=5, speed=speed)
        setup = {"profile": practice.profile, "faults": practice.faults, "battery": practice.battery}
    with Emulator(link=tmp_path / "stethoscope", seed=5, speed=speed, **({"faults": faults} | setup)) as emulator:
        with Store.open(tmp_path / "store") as store:
            def make_box(listener):
                return ScreeningBox(emulator.path, store=store, model=model, seconds_per_site=seconds, listener=listener)

            with KioskServer(make_box, store=store, port=0, token=token, seconds_per_site=seconds, practice=scenario,
                             referral=referral) as server:
                yield Kiosk(server, store, emulator, seconds)


@dataclass
class KioskProcess:
    """`pcg-runtime --kiosk` running as its own program (the way systemd runs it)."""

    process: subprocess.Popen
    url: str
    errors: object  # the program's stderr, a file

    def request(self, method: str, path: str, body=None):
        return http_request(self.url, method, path, body)

    def stderr(self) -> str:
        self.errors.seek(0)
        return self.errors.read()


@contextmanager
def kiosk_process(*flags: str):
    """`python -m runtime.cli --kiosk --port 0 FLAGS`, once it has said where it serves; killed on
    the way out if the test left it running. Its stderr goes to a file, so it never blocks on it."""
    with tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen([sys.executable, "-m", "runtime.cli", "--kiosk", "--port", "0", *flags],
                                   cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=errors, text=True)
        kiosk = KioskProcess(process, "", errors)
        try:
            line = process.stdout.readline()
            match = re.search(r"serving on (http://127\.0\.0\.1:\d+/)", line)
            assert match, f"the kiosk did not start (exit {process.poll()}): {line!r} {kiosk.stderr()[-2000:]}"
            kiosk.url = match.group(1)
            yield kiosk
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            process.stdout.close()


def _first_existing(paths) -> str | None:
    return next((p for p in paths if Path(p).exists()), None)


@contextmanager
def headless_chromium(width: int = 800, height: int = 480):
    """Selenium driving Debian's chromium through its chromedriver; skips, saying why, when absent."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[dev]')")
    binary = os.environ.get("PCG_CHROMIUM") or _first_existing(CHROMIUM_CANDIDATES) or shutil.which("chromium")
    driver_path = os.environ.get("PCG_CHROMEDRIVER") or _first_existing(CHROMEDRIVER_CANDIDATES) or shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.skip(f"headless Chromium absent (chromium: {binary}, chromedriver: {driver_path}); "
                    "apt-get install chromium chromium-driver (.ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={width},{height}", "--lang=en-GB", "--autoplay-policy=no-user-gesture-required",
                     "--disable-extensions", "--no-first-run", "--hide-scrollbars"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        yield driver
    finally:
        driver.quit()


def screenshot_dir(name: str) -> Path:
    folder = SCREENSHOTS / name
    folder.mkdir(parents=True, exist_ok=True)
    print(f"kiosk screenshots: {folder}")
    return folder
