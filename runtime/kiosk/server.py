"""The kiosk server: static app, JSON API and a server-sent event stream around one ScreeningBox.

    serve(lambda listener: ScreeningBox(device, store=store, model=model, listener=listener),
          store=store, port=8080)                      # blocks; Ctrl-C or SIGTERM stops it

(`serve_from_cli` does this for `pcg-runtime --kiosk`.)

The box's methods block and belong to one thread, so a worker thread creates the box (through the
factory, which receives the listener to pass on) and runs every call on it, one at a time. HTTP
requests validate their input (runtime.kiosk.api), then hand the call to the worker: starting a
patient and finishing wait for the answer; recording a site returns 202 at once and reports
through the event stream (level, device, site_done or recording_failed). The stream starts with
the whole state, so a reloaded page picks up where it was. Between calls the worker keeps reading
the link and discards the audio, so a recording starts on fresh audio and an unplug shows at once.

Stopping (Ctrl-C, SIGTERM) takes well under 2 s in every state: the box is interrupted
(ScreeningBox.interrupt: its waits for the device's answer, for an unplugged stethoscope, for audio
all check one event), the calls still queued are dropped, and the box closes the link and the
recording in progress (kept, as interrupted) before the program ends.

Practice (`pcg-runtime --device sim --scenario NAME`): the state carries the scenario's name, every
result is labelled with it, and the patients and recordings go to a store that is thrown away
when the kiosk stops (runtime.cli).

The state also carries the box configuration's referral (runtime.config: where a REFER goes and
how soon), which the result screen and the referral slip name; None when the site has set none.

Security: by default the server binds 127.0.0.1 and accepts only requests whose Host header names
the loopback (a web page elsewhere cannot reach it by DNS rebinding). Any other bind address needs
an access token of at least 16 characters. With a token (required there, optional on loopback)
every request carries it: as a cookie, set by opening `/?token=...` once, or as
`Authorization: Bearer ...`.

Hostile clients (the port is reachable by anything on the loopback, or the LAN with a token): a
client has REQUEST_DEADLINE_S to deliver a whole request (line, headers, body), counted from the
moment the server waits for it, so a connection that sends nothing or trickles a byte at a time
is closed; at most MAX_CONNECTIONS are open, and when a new one would pass that, the one that has
waited longest for its request is closed to make room (a client that sends its request at once
is never the one waiting longest). Malformed requests get a 4xx with a plain sentence; an
unexpected failure gets a 500 that names no internals (the details go to the box's log).
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import hmac
import io
import ipaddress
import json
import queue
import select
import signal
import socket
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from firmware_bridge import protocol
from runtime.kiosk.api import (
    FieldErrors,
    unknown_fields,
    field_error,
    parse_export,
    parse_patient,
    parse_recording,
    require_object,
)
from runtime.clock import clock_warning, newest_record
from runtime.manifest import DISCLAIMER
from runtime.sites import GUIDED_SITES
from runtime.store import InvalidDemographicsError, LowDiskSpaceError, StoreError, export_records
from runtime.store.db import iso_utc

MIN_TOKEN_CHARS = 16
COOKIE = "pcg_kiosk_token"
MAX_BODY_BYTES = 16_384
LEVEL_INTERVAL_S = 1 / 30  # at most 30 waveform updates per second reach each browser
KEEPALIVE_S = 15.0
CLIENT_CHECK_S = 1.0  # how soon a closed event stream is noticed when nothing is sent
IDLE_STATUS_S = 2.0
CALL_TIMEOUT_S = 120.0
MAX_EVENT_STREAMS = 16  # browsers open one each; more means something is wrong
REQUEST_DEADLINE_S = 10.0  # to deliver a whole request once the server waits for one (keep-alive idle included)
SOCKET_TIMEOUT_S = 10.0  # any single read or write on a connection
MAX_CONNECTIONS = 64  # open at once (a kiosk has a handful of browsers); well under the box's 1,024 open files
REAPER_INTERVAL_S = 0.25
# How often the main thread and the HTTP loop look for a stop. A SIGTERM delivered to another thread
# does not wake the main thread's wait, so this bounds how late a stop is seen (the 0.5 s defaults,
# one for each, cost up to 1 s of the 2 s a stop may take).
STOP_POLL_S = 0.1
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
}
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; media-src 'self'; object-src 'none'; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class KioskConfigError(ValueError):
    """The server was asked to start in a way that is not safe or not possible (the message says why)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost: it may resolve to anything


class _Subscriber:
    """One event-stream client: ordered events, plus the latest level (older levels are dropped, so
    a slow client gets fresh waveforms at a bounded rate rather than a growing backlog)."""

    def __init__(self) -> None:
        self.events: collections.deque[dict] = collections.deque(maxlen=1000)
        self.level: dict | None = None
        self.next_level_at = 0.0
        self.closed = False
        self.cond = threading.Condition()

    def put(self, event: dict) -> None:
        with self.cond:
            if event["type"] == "level":
                self.level = event
            else:
                if event["type"] in ("site_done", "recording_failed"):
                    self.level = None  # a level after the site ended would be stale
                self.events.append(event)
            self.cond.notify()

    def get(self, timeout_s: float) -> dict | None:
        """The next event, or None after `timeout_s` without one (time for a keep-alive) or when closed."""
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while not self.closed:
                now = time.monotonic()
                if self.events:
                    return self.events.popleft()
                if self.level is not None and now >= self.next_level_at:
                    event, self.level = self.level, None
                    self.next_level_at = now + LEVEL_INTERVAL_S
                    return event
                wait = deadline - now
                if self.level is not None:
                    wait = min(wait, self.next_level_at - now)
                if wait <= 0:
                    return None
                self.cond.wait(wait)
            return None

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify()


