"""Kiosk responsiveness: how fast the app loads in Chromium, and how often live updates arrive.

Run: python benchmarks/kiosk.py [--loads N] [--seconds S]. Prints the figures and writes
benchmarks/results/kiosk.json. Not a test. Needs Debian's chromium and chromium-driver and selenium
(.ci/run installs them). Everything runs on this machine: the virtual stethoscope on a
pseudo-terminal at real-time speed, a ScreeningBox with a temporary store, the kiosk on 127.0.0.1.

- Page load (headless Chromium at 800x480, cache disabled, fresh navigation each time):
  DOMContentLoaded, the load event, and the first state pushed over the event stream and rendered
  (performance mark "pcg-first-state"), all from navigation start; median, min, max.
- Live updates while a site is recorded at real time: level events per second seen by an
  event-stream client and their spacing, and how often the page's timer actually changed.
  The runtime sends levels at 10 per second (runtime.screening.LEVEL_RATE_HZ); the kiosk passes at
  most 30 per second to each browser, dropping stale ones for a slow client.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))

from kiosk_fixtures import EventStream, headless_chromium, running_kiosk  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "kiosk.json"


def summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1), "max": round(max(values), 1)}


def page_loads(driver, url: str, loads: int) -> dict:
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
    figures = {"dom_content_loaded_ms": [], "load_ms": [], "first_state_ms": []}
    for _ in range(loads):
        driver.get("about:blank")
        driver.get(url)
        timing = None
        deadline = time.monotonic() + 30
        while timing is None:
            timing = driver.execute_script(
                "const n = performance.getEntriesByType('navigation')[0];"
                "const s = performance.getEntriesByName('pcg-first-state')[0];"
                "return n && s && n.loadEventEnd > 0 ? [n.domContentLoadedEventEnd, n.loadEventEnd, s.startTime] : null;")
            if time.monotonic() > deadline:
                raise RuntimeError("the page did not finish loading in 30 s")
            time.sleep(0.01)
        for name, value in zip(figures, timing):
            figures[name].append(value)
    return {"loads": loads, "cache": "disabled", **{name: summary(values) for name, values in figures.items()}}


def live_updates(kiosk, driver, seconds: float) -> dict:
    stream = EventStream(kiosk.url)
    driver.get(kiosk.url)
    driver.execute_script(
        "window.timerChanges = 0; new MutationObserver(() => window.timerChanges++)"
        ".observe(document.getElementById('timer'), {childList: true, characterData: true, subtree: true});")
    status, _, _ = kiosk.request("POST", "/api/patients", {"consent": True})
    assert status == 201, status
    deadline = time.monotonic() + 30
    while driver.execute_script("return document.getElementById('btn-record').offsetParent === null"):
        assert time.monotonic() < deadline, "the recording screen did not show"
        time.sleep(0.02)
    driver.execute_script("window.timerChanges = 0;")
    started = time.monotonic()
    driver.execute_script("document.getElementById('btn-record').click();")
    while not driver.execute_script("return document.getElementById('step-AV').classList.contains('ok') ||"
                                    " document.getElementById('step-AV').classList.contains('retake')"):
        assert time.monotonic() - started < seconds + 30, "the site did not finish"
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    timer_changes = driver.execute_script("return window.timerChanges")
    stream.close()
    arrivals = [t for t, e in zip(stream.arrivals, stream.events) if e["type"] == "level"]
    gaps_ms = [1000 * (b - a) for a, b in zip(arrivals, arrivals[1:])]
    span = arrivals[-1] - arrivals[0]
    return {
        "speed": 1.0, "site_seconds": seconds, "wall_s": round(elapsed, 2),
        "level_events": len(arrivals), "level_events_per_s": round((len(arrivals) - 1) / span, 1),
        "spacing_ms": {"median": round(statistics.median(gaps_ms), 1), "p95": round(sorted(gaps_ms)[int(0.95 * (len(gaps_ms) - 1))], 1),
                       "max": round(max(gaps_ms), 1)},
        "page_timer_updates_per_s": round(timer_changes / elapsed, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", type=int, default=10, help="page loads to time (default 10)")
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds recorded at real time (default 6)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pcg-kiosk-bench-") as tmp:
        with running_kiosk(Path(tmp), speed=1.0, seconds=args.seconds) as kiosk, headless_chromium() as driver:
            loads = page_loads(driver, kiosk.url, args.loads)
            live = live_updates(kiosk, driver, args.seconds)
            browser = driver.capabilities.get("browserVersion")
    result = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"machine": platform.machine(), "system": platform.platform(), "python": platform.python_version(),
                    "chromium": browser},
        "viewport": "800x480",
        "page_load": loads,
        "live_updates": live,
    }
    print(json.dumps(result, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
