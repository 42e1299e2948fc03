"""The kiosk against hostile clients on its port: half-open and trickling connections, crafted
numbers, malformed bodies. Each test sends the attack over a real socket to a real kiosk.

(benchmarks/kiosk_attack.py runs the same attacks at full size and measures the server's CPU and
a legitimate user's latency; here they are sized to prove the behaviour, not to time it.)
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from kiosk_fixtures import running_kiosk

from runtime.kiosk.server import MAX_CONNECTIONS

PARTIAL_REQUEST = b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "  # headers never finished


def raw_exchange(port: int, payload: bytes, timeout_s: float = 10.0) -> tuple[int, dict]:
    """(status, JSON body) of one hand-written HTTP request."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        s.sendall(payload)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), None)
                if length is not None and len(body) >= length:
                    break
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    return status, json.loads(body) if body else {}


def post(body: bytes, *, length: bytes | None = None, path: bytes = b"/api/patients") -> bytes:
    length = str(len(body)).encode() if length is None else length
    return (b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + length + b"\r\nConnection: close\r\n\r\n" + body)


def closed_by_server(s: socket.socket, timeout_s: float) -> bool:
    """True when the server closes `s` (end of file or reset) within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            if s.recv(1024) == b"":
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        pass
    return False


def assert_no_internals(message: str) -> None:
    for leak in ("Traceback", "Error:", "int too large", "maximum recursion", "invalid literal", "sqlite"):
        assert leak not in message, message


def test_half_open_connections_do_not_lock_out_the_operator(tmp_path):
    with running_kiosk(tmp_path, model=None) as kiosk:
        attackers = []
        try:
            for _ in range(3 * MAX_CONNECTIONS):
                s = socket.create_connection(("127.0.0.1", kiosk.server.port), timeout=5)
                s.sendall(PARTIAL_REQUEST)
                attackers.append(s)
            status, _, state = kiosk.request("GET", "/api/state")
            assert status == 200 and state["type"] == "state"
            assert len(kiosk.server.connections) <= MAX_CONNECTIONS
            assert kiosk.server.connections.closed_for_room >= 2 * MAX_CONNECTIONS - 1
        finally:
            for s in attackers:
                s.close()


def test_a_connection_that_never_finishes_its_request_is_closed_at_the_deadline(tmp_path):
    with running_kiosk(tmp_path, model=None) as kiosk:
        kiosk.server.connections.deadline_s = 1.0
        silent = socket.create_connection(("127.0.0.1", kiosk.server.port), timeout=5)
        trickle = socket.create_connection(("127.0.0.1", kiosk.server.port), timeout=5)
        try:
            started = time.monotonic()
            trickled_until_closed = False
            for byte in PARTIAL_REQUEST * 4:  # a byte every 0.2 s: each read is quick, the request never ends
                try:
                    trickle.sendall(bytes([byte]))
                except (BrokenPipeError, ConnectionResetError):
                    trickled_until_closed = True
                    break
                time.sleep(0.2)
                if time.monotonic() - started > 8:
                    break
            assert trickled_until_closed or closed_by_server(trickle, 0.5), "the trickling client was never closed"
            assert closed_by_server(silent, 2.0), "the silent client was never closed"
            assert kiosk.server.connections.closed_for_deadline >= 2
            status, _, _ = kiosk.request("GET", "/api/state")
            assert status == 200
        finally:
            silent.close()
            trickle.close()


@pytest.mark.parametrize("body, field", [
    (b'{"consent": true, "height_cm": 1' + b"0" * 400 + b"}", "height_cm"),
    (b'{"consent": true, "weight_kg": -1' + b"0" * 400 + b"}", "weight_kg"),
])
def test_numbers_of_hundreds_of_digits_are_out_of_range_not_a_crash(tmp_path, body, field):
    with running_kiosk(tmp_path, model=None) as kiosk:
        status, reply = raw_exchange(kiosk.server.port, post(body))
        assert status == 422
        assert reply["errors"][field]["code"] == "range"
        assert_no_internals(reply["error"])
        assert kiosk.count("patients") == 0


@pytest.mark.parametrize("payload, expected", [
    (post(b"{}", length=b"\xb2"), 411),  # "²" (latin-1, as headers are read): a digit to str.isdigit, not to int()
    (post(b"{}", length=b"99999999999999999999999999"), 413),
    (post(b"[" * 8000 + b"]" * 8000), 400),                         # nested past Python's recursion limit
    (post(b'{"consent": true, "height_cm": 1' + b"0" * 5000 + b"}"), 400),  # past int's digit limit
    (post(b'{"consent": true, "height_cm": NaN}'), 400),
    (post(b'{"site": "AV", "seconds": 1' + b"0" * 400 + b"}", path=b"/api/visit/record"), 422),
    (b"GET /api/export?after_seq=" + b"9" * 30 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", 422),
    (b"GET /api/export?after_seq=%C2%B2 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", 422),
    (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 414),
    (b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", 431),
])
def test_crafted_requests_get_a_plain_4xx(tmp_path, payload, expected):
    with running_kiosk(tmp_path, model=None) as kiosk:
        status, reply = raw_exchange(kiosk.server.port, payload)
        assert status == expected, reply
        assert isinstance(reply.get("error"), str) and reply["error"]
        assert_no_internals(reply["error"])
        status, _, _ = kiosk.request("GET", "/api/state")  # and the kiosk still answers
        assert status == 200