class EventHub:
    """Fan-out of events to every connected browser."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: set[_Subscriber] = set()
        self.closed = False

    def subscribe(self) -> _Subscriber | None:
        """A new subscriber, or None when MAX_EVENT_STREAMS are already open."""
        subscriber = _Subscriber()
        with self._lock:
            if len(self._subscribers) >= MAX_EVENT_STREAMS:
                return None
            self._subscribers.add(subscriber)
        return subscriber

    def __len__(self) -> int:
        """Open event streams."""
        with self._lock:
            return len(self._subscribers)

    def unsubscribe(self, subscriber: _Subscriber) -> None:
        with self._lock:
            self._subscribers.discard(subscriber)

    def publish(self, event: dict) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            subscriber.put(event)

    def close(self) -> None:
        self.closed = True
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            subscriber.close()


class BoxWorker:
    """The one thread that creates the ScreeningBox and runs every call on it, in order."""

    def __init__(self, box_factory: Callable[[Callable[[dict], None]], object], listener: Callable[[dict], None],
                 idle: Callable[[object], None]):
        self._factory = box_factory
        self._listener = listener
        self._idle = idle  # runs between calls; must return within a fraction of a second
        self._jobs: queue.Queue = queue.Queue()
        self._started: Future = Future()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pcg-kiosk-box", daemon=True)

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the thread and create the box; raises what the factory raised."""
        self._thread.start()
        self._started.result(timeout_s)

    def submit(self, call: Callable[[object], object]) -> Future:
        future: Future = Future()
        self._jobs.put((call, future))
        return future

    def interrupt(self) -> None:
        """End the call in progress within one read of the link (ScreeningBox.interrupt) and run no
        more: the program is stopping."""
        self._stopping.set()
        if self._started.done() and self._started.exception() is None:
            self._started.result().interrupt()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Interrupt, drop the calls still queued, close the box, and wait for the thread
        (`timeout_s` bounds a call that would ignore the interruption)."""
        self.interrupt()
        self._jobs.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        try:
            box = self._factory(self._listener)
        except BaseException as exc:  # handed to start(), which raises it in the caller's thread
            self._started.set_exception(exc)
            return
        self._started.set_result(box)
        try:
            while not self._stopping.is_set():
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    self._idle(box)
                    continue
                if job is None:
                    break
                call, future = job
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(call(box))
                    except BaseException as exc:  # the requester decides what the error means
                        future.set_exception(exc)
        finally:
            box.close()
            while not self._jobs.empty():  # asked for after the stop: nobody will run them
                job = self._jobs.get_nowait()
                if job is not None:
                    job[1].cancel()


class Busy(Exception):
    """The box is doing something else (recording, starting a patient, finishing)."""


class KioskState:
    """What the app shows, kept here so every browser (and a reloaded page) sees the same thing."""

    def __init__(self, hub: EventHub, seconds_per_site: float | None, practice: str | None = None,
                 referral: dict | None = None):
        self.hub = hub
        self.lock = threading.Lock()
        self.seconds_per_site = seconds_per_site
        self.practice = practice  # the practice scenario's name (runtime.cli --scenario); None: real patients
        self.referral = referral  # where a REFER goes (runtime.config BoxConfig.referral); None: not configured
        self.device: dict = {"connected": False, "state": "connecting"}
        self.visit = None  # runtime.screening.Visit
        self.visit_info: dict | None = None
        self.sites: dict[str, dict] = {}
        self.result: dict | None = None
        self.busy: str | None = None  # "patient" | "recording" | "finishing"
        self.recording: dict | None = None  # {"site", "seconds"}
        self.open_visit: dict | None = None  # a visit left open by a crash, awaiting the operator's word
        self.model_uses_demographics: bool | None = None  # None: no model loaded
        self.clock: dict | None = None  # runtime.clock.clock_warning: the box's clock looks wrong
        self.cancel = threading.Event()

    def snapshot(self) -> dict:
        with self.lock:
            return {
                "type": "state",
                "device": self.device,
                "visit": self.visit_info,
                "sites": dict(self.sites),
                "result": self.result,
                "busy": self.busy,
                "recording": self.recording,
                "open_visit": self.open_visit,
                "model_uses_demographics": self.model_uses_demographics,
                "clock": self.clock,
                "guided_sites": list(GUIDED_SITES),
                "seconds_per_site": self.seconds_per_site,
                "practice": self.practice,
                "referral": self.referral,
                "disclaimer": DISCLAIMER,
            }

    def claim(self, what: str) -> None:
        with self.lock:
            if self.busy is not None:
                raise Busy(self.busy)
            self.busy = what

    def release(self) -> None:
        with self.lock:
            self.busy = None
            self.recording = None

    def on_box_event(self, event: dict) -> None:
        """The box's listener (called in the worker thread): device, battery and level events go out
        as they are (a battery warning also updates the device's level, mid-recording included);
        site_done and result are published by the kiosk once the call has returned."""
        kind = event.get("type")
        if kind == "device":
            with self.lock:
                self.device = {k: v for k, v in event.items() if k != "type"}
            self.hub.publish(event)
        elif kind == "battery":
            with self.lock:
                self.device = {**self.device, "battery_pct": event["battery_pct"]}
                device = self.device
            self.hub.publish({"type": "device", **device})
            self.hub.publish(event)
        elif kind == "level":
            self.hub.publish(event)


def _visit_dict(visit) -> dict:
    return {
        "patient_code": visit.patient_code,
        "patient_id": visit.patient_id,
        "session_id": visit.session_id,
        "demographics": dataclasses.asdict(visit.demographics),
    }


def _open_visit_dict(interrupted, others: int) -> dict:
    """What the operator checks against the child in front of them before continuing a visit."""
    return {
        "patient_code": interrupted.patient.code,
        "demographics": dataclasses.asdict(interrupted.patient.demographics),
        "started_utc": interrupted.session.created_at,
        "sites_done": sorted({r.site for r in interrupted.recordings if r.status == "complete" and r.samples_written}),
        "other_open_visits": others,
    }


def _model_notes(box, demographics) -> list[str]:
    """What the operator should know before recording: what the model cannot use (runtime.triage)."""
    if box.model is None:
        return ["no model is loaded: the recordings are stored, no screening decision will be made"]
    from runtime.triage import model_limits

    return model_limits(box.model.manifest, demographics, list(GUIDED_SITES), box.model.trust)


def _load_static() -> dict[str, tuple[bytes, str]]:
    folder = resources.files("runtime.kiosk").joinpath("static")
    files = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in _CONTENT_TYPES:
            files["/static/" + entry.name] = (entry.read_bytes(), _CONTENT_TYPES[suffix])
    files["/"] = files["/static/index.html"]
    return files


class _Connections:
    """The open connections and what each is doing: "waiting" for a request (since when), "working"
    on one, or "streaming" events. Closes those that wait past the deadline, and the one waiting
    longest when a new connection would pass the limit."""

    def __init__(self, limit: int, deadline_s: float):
        self.limit = limit
        self.deadline_s = deadline_s
        self._lock = threading.Lock()
        self._phase: dict[socket.socket, tuple[str, float]] = {}
        self.closed_for_deadline = 0
        self.closed_for_room = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._phase)

    def admit(self, connection: socket.socket) -> None:
        with self._lock:
            if len(self._phase) >= self.limit:
                waiting = [(since, c) for c, (phase, since) in self._phase.items() if phase == "waiting"]
                if waiting:
                    _, oldest = min(waiting, key=lambda pair: pair[0])
                    self._phase[oldest] = ("closing", 0.0)
                    self.closed_for_room += 1
                    _hang_up(oldest)
            self._phase[connection] = ("waiting", time.monotonic())

    def mark(self, connection: socket.socket, phase: str) -> None:
        with self._lock:
            if connection in self._phase and self._phase[connection][0] != "closing":
                self._phase[connection] = (phase, time.monotonic())

    def forget(self, connection: socket.socket) -> None:
        with self._lock:
            self._phase.pop(connection, None)

    def reap(self) -> None:
        """Close every connection that has waited past the deadline for its request."""
        now = time.monotonic()
        with self._lock:
            late = [c for c, (phase, since) in self._phase.items()
                    if phase == "waiting" and now - since > self.deadline_s]
            for connection in late:
                self._phase[connection] = ("closing", 0.0)
        self.closed_for_deadline += len(late)
        for connection in late:
            _hang_up(connection)


def _hang_up(connection: socket.socket) -> None:
    """Unblock the handler thread reading from `connection`; it then closes it."""
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    kiosk: KioskServer
    connections: _Connections

    def get_request(self):
        try:
            return super().get_request()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                time.sleep(0.1)  # out of file descriptors: wait for some to close instead of spinning on accept
            raise

    def process_request(self, request, client_address):
        self.connections.admit(request)
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread could be started for it
            self.connections.forget(request)
            self.shutdown_request(request)
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.forget(request)

    def handle_error(self, request, client_address) -> None:
        """A connection failed outside the routes (a client hung up, a socket timed out): nothing to
        say to anyone, and no traceback for the journal."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            print(f"pcg-kiosk: connection from {client_address[0]}: {type(exc).__name__}: {exc}", file=sys.stderr,
                  flush=True)


