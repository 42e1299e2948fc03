"""The kiosk under the hostile tester's attacks, against a well-kept server library on the same attacks.

Run: python benchmarks/kiosk_attack.py [--connections N] [--hold S]. Prints the figures and writes
benchmarks/results/kiosk_attack.json. Not a test (tests/test_kiosk_hostile.py proves the
behaviour). The comparison server needs `pip install waitress`; without it that row is skipped
with a message.

Each server runs in its own process with the field box's open-file limit (1,024), on 127.0.0.1:
- kiosk: the real KioskServer (virtual stethoscope on a pseudo-terminal, temporary store, no model);
- kiosk-unhardened: the same with the request deadline, socket timeout and connection limit off,
  as it was before issue 14;
- waitress: waitress 3 with its defaults (connection_limit 100, channel_timeout 120 s) serving a
  WSGI app that answers GET /api/state with the same kind of JSON;
- waitress-tuned: the same with channel_timeout 10 s, the kiosk's deadline.

Attacks, one after the other, each on a fresh server:
- half-open: N connections that send a partial request line and headers and then nothing;
- trickle: N/4 connections that send one byte of headers every second, never finishing.
While an attack holds for S seconds, a legitimate client asks GET /api/state every 0.25 s (new
connection each time, 5 s timeout): success rate and median latency. The server's CPU (user +
system from /proc) per wall second during the hold shows a spinning accept loop. After the hold,
how many attack connections the server itself has closed.

Why the kiosk keeps the standard-library server, hardened (figures of 2026-12-06 in the results
file): under both attacks the hardened kiosk answered every legitimate request (median a few ms)
and closed every attack connection itself; waitress, defaults or with the kiosk's 10 s timeout,
answered none while the attack held (it stops accepting at its connection limit instead of
closing the longest-waiting connection, and its timeout counts inactivity, which a trickle of one
byte a second never reaches). Keeping the standard library also adds no dependency to the lean
runtime and keeps the event stream on its own thread. (kiosk-unhardened keeps the back-off on a
failed accept, so its CPU figure does not show the old spin.)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
RESULTS = REPO_ROOT / "benchmarks" / "results" / "kiosk_attack.json"
BOX_OPEN_FILES = 1024
PARTIAL = b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
LEGIT = b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


# -- the servers (each in a child process: python benchmarks/kiosk_attack.py --serve KIND --port-file F) --

def serve(kind: str, port_file: Path) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (BOX_OPEN_FILES, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    if kind.startswith("waitress"):
        import waitress

        def app(environ, start_response):
            body = json.dumps({"type": "state", "device": {"connected": True}, "visit": None}).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port_file.write_text(str(sock.getsockname()[1]))
        tuned = {"channel_timeout": 10} if kind == "waitress-tuned" else {}
        waitress.serve(app, sockets=[sock], threads=4, _quiet=True, **tuned)
        return
    from firmware_bridge.emulator import Emulator
    from runtime.kiosk import server as kiosk_server
    from runtime.screening import ScreeningBox
    from runtime.store import Store

    if kind == "kiosk-unhardened":
        kiosk_server.KioskHandler.timeout = None
        kiosk_server.REQUEST_DEADLINE_S = 1e9
        kiosk_server.MAX_CONNECTIONS = 10**9
    with tempfile.TemporaryDirectory() as tmp, Emulator(link=Path(tmp) / "stethoscope", seed=1, speed=1) as emulator:
        with Store.open(Path(tmp) / "store") as store:
            def make_box(listener):
                return ScreeningBox(emulator.path, store=store, model=None, listener=listener)

            with kiosk_server.KioskServer(make_box, store=store, port=0) as kiosk:
                port_file.write_text(str(kiosk.port))
                while True:
                    time.sleep(1)


# -- the attacker -------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def legit_request(port: int) -> float | None:
    """Seconds for one GET /api/state answered 200, or None when it failed or took over 5 s."""
    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(LEGIT)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        return time.perf_counter() - started if data.startswith(b"HTTP/1.1 200") else None
    except OSError:
        return None


def closed(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def attack(kind: str, mode: str, n: int, hold_s: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        server = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port-file", str(port_file)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while not port_file.exists() or not port_file.read_text():
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"{kind} did not start")
                time.sleep(0.05)
            port = int(port_file.read_text())
            time.sleep(0.5)
            baseline = [t for t in (legit_request(port) for _ in range(10)) if t is not None]
            attackers, refused = [], 0
            n_open = n if mode == "half-open" else n // 4
            cpu_before, wall_before = cpu_seconds(server.pid), time.monotonic()
            for _ in range(n_open):
                try:
                    s = socket.create_connection(("127.0.0.1", port), timeout=2)
                    s.sendall(PARTIAL)
                    attackers.append(s)
                except OSError:
                    refused += 1
            latencies, failures = [], 0
            next_trickle = time.monotonic()
            end = time.monotonic() + hold_s
            while time.monotonic() < end:
                if mode == "trickle" and time.monotonic() >= next_trickle:
                    for s in attackers:
                        try:
                            s.send(b"a")
                        except OSError:
                            pass
                    next_trickle += 1.0
                t = legit_request(port)
                if t is None:
                    failures += 1
                else:
                    latencies.append(t)
                time.sleep(0.25)
            cpu = (cpu_seconds(server.pid) - cpu_before) / (time.monotonic() - wall_before)
            closed_by_server = sum(closed(s) for s in attackers)
            for s in attackers:
                s.close()
            asked = len(latencies) + failures
            return {
                "server": kind, "attack": mode, "attack_connections": n_open, "attack_connects_refused": refused,
                "legit_ok": f"{len(latencies)}/{asked}",
                "legit_success_rate": round(len(latencies) / asked, 3) if asked else None,
                "legit_median_ms": round(1000 * statistics.median(latencies), 1) if latencies else None,
                "baseline_median_ms": round(1000 * statistics.median(baseline), 1) if baseline else None,
                "server_cpu_per_wall_s": round(cpu, 3),
                "attack_connections_closed_by_server": closed_by_server,
            }
        finally:
            server.kill()
            server.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--connections", type=int, default=1100, help="half-open connections (over the box's 1,024 open files)")
    p.add_argument("--hold", type=float, default=15.0, help="seconds each attack holds (over the kiosk's 10 s deadline)")
    p.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    p.add_argument("--port-file", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args.serve, args.port_file)
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.connections)), hard))
    kinds = ["kiosk", "kiosk-unhardened"]
    try:
        import waitress  # noqa: F401

        kinds += ["waitress", "waitress-tuned"]
    except ImportError:
        print("waitress is not installed (pip install waitress): the library comparison is skipped")
    rows = []
    for kind in kinds:
        for mode in ("half-open", "trickle"):
            row = attack(kind, mode, args.connections, args.hold)
            rows.append(row)
            print(json.dumps(row))
    result = {
        "benchmark": "kiosk_attack",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "server_open_file_limit": BOX_OPEN_FILES, "hold_s": args.hold,
        "rows": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