class KioskServer:
    """The kiosk on `host:port` (port 0 picks a free one). `start()` creates the box and returns
    once the server listens; `stop()` ends it and closes the box. `url` is where the app is."""

    def __init__(
        self,
        box_factory: Callable[[Callable[[dict], None]], object],
        *,
        store,
        host: str = "127.0.0.1",
        port: int = 8080,
        token: str | None = None,
        seconds_per_site: float | None = None,
        practice: str | None = None,
        referral: dict | None = None,
    ):
        if not is_loopback(host):
            if token is None:
                raise KioskConfigError(
                    f"refusing to serve the kiosk on {host}: other machines could reach it. Give an access "
                    f"token (at least {MIN_TOKEN_CHARS} characters), or serve on 127.0.0.1")
        if token is not None and (not isinstance(token, str) or len(token) < MIN_TOKEN_CHARS or not token.isprintable()
                                  or any(c in token for c in " ;,\"\\")):
            raise KioskConfigError(f"the access token must be at least {MIN_TOKEN_CHARS} printable characters without "
                                   "spaces, quotes, commas, semicolons or backslashes")
        self.store = store
        self.host = "127.0.0.1" if host == "localhost" else host
        self.port = port
        self.token = token
        self.hub = EventHub()
        self.state = KioskState(self.hub, seconds_per_site, practice, referral)
        self.worker = BoxWorker(box_factory, self.state.on_box_event, self._keep_link_drained)
        self._status_published_at = 0.0
        self._idle_battery_pct: int | None = None
        self.static = _load_static()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.connections = _Connections(MAX_CONNECTIONS, REQUEST_DEADLINE_S)
        self._open_visits: list = []  # runtime.store.InterruptedSession, newest last (the one asked about)
        self._stopping = threading.Event()

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> KioskServer:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        server_class = type("KioskHTTPServer", (_HTTPServer,), {"address_family": family})
        self._httpd = server_class((self.host, self.port), KioskHandler)
        self._httpd.kiosk = self
        self._httpd.connections = self.connections
        self.port = self._httpd.server_address[1]
        try:
            self.worker.start()
        except BaseException:
            self._httpd.server_close()
            raise
        self._reaper = threading.Thread(target=self._reap_connections, name="pcg-kiosk-reaper", daemon=True)
        self._reaper.start()
        self.connect_device()
        self.worker.submit(self._find_open_visits)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": STOP_POLL_S},
                                        name="pcg-kiosk-http", daemon=True)
        self._thread.start()
        return self

    def _reap_connections(self) -> None:
        while not self._stopping.wait(REAPER_INTERVAL_S):
            self.connections.reap()

    def stop(self) -> None:
        self._stopping.set()
        self.worker.interrupt()  # first: a recording in progress is kept as stopped by the box, not cancelled
        self.hub.close()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        self.worker.stop()

    def __enter__(self) -> KioskServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def address(self) -> tuple:
        """The listening socket's address, as the operating system reports it."""
        return self._httpd.socket.getsockname()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    # --- actions (validated input; each runs on the worker) ------------------------------------

    def connect_device(self) -> None:
        """(Re)connect the stethoscope in the background; the outcome arrives as a device event."""
        with self.state.lock:
            if self.state.busy == "recording":
                raise Busy("recording")

        def connect(box):
            try:
                if box.session is not None:
                    box.close()  # "Connect again" on an open port: start over rather than open it twice
                status = box.connect()
                self._keep_link_drained(box)  # what arrived with the device's greeting is not patient audio
                device = {"state": "connected", **status}
            except Exception as exc:  # the operator sees the reason and can retry
                device = {"state": "failed", "connected": False, "error": str(exc)}
            with self.state.lock:
                self.state.device = device
            self.hub.publish({"type": "device", **device})

        self.worker.submit(connect)

    def _keep_link_drained(self, box) -> None:
        """Between calls, read and discard what the stethoscope sends (as the terminal program does
        while the operator places the chest piece): a recording then starts on fresh audio rather
        than seconds buffered in the port, and an unplug shows while idle. Device counters go out
        every IDLE_STATUS_S."""
        if box.session is None or not box.connected:
            time.sleep(0.05)
            return
        try:
            events = box.poll()
        except Exception as exc:  # unplugged for longer than the box waits: the operator reconnects
            device = {"state": "failed", "connected": False, "error": str(exc)}
            with self.state.lock:
                self.state.device = device
            self.hub.publish({"type": "device", **device})
            return
        for event in events:
            if isinstance(event, protocol.Status):
                self._idle_battery_pct = event.battery_pct
        now = time.monotonic()
        if now - self._status_published_at >= IDLE_STATUS_S:
            self._status_published_at = now
            status = box.device_status()
            if status.get("battery_pct") is None:  # the box reads the battery while recording only
                status["battery_pct"] = self._idle_battery_pct
            with self.state.lock:
                device = {**self.state.device, **status}
                self.state.device = device
            self.hub.publish({"type": "device", **device})

    def _find_open_visits(self, box) -> None:
        """At start: visits a crash or power cut left open. None is continued until the operator
        confirms that the child in front of them is that visit's patient (POST /api/visit/continue)
        or says it is another child (POST /api/visit/close); a new patient is refused meanwhile."""
        self._open_visits = box.resumable()
        clock = clock_warning(datetime.now(timezone.utc), newest_record=newest_record(self.store),
                              model_created=None if box.model is None else box.model.manifest.created_utc)
        with self.state.lock:
            self.state.model_uses_demographics = None if box.model is None else bool(box.model.uses_metadata)
            self.state.clock = clock
        self._publish_open_visit()

    def _publish_open_visit(self) -> None:
        with self.state.lock:
            self.state.open_visit = _open_visit_dict(self._open_visits[-1], len(self._open_visits) - 1) \
                if self._open_visits else None
        self.hub.publish(self.state.snapshot())

    def _open_visit_named(self, body: object):
        """The open visit a continue/close request names by {"patient_code": ...}; FieldErrors otherwise."""
        body = require_object(body)
        code = body.get("patient_code")
        errors = unknown_fields(body, ("patient_code",))
        if not self._open_visits:
            errors["visit"] = field_error("no_open_visit", "no unfinished visit is waiting for confirmation")
        elif code != self._open_visits[-1].patient.code:
            errors["patient_code"] = field_error(
                "not_the_open_visit", f"the unfinished visit waiting for confirmation is patient "
                f"{self._open_visits[-1].patient.code}'s, not {code!r}")
        if errors:
            raise FieldErrors(errors, status=409)
        return self._open_visits[-1]

    def continue_open_visit(self, body: object) -> dict:
        """The operator confirmed the child is the open visit's patient: carry on with it (its
        completed sites are kept; the site cut short is recorded again)."""
        interrupted = self._open_visit_named(body)
        self._refuse_if_visit_in_progress(close_unfinished=False)
        self.state.claim("patient")
        try:
            visit, notes = self._call(lambda box: (box.resume_visit(interrupted),
                                                   _model_notes(box, interrupted.patient.demographics)))
        finally:
            self.state.release()
        self._open_visits.remove(interrupted)
        with self.state.lock:
            self.state.visit = visit
            self.state.visit_info = {**_visit_dict(visit), "model_notes": notes, "resumed": True}
            self.state.sites = {site: recording.to_dict() for site, recording in visit.sites.items()}
            self.state.result = None
        self._publish_open_visit()
        return self.state.snapshot()

    def close_open_visit(self, body: object) -> dict:
        """The operator said the child is someone else: close the open visit unfinished (everything
        recorded in it kept, the reason logged); the next open visit, if any, is asked about next."""
        interrupted = self._open_visit_named(body)
        self.state.claim("patient")
        try:
            self._call(lambda box: box.close_unfinished(interrupted, "the operator said the child is another patient "
                                                                     "(kiosk)"))
        finally:
            self.state.release()
        self._open_visits.remove(interrupted)
        self._publish_open_visit()
        return self.state.snapshot()

    def _refuse_if_visit_in_progress(self, *, close_unfinished: bool):
        """FieldErrors (409) while the current visit has no final result, unless the operator
        confirmed closing it (close_unfinished); returns that visit when it is to be closed."""
        with self.state.lock:
            visit, result = self.state.visit, self.state.result
            done = sorted(self.state.sites)
        if visit is None or (result is not None and (result.get("decision") != "RETAKE" or result.get("cannot_assess"))):
            return None
        if close_unfinished:
            return visit
        raise FieldErrors({"visit": field_error(
            "visit_in_progress", f"patient {visit.patient_code}'s visit is not finished (sites done: "
            f"{', '.join(done) or 'none'}); confirm closing it unfinished (everything recorded is kept) to start "
            "another patient", patient_code=visit.patient_code, sites_done=done)}, status=409)

    def begin_patient(self, body: object) -> dict:
        """A new patient from the form. Refused (409) while a visit left open by a crash awaits the
        operator's confirmation, and while the current visit is unfinished unless the request
        says {"close_unfinished": true}: then that visit is closed, everything in it kept."""
        close_unfinished = isinstance(body, dict) and body.pop("close_unfinished", None) is True
        demographics, consent_reuse = parse_patient(body)
        if self._open_visits:
            waiting = self._open_visits[-1].patient.code
            raise FieldErrors({"visit": field_error(
                "open_visit", f"patient {waiting}'s unfinished visit is waiting: say whether this child is that patient "
                "first", patient_code=waiting)}, status=409)
        unfinished = self._refuse_if_visit_in_progress(close_unfinished=close_unfinished)
        self.state.claim("patient")
        try:
            def begin(box):
                if unfinished is not None and unfinished.session_id is not None:
                    box.close_visit_unfinished(unfinished, "the operator started another patient (kiosk)")
                return (box.begin_patient(demographics, consent=True, consent_reuse=consent_reuse),
                        _model_notes(box, demographics))

            visit, notes = self._call(begin)
        finally:
            self.state.release()
        with self.state.lock:
            self.state.visit = visit
            self.state.visit_info = {**_visit_dict(visit), "model_notes": notes}
            self.state.sites = {}
            self.state.result = None
        self.hub.publish({"type": "visit", "visit": self.state.visit_info})
        return self.state.visit_info

    def record(self, body: object) -> dict:
        site, seconds = parse_recording(body, self.state.seconds_per_site)
        state = self.state
        with state.lock:
            if state.visit is None:
                raise FieldErrors({"visit": field_error("no_visit", "start a new patient first")}, status=409)
            if state.result is not None and (state.result.get("decision") != "RETAKE" or state.result.get("cannot_assess")):
                raise FieldErrors({"visit": field_error("finished", "this visit has its result; start a new patient")},
                                  status=409)
        state.claim("recording")
        with state.lock:
            state.result = None  # a RETAKE result: the site is recorded again and the visit finished again
        visit = state.visit
        cancel = state.cancel = threading.Event()
        with state.lock:
            state.recording = {"site": site, "seconds": seconds}
        self.hub.publish({"type": "recording_started", "site": site, "seconds": seconds})

        def record(box):
            try:
                recording = box.record_site(visit, site, seconds=seconds, cancel=cancel)
            except Exception as exc:  # what was recorded stays stored; the operator records the site again
                state.release()
                self.hub.publish({"type": "recording_failed", "site": site, "message": str(exc)})
                return
            done = recording.to_dict()
            with state.lock:
                state.sites[site] = done
            state.release()
            self.hub.publish({"type": "site_done", **done})

        self.worker.submit(record)
        return {"site": site, "seconds": seconds}

    def cancel_recording(self) -> dict:
        with self.state.lock:
            recording = self.state.recording
        if recording is None:
            raise FieldErrors({"recording": field_error("not_recording", "no recording is running")}, status=409)
        self.state.cancel.set()
        return recording

    def finish(self) -> dict:
        state = self.state
        with state.lock:
            visit = state.visit
            if visit is None:
                raise FieldErrors({"visit": field_error("no_visit", "start a new patient first")}, status=409)
            if not state.sites:
                raise FieldErrors({"sites": field_error("no_sites", "record at least one site first")}, status=409)
            if state.result is not None:
                return state.result
        state.claim("finishing")
        try:
            result = self._call(lambda box: box.finish(visit, keep_open_on_retake=True))
        finally:
            state.release()
        result = {"patient_code": visit.patient_code, **result.to_dict(), "practice": state.practice}
        with state.lock:
            state.result = result
        self.hub.publish({"type": "result", **result})
        return result

    def _call(self, call: Callable[[object], object]):
        return self.worker.submit(call).result(CALL_TIMEOUT_S)

    # --- reads from the store --------------------------------------------------------------

    def todays_visits(self) -> list[dict]:
        """Visits started since local midnight by the box's clock, newest first."""
        midnight = datetime.now().astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
        rows = self.store.query(
            """SELECT s.id AS session_id, s.seq, s.created_at, s.status AS session_status, p.code,
                      (SELECT COUNT(DISTINCT site) FROM recordings r
                        WHERE r.session_id = s.id AND r.samples_written > 0) AS sites_recorded,
                      x.decision, x.probability,
                      EXISTS (SELECT 1 FROM device_events e WHERE e.session_id = s.id
                               AND e.kind = 'session_closed_unfinished') AS closed_unfinished
               FROM sessions s JOIN patients p ON p.id = s.patient_id
               LEFT JOIN results x ON x.id = (SELECT id FROM results WHERE session_id = s.id ORDER BY seq DESC LIMIT 1)
               WHERE s.created_at >= ? ORDER BY s.seq DESC LIMIT 500""",
            (iso_utc(midnight),),
        )
        with self.state.lock:
            current = self.state.visit_info["session_id"] if self.state.visit_info else None
        visits = []
        for row in rows:
            visit = dict(row)
            visit.pop("closed_unfinished")
            if row["decision"] is not None:
                visit["status"] = row["decision"]
            elif row["closed_unfinished"]:
                visit["status"] = "closed_unfinished"  # the operator moved on to another child
            elif row["session_status"] == "closed":
                visit["status"] = "no_decision"  # finished without a model
            else:
                visit["status"] = "in_progress" if row["session_id"] == current else "incomplete"
            visits.append(visit)
        return visits

    def export(self, query: dict[str, list[str]]) -> tuple[bytes, str, str]:
        """(body, content type, file name) of a record export."""
        format, after_seq = parse_export(query)
        export = export_records(self.store, format, after_seq=after_seq)
        stamp = datetime.now().strftime("%Y%m%d-%H%M")
        name = f"pcg-export-{stamp}-seq{export.max_seq}"
        if format == "json":
            (text,) = export.files.values()
            return text.encode(), "application/json", name + ".json"
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for file_name, text in export.files.items():
                archive.writestr(f"{name}/{file_name}", text)
        return buffer.getvalue(), "application/zip", name + ".zip"

    def recording_audio(self, recording_id: str) -> bytes:
        try:
            uuid.UUID(recording_id)
            recording = self.store.recording(recording_id)
        except (ValueError, LookupError):
            raise LookupError(f"no recording {recording_id}") from None
        return self.store.wav_path(recording).read_bytes()

    # --- access ---------------------------------------------------------------------------

    def token_matches(self, offered: str | None) -> bool:
        return offered is not None and hmac.compare_digest(offered.encode(), self.token.encode())


class KioskHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pcg-kiosk"
    sys_version = ""
    timeout = SOCKET_TIMEOUT_S
    server: _HTTPServer

    @property
    def kiosk(self) -> KioskServer:
        return self.server.kiosk

    def log_message(self, format: str, *args) -> None:
        """Quiet: the field box's journal should not fill with every request."""

    def handle_one_request(self) -> None:
        self.server.connections.mark(self.connection, "waiting")  # the request deadline starts now
        super().handle_one_request()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's refusals (a request line or header too long, too many headers, a
        malformed request line): a plain sentence as JSON, and the connection closed."""
        self.close_connection = True
        text = message or self.responses.get(code, ("error",))[0]
        try:
            self._json({"error": f"malformed request: {text}"}, code, extra={"Connection": "close"})
        except OSError:
            pass

    # --- dispatch --------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        try:
            if not self._host_allowed():
                return self._json({"error": "this kiosk answers only on the loopback address it was opened on"}, 421)
            if self.kiosk.token is not None and not self._authorized(url.path, query):
                return None
            if method == "GET":
                self.server.connections.mark(self.connection, "working")
            route = _ROUTES.get((method, url.path))
            if route is None and method == "GET" and url.path in self.kiosk.static:
                return self._static(url.path)
            if route is None and method == "GET" and url.path.startswith("/api/recordings/") and url.path.endswith("/audio"):
                return self._audio(url.path.split("/")[3])
            if route is None:
                allowed = sorted(m for m, p in _ROUTES if p == url.path)
                if allowed:
                    return self._json({"error": f"use {' or '.join(allowed)} for {url.path}"}, 405,
                                      extra={"Allow": ", ".join(allowed)})
                return self._json({"error": f"no such page or API: {url.path}"}, 404)
            if method == "POST":
                body = self._read_json()
                if body is _REFUSED:
                    return None
                self.server.connections.mark(self.connection, "working")
                return route(self, body)
            return route(self, query)
        except FieldErrors as exc:
            return self._json({"error": str(exc), "errors": exc.errors}, exc.status)
        except Busy as exc:
            return self._json({"error": f"the box is busy ({exc}); wait for it to finish", "busy": str(exc)}, 409)
        except InvalidDemographicsError as exc:
            return self._json({"error": str(exc), "errors": {"demographics": field_error("implausible", str(exc))}}, 422)
        except LowDiskSpaceError as exc:
            return self._json({"error": str(exc), "errors": {"store": field_error("low_disk_space", str(exc))}}, 507)
        except StoreError as exc:
            return self._json({"error": str(exc)}, 409)
        except OSError as exc:  # the client hung up or stopped reading: nobody to answer
            self.close_connection = True
            if not isinstance(exc, (BrokenPipeError, ConnectionResetError, TimeoutError)):
                print(f"pcg-kiosk: {self.command} {url.path}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            return None
        except Exception as exc:
            print(f"pcg-kiosk: {self.command} {url.path}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            if type(exc).__module__.split(".")[0] in ("runtime", "firmware_bridge") and str(exc):
                return self._json({"error": str(exc)}, 500)  # the runtime's own refusal: a sentence for the operator
            return self._json({"error": "the box failed to do this (an internal error, written to its log); "
                                        "try again, and restart the box if it happens again"}, 500)

    def _host_allowed(self) -> bool:
        if self.kiosk.token is not None:
            return True
        host = self.headers.get("Host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name.strip("[]") in LOOPBACK_NAMES

    def _authorized(self, path: str, query: dict[str, list[str]]) -> bool:
        kiosk = self.kiosk
        if path == "/" and "token" in query:
            if kiosk.token_matches(query["token"][0]):
                self._send(303, b"", "text/plain", extra={
                    "Location": "/", "Set-Cookie": f"{COOKIE}={kiosk.token}; Path=/; HttpOnly; SameSite=Strict"})
                return False
            self._json({"error": "wrong access token"}, 401)
            return False
        offered = None
        authorization = self.headers.get("Authorization", "")
        if authorization.startswith("Bearer "):
            offered = authorization[len("Bearer "):]
        else:
            for part in self.headers.get("Cookie", "").split(";"):
                name, _, value = part.strip().partition("=")
                if name == COOKIE:
                    offered = value
        if kiosk.token_matches(offered):
            return True
        self._json({"error": "this kiosk needs its access token: open /?token=... once on this screen"}, 401)
        return False

    # --- responses -------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in {**_SECURITY_HEADERS, **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data, status: int = 200, extra: dict | None = None) -> None:
        self._send(status, json.dumps(data, allow_nan=False).encode(), "application/json", extra)

    def _read_json(self):
        """The request's JSON body, or _REFUSED once a refusal has been sent."""
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip()
        length = self.headers.get("Content-Length", "").strip()
        if not (length.isascii() and length.isdigit()):
            self.close_connection = True
            self._json({"error": "a POST needs a Content-Length: a whole number of bytes"}, 411)
            return _REFUSED
        if len(length) > 9 or int(length) > MAX_BODY_BYTES:
            self.close_connection = True
            self._json({"error": f"request body over {MAX_BODY_BYTES} bytes"}, 413)
            return _REFUSED
        raw = self.rfile.read(int(length))
        if len(raw) < int(length):
            self.close_connection = True
            self._json({"error": "the request body ended before its Content-Length"}, 400)
            return _REFUSED
        if content_type != "application/json":
            # also what keeps a plain HTML form on another site from posting here
            self._json({"error": "send the request body as application/json"}, 415)
            return _REFUSED
        problem = None
        try:
            return json.loads(raw or b"{}", parse_constant=_refuse_constant)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            problem = str(exc)
        except RecursionError:
            problem = "nested too deeply"
        except ValueError as exc:  # a number of thousands of digits, NaN or Infinity
            problem = str(exc).split(";")[0]
        self._json({"error": f"the request body is not valid JSON: {problem}",
                    "errors": {"body": field_error("json", problem)}}, 400)
        return _REFUSED

    def _static(self, path: str) -> None:
        body, content_type = self.kiosk.static[path]
        self._send(200, body, content_type)

    def _audio(self, recording_id: str) -> None:
        try:
            data = self.kiosk.recording_audio(recording_id)
        except (LookupError, FileNotFoundError):
            return self._json({"error": f"no recording {recording_id}"}, 404)
        start, end, status = 0, len(data) - 1, 200
        requested = self.headers.get("Range", "")
        if requested.startswith("bytes="):
            first, _, last = requested[len("bytes="):].partition("-")
            if first.isdigit() and (last.isdigit() or last == "") and int(first) < len(data):
                start, end, status = int(first), min(int(last), end) if last else end, 206
        extra = {"Accept-Ranges": "bytes"}
        if status == 206:
            extra["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        self._send(status, data[start:end + 1], "audio/wav", extra)

    def _events(self, query) -> None:
        """Server-sent events: the whole state first, then every change as it happens."""
        kiosk = self.kiosk
        subscriber = kiosk.hub.subscribe()
        if subscriber is None:
            return self._json({"error": f"too many open event streams (at most {MAX_EVENT_STREAMS}); close other tabs"},
                              503, extra={"Retry-After": "5"})
        self.close_connection = True
        self.server.connections.mark(self.connection, "streaming")
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            for name, value in _SECURITY_HEADERS.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(b"retry: 1000\n\n" + _sse(kiosk.state.snapshot()))
            self.wfile.flush()
            quiet_since = time.monotonic()
            while not kiosk.hub.closed and not self._client_gone():
                event = subscriber.get(CLIENT_CHECK_S)
                if event is None and time.monotonic() - quiet_since < KEEPALIVE_S:
                    continue
                quiet_since = time.monotonic()
                self.wfile.write(_sse(event) if event is not None else b": keep-alive\n\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        finally:
            kiosk.hub.unsubscribe(subscriber)

    def _client_gone(self) -> bool:
        """The browser closed the stream (its socket reads as end of file); frees its place at once."""
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    # --- routes ----------------------------------------------------------------------------

    def _state(self, query) -> None:
        self._json(self.kiosk.state.snapshot())

    def _today(self, query) -> None:
        self._json({"visits": self.kiosk.todays_visits()})

    def _export(self, query) -> None:
        body, content_type, name = self.kiosk.export(query)
        self._send(200, body, content_type, extra={"Content-Disposition": f'attachment; filename="{name}"'})

    def _post_patient(self, body) -> None:
        self._json(self.kiosk.begin_patient(body), 201)

    def _post_record(self, body) -> None:
        self._json(self.kiosk.record(body), 202)

    def _post_cancel(self, body) -> None:
        self._json(self.kiosk.cancel_recording(), 202)

    def _post_finish(self, body) -> None:
        self._json(self.kiosk.finish())

    def _post_continue(self, body) -> None:
        self._json(self.kiosk.continue_open_visit(body))

    def _post_close(self, body) -> None:
        self._json(self.kiosk.close_open_visit(body))

    def _post_connect(self, body) -> None:
        self.kiosk.connect_device()
        self._json({"state": "connecting"}, 202)


_REFUSED = object()


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number")


def _sse(event: dict) -> bytes:
    return b"data: " + json.dumps(event, allow_nan=False, separators=(",", ":")).encode() + b"\n\n"


_ROUTES: dict[tuple[str, str], Callable] = {
    ("GET", "/api/state"): KioskHandler._state,
    ("GET", "/api/events"): KioskHandler._events,
    ("GET", "/api/today"): KioskHandler._today,
    ("GET", "/api/export"): KioskHandler._export,
    ("POST", "/api/patients"): KioskHandler._post_patient,
    ("POST", "/api/visit/record"): KioskHandler._post_record,
    ("POST", "/api/visit/cancel"): KioskHandler._post_cancel,
    ("POST", "/api/visit/finish"): KioskHandler._post_finish,
    ("POST", "/api/visit/continue"): KioskHandler._post_continue,
    ("POST", "/api/visit/close"): KioskHandler._post_close,
    ("POST", "/api/device/connect"): KioskHandler._post_connect,
}


def serve(
    box_factory: Callable[[Callable[[dict], None]], object],
    *,
    store,
    host: str = "127.0.0.1",
    port: int = 8080,
    token: str | None = None,
    seconds_per_site: float | None = None,
    practice: str | None = None,
    referral: dict | None = None,
    on_ready: Callable[[KioskServer], None] | None = None,
) -> int:
    """Serve the kiosk until Ctrl-C or SIGTERM; returns 0. Raises KioskConfigError when asked to
    listen beyond the loopback without a token, OSError when the port is taken, and whatever the
    box factory raised."""
    kiosk = KioskServer(box_factory, store=store, host=host, port=port, token=token, seconds_per_site=seconds_per_site,
                        practice=practice, referral=referral)
    stopping = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        kiosk.start()
        print(f"pcg-kiosk: serving on {kiosk.url}" + (" (open /?token=... once)" if token else ""), flush=True)
        if on_ready is not None:
            on_ready(kiosk)
        try:
            while not stopping.wait(STOP_POLL_S):
                pass
        except KeyboardInterrupt:
            pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    kiosk.stop()
    return 0


def serve_from_cli(args, *, model, store) -> int:
    """`pcg-runtime --kiosk`: serve the app for the stethoscope at `args.device_path` (the options
    of runtime.cli's live parser: baud, seconds, operating_point, kiosk_host, port, token, scenario,
    config). The box configuration's referral tells the health worker where a REFER goes."""
    from runtime.config import ConfigError, load_box_config
    from runtime.screening import ScreeningBox

    if store is None:
        print("pcg-runtime: the kiosk keeps patients and recordings in the store: leave out --no-store", file=sys.stderr)
        return 2
    try:
        referral = load_box_config(args.config).referral
    except ConfigError as exc:
        print(f"pcg-runtime: {exc}", file=sys.stderr)
        return 2

    def make_box(listener):
        return ScreeningBox(args.device_path, store=store, model=model, baud=args.baud, seconds_per_site=args.seconds,
                            operating_point=args.operating_point, listener=listener)

    try:
        return serve(make_box, store=store, host=args.kiosk_host, port=args.port, token=args.token,
                     seconds_per_site=args.seconds, practice=args.scenario, referral=referral)
    except KioskConfigError as exc:
        print(f"pcg-runtime: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"pcg-runtime: cannot serve the kiosk on {args.kiosk_host}:{args.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
