"""One screening box: a stethoscope link, the store and the model, used one patient at a time.

`ScreeningBox` is what the terminal program and the kiosk share. Its methods block and are called
from one thread; what happens meanwhile is told to `listener` as plain JSON-able dicts:

    {"type": "device", "state": "connected" | "disconnected" | "reconnected", **device_status()}
    {"type": "battery", "warning": "low" | "critical", "battery_pct"}  (once per level reached)
    {"type": "level", "site", "elapsed_s", "seconds", "rms_dbfs", "meter", "clipping", "waveform"}
    {"type": "site_done", "site", "recording_id", "seconds", "samples_lost", "quality"}
    {"type": "result", **TriageResult.to_dict()}

Audio is processed as it arrives: each chunk goes to the WAV file (made durable every second by
the store), through the streaming front-end (resample + pooled spectrogram) and the quality monitor;
nothing is recomputed at the end. An unplugged stethoscope is reopened with backoff; the samples
missed meanwhile are stored as a gap of the recording, which then goes on.

Every wait of the box (for the device's answer, for an unplugged stethoscope, for audio) checks
one event, set by `interrupt()` from another thread: a program told to stop (SIGTERM) is not held
for the 60 s the box would otherwise wait for a stethoscope to come back.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from firmware_bridge import protocol
from firmware_bridge.host import DeviceSession, Disconnected, LinkError, Stopped
from runtime.dsp import FrontEndConfig, FrontEndStream, compute_features
from runtime.metadata import check_demographics
from runtime.quality import QualityMonitor, SiteQuality, assess
from runtime.records import Demographics
from runtime.sites import GUIDED_SITES, SITES
from runtime.store import DiskFullError, InvalidDemographicsError, LowDiskSpaceError, Store, new_patient_code
from runtime.triage import (
    TriageResult,
    decide,
    model_limits,
    model_summary,
    score_patient,
    score_site,
    scores_sites_alone,
)
from runtime.triage import operating_point as named_operating_point

#: Audio discarded after moving to a site: frames still in flight from the previous site, and the
#: contact noise of placing the chest piece.
SETTLE_S = 0.25
#: Live level updates per second sent to the listener.
LEVEL_RATE_HZ = 10.0
#: Points of waveform per level update (signed peaks of the new audio).
WAVEFORM_POINTS = 64


#: A site is recorded again at most this many times when the stethoscope restarts mid-recording.
MAX_RESTARTS_PER_SITE = 3
#: Battery levels (percent) at which the operator is warned: charge it after this patient (low),
#: charge it now, it may switch off mid-recording (critical).
BATTERY_LOW_PCT = 20
BATTERY_CRITICAL_PCT = 10
#: Retakes of a site whose recordings fail the quality gate: when the first recording and this many
#: retakes have all failed, the result is "cannot assess: refer for clinical auscultation"
#: (runtime.triage.CANNOT_ASSESS) instead of one more retake.
MAX_RETAKES_PER_SITE = 2


class _StreamRestarted(Exception):
    """The stream's sample index went back: the stethoscope restarted."""


class ScreeningError(Exception):
    """A screening step cannot go on (the message says why and what was kept)."""


@dataclass
class SiteRecording:
    site: str
    recording_id: str | None  # None when nothing is stored (no consent / no store)
    seconds: float
    samples_lost: int
    quality: SiteQuality
    features: np.ndarray = field(repr=False)  # [n_freq, T] pooled log spectrogram
    last_sample_at: float = 0.0  # time.monotonic() when the last sample arrived (latency to the decision)
    prediction: object = field(default=None, repr=False)  # the site scored alone, when the model scores sites so

    def to_dict(self) -> dict:
        return {"site": self.site, "recording_id": self.recording_id, "seconds": round(self.seconds, 3),
                "samples_lost": self.samples_lost, "quality": self.quality.to_dict()}


@dataclass
class Visit:
    patient_code: str
    patient_id: str | None
    session_id: str | None
    demographics: Demographics
    sites: dict[str, SiteRecording] = field(default_factory=dict)
    resumed: bool = False
    result: TriageResult | None = None
    decided_at: float = 0.0  # time.monotonic() when the decision was made, and when it was stored
    stored_at: float = 0.0
    failed_recordings: dict[str, int] = field(default_factory=dict)  # site -> recordings the quality gate failed

    def cannot_assess(self) -> tuple[str, ...]:
        """Sites whose latest recording failed the gate after MAX_RETAKES_PER_SITE failed retakes."""
        return tuple(s for s, r in self.sites.items()
                     if not r.quality.ok and self.failed_recordings.get(s, 0) > MAX_RETAKES_PER_SITE)


class LiveSite:
    """One site's audio as it arrives: the streaming front-end and the quality monitor together.
    Nothing is recomputed at the end: finish() flushes the last frames and reads the verdict."""

    def __init__(self, config: FrontEndConfig, rate_hz: int) -> None:
        self.stream = FrontEndStream(config, rate_hz)
        self.monitor = QualityMonitor(rate_hz, config)
        self.frames: list[np.ndarray] = []
        self.samples = 0

    def push(self, samples: np.ndarray):
        """int16 samples -> the quality monitor's LiveReading."""
        frames = self.stream.push(samples)
        self.frames.append(frames)
        self.samples += len(samples)
        return self.monitor.push(samples, frames)

    def finish(self, site: str) -> tuple[np.ndarray, SiteQuality]:
        last = self.stream.flush()
        self.frames.append(last)
        if last.shape[1]:
            self.monitor.push(np.zeros(0, dtype=np.int16), last)
        return np.concatenate(self.frames, axis=1), self.monitor.result(site)


class ScreeningBox:
    def __init__(
        self,
        device: str,
        *,
        store: Store | None = None,
        model=None,
        baud: int = 921600,
        seconds_per_site: float = 10.0,
        operating_point: str | None = None,
        listener: Callable[[dict], None] | None = None,
        max_outage_s: float = 60.0,
        settle_s: float = SETTLE_S,
    ) -> None:
        if seconds_per_site <= 0:
            raise ValueError(f"seconds_per_site must be positive, got {seconds_per_site}")
        self.device = device
        self.store = store
        self.model = model
        self.baud = baud
        self.seconds_per_site = seconds_per_site
        self.listener = listener
        self.max_outage_s = max_outage_s
        self.settle_s = settle_s
        self.config = FrontEndConfig.from_dict(model.manifest.frontend) if model is not None else FrontEndConfig()
        if model is not None:
            self.operating_point = named_operating_point(model.manifest, operating_point)[0]
            self._model_record = store.register_model(model.manifest) if store is not None else None
            model.warm_up()  # so the first child's decision is as quick as the next ones
        else:
            self.operating_point = operating_point
            self._model_record = None
        self.session: DeviceSession | None = None
        self.battery_pct: int | None = None
        self.battery_warning: str | None = None  # "low" or "critical" once the battery reached that level
        self.stopping = threading.Event()  # set by interrupt(); every wait checks it
        self.connected = False
        self.reconnects = 0
        self.events_not_logged = 0  # device events a full disk kept out of the log

    # -- device ----------------------------------------------------------------------------------

    def connect(self) -> dict:
        """Open the port and start the stethoscope; raises firmware_bridge.host.LinkError subclasses
        (wrong sample rate, unknown protocol version, no answer) with their messages."""
        self.session = DeviceSession(self.device, baudrate=self.baud, stop=self.stopping).open()
        try:
            info = self.session.connect()
        except LinkError:
            self.session.close()
            self.session = None
            raise
        self.connected = True
        self._log("device_connected", {"port": self.device, "firmware": list(info.firmware), "rate_hz": info.rate_hz})
        if self.model is not None:
            self._log("model_loaded", {"model": self.model.manifest.model_name, "provider": self.model.provider,
                                       "graph_sha256": self.model.manifest.graph_sha256})
        self._emit({"type": "device", "state": "connected", **self.device_status()})
        return self.device_status()

    def device_status(self) -> dict:
        info = self.session.info if self.session is not None else None
        stats = self.session.decoder.stats if self.session is not None else None
        return {
            "connected": self.connected,
            "port": self.device,
            "firmware": ".".join(map(str, info.firmware)) if info else None,
            "rate_hz": info.rate_hz if info else None,
            "battery_pct": self.battery_pct,
            "frames_ok": stats.frames_ok if stats else 0,
            "crc_errors": stats.crc_errors if stats else 0,
            "gaps": stats.gaps if stats else 0,
            "samples_lost": stats.samples_lost if stats else 0,
            "reconnects": self.reconnects,
        }

    def interrupt(self) -> None:
        """From any thread: the program is stopping. The call in progress (a wait for the device's
        answer or for an unplugged stethoscope, a recording) ends within a read, with LinkError or
        ScreeningError; what was recorded is kept. Further calls fail the same way."""
        self.stopping.set()

    def close(self) -> None:
        if self.session is not None:
            try:
                if self.store is not None and self.connected:
                    self._log("link_counters", self.session.decoder.stats.as_dict())
            finally:
                self.session.__exit__(None, None, None)
                self.session = None
                self.connected = False

    def __enter__(self) -> ScreeningBox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- patients --------------------------------------------------------------------------------

    def begin_patient(self, demographics: Demographics, *, consent: bool, consent_reuse: bool = False) -> Visit:
        """A new patient under a generated code. With a store and consent, the patient and the visit
        are stored; without consent nothing is stored (the screening still runs). `consent_reuse`
        is the separate, optional consent to reuse the recordings for retraining (stored with the
        patient; meaningless without `consent`). Implausible demographics raise
        InvalidDemographicsError listing every field; nothing is stored then."""
        problems = check_demographics(demographics)
        if problems:
            raise InvalidDemographicsError(problems)
        if self.store is not None and consent:
            patient = self.store.new_patient(demographics, consent=True, consent_reuse=consent_reuse)
            session = self.store.start_session(patient)
            return Visit(patient.code, patient.id, session.id, demographics)
        return Visit(new_patient_code(), None, None, demographics)

    def resumable(self) -> list:
        """Visits left open by a crash or power cut (runtime.store.InterruptedSession), newest last."""
        return self.store.resume() if self.store is not None else []

    def resume_visit(self, interrupted) -> Visit:
        """Continue an interrupted visit: its completed recordings are read back from their WAV
        files (features and quality recomputed: the stored audio is the record); the recording that
        was cut short stays stored as interrupted and its site is recorded again."""
        patient = interrupted.patient
        visit = Visit(patient.code, patient.id, interrupted.session.id, patient.demographics, resumed=True)
        for record in interrupted.recordings:
            if record.status != "complete" or record.samples_written == 0:
                continue
            audio = self.store.read_audio(record)
            features = compute_features(audio, self.config)
            quality = assess(audio, record.site, self.config, features=features)
            lost = sum(count for _, count in record.gaps)
            visit.sites[record.site] = SiteRecording(record.site, record.id, audio.duration_s, lost, quality, features)
            if not quality.ok:
                visit.failed_recordings[record.site] = visit.failed_recordings.get(record.site, 0) + 1
        self._log("session_resumed", {"patient": patient.code, "sites_kept": sorted(visit.sites)}, visit)
        return visit

    def close_unfinished(self, interrupted, reason: str) -> None:
        """Close a visit left open without a result, keeping everything recorded in it, because the
        operator said the child now in front of them is someone else: nothing of the new patient
        may go into it. The event log says why."""
        self.store.close_session(interrupted.session)
        self.store.log_event("session_closed_unfinished", {"patient": interrupted.patient.code, "reason": reason,
                                                           "sites_recorded": sorted({r.site for r in interrupted.recordings})},
                             session=interrupted.session)

    def close_visit_unfinished(self, visit: Visit, reason: str) -> None:
        """Close this run's own visit without a result (the operator moved on to another patient),
        keeping everything recorded in it; the event log says why."""
        if self.store is None or visit.session_id is None:
            return
        session = self.store.session(visit.session_id)
        self.store.close_session(session)
        self.store.log_event("session_closed_unfinished", {"patient": visit.patient_code, "reason": reason,
                                                           "sites_recorded": sorted(visit.sites)}, session=session)

    def remaining_sites(self, visit: Visit) -> list[str]:
        return [s for s in GUIDED_SITES if s not in visit.sites]

    # -- recording -------------------------------------------------------------------------------

    def record_site(self, visit: Visit, site: str, *, seconds: float | None = None,
                    cancel: threading.Event | None = None) -> SiteRecording:
        """Record `seconds` (default seconds_per_site) at `site`; calling it again for a site is a
        retake (the earlier recording stays stored, the new one is used). `cancel` stops early:
        what was recorded is kept as an interrupted recording and ScreeningError is raised.

        Samples the link lost (corruption, an unplug) are stored as gaps of the recording, placed by
        the stream's sample index. A stethoscope that restarted its sample count (it rebooted while
        unplugged) cannot be placed in the same recording: that recording is kept as interrupted
        (reason 'device_restart') and the site is recorded again from the start."""
        if site not in SITES:
            raise ValueError(f"unknown site {site!r}; sites are {', '.join(SITES)}")
        if self.session is None:
            raise ScreeningError("the stethoscope is not connected: call connect() first")
        seconds = self.seconds_per_site if seconds is None else seconds
        for _ in range(MAX_RESTARTS_PER_SITE):
            try:
                recording = self._record_once(visit, site, seconds, cancel)
                break
            except _StreamRestarted:
                self._log("device_restarted", {"site": site}, visit)
                self._emit({"type": "device", "state": "restarted", "site": site, **self.device_status()})
        else:
            raise ScreeningError(f"the stethoscope restarted {MAX_RESTARTS_PER_SITE} times while recording {site}; "
                                 "check its battery and cable (what was recorded is kept)")
        if self.model is not None and scores_sites_alone(self.model.manifest) and recording.features.shape[1]:
            # scored now, while the operator moves to the next site: the decision then waits for one site only
            recording.prediction = score_site(self.model, recording.features, visit.demographics, self.config)
        visit.sites[site] = recording
        if not recording.quality.ok:
            visit.failed_recordings[site] = visit.failed_recordings.get(site, 0) + 1
        visit.result = None
        self._emit({"type": "site_done", **recording.to_dict()})
        return recording

    def _record_once(self, visit: Visit, site: str, seconds: float, cancel: threading.Event | None) -> SiteRecording:
        rate_hz = self.session.info.rate_hz
        self._send_site(visit, site)
        live = LiveSite(self.config, rate_hz)
        settle, wanted = int(self.settle_s * rate_hz), int(round(seconds * rate_hz))
        skipped = lost = 0
        next_index: int | None = None  # the stream index the next sample of this recording should have
        last_sample_at = 0.0
        writer = None
        pending: list[np.ndarray] = []  # audio since the last level event
        next_level = time.monotonic()
        deadline = time.monotonic() + 5.0 + 2.0 * (self.settle_s + seconds)

        def process(batch: list[np.ndarray]) -> None:
            """One read's contiguous audio: to the WAV, the front-end and the quality monitor at once."""
            nonlocal next_level
            samples = batch[0] if len(batch) == 1 else np.concatenate(batch)
            if writer is not None:
                writer.append(samples)
            reading = live.push(samples)
            pending.append(samples)
            if time.monotonic() >= next_level or live.samples >= wanted:
                self._emit_level(site, live.samples / rate_hz, seconds, reading, pending)
                pending.clear()
                next_level = time.monotonic() + 1.0 / LEVEL_RATE_HZ

        try:
            while live.samples < wanted:
                if self.stopping.is_set():
                    raise ScreeningError(f"recording at {site} stopped after {live.samples / rate_hz:.1f} s: the program "
                                         "is shutting down; what was recorded is kept")
                if cancel is not None and cancel.is_set():
                    raise ScreeningError(f"recording at {site} cancelled after {live.samples / rate_hz:.1f} s; what "
                                         "was recorded is kept")
                if time.monotonic() > deadline:
                    status = self.device_status()
                    raise ScreeningError(f"the stethoscope sent only {live.samples / rate_hz:.1f} s of {seconds:g} s "
                                         f"at {site}; what was recorded is kept (link: {status['frames_ok']} frames, "
                                         f"{status['crc_errors']} CRC errors, {status['reconnects']} reconnects)")
                events, outage_s = self._read(visit)
                deadline += outage_s
                batch: list[np.ndarray] = []
                taken = live.samples
                for event in events:
                    if isinstance(event, protocol.Status):
                        self._note_battery(event.battery_pct, visit)
                    elif isinstance(event, protocol.AudioChunk) and taken < wanted:
                        samples, first_index = event.samples, event.first_index
                        if next_index is not None and first_index != next_index:
                            if first_index < next_index:
                                raise _StreamRestarted()
                            if taken:  # lost inside the recording (not while settling): a gap of it
                                if batch:
                                    process(batch)
                                    batch = []
                                lost += first_index - next_index
                                if writer is not None:
                                    writer.note_gap(next_index, first_index - next_index)
                        next_index = first_index + len(samples)
                        if skipped < settle:
                            take = min(settle - skipped, len(samples))
                            skipped += take
                            samples, first_index = samples[take:], first_index + take
                        samples = samples[: wanted - taken]
                        if len(samples) == 0:
                            continue
                        if self.store is not None and visit.session_id is not None and writer is None:
                            writer = self.store.start_recording(self.store.session(visit.session_id), site, rate_hz,
                                                                first_sample_index=first_index)
                        batch.append(samples)
                        taken += len(samples)
                        last_sample_at = time.monotonic()
                if batch:
                    process(batch)
        except BaseException as exc:
            if writer is not None:
                reason = ("device_restart" if isinstance(exc, _StreamRestarted)
                          else "box_stopped" if isinstance(exc, ScreeningError) and self.stopping.is_set()
                          else "operator_cancel" if isinstance(exc, ScreeningError) and cancel is not None and cancel.is_set()
                          else "operator_interrupt" if isinstance(exc, KeyboardInterrupt)
                          else f"error: {type(exc).__name__}")
                writer.abort(reason)
            raise
        features, quality = live.finish(site)
        record = writer.close() if writer is not None else None
        return SiteRecording(site, record.id if record else None, live.samples / rate_hz, lost, quality, features,
                             last_sample_at)

    def _send_site(self, visit: Visit, site: str) -> None:
        """Tell the stethoscope the site (its display; the SITE_EVENT marks the stream); an unplug
        at that moment is waited out like one during recording."""
        for _ in range(3):
            try:
                self.session.set_site(site)
                return
            except Disconnected as exc:
                self._reconnect(visit, str(exc))
        self.session.set_site(site)

    def poll(self) -> list:
        """Between recordings: read and discard what the stethoscope sends (so a recording starts on
        fresh audio, not seconds buffered in the port), keep the battery level, and wait out an
        unplug like during recording. Returns the events (e.g. a SiteEvent from the button)."""
        events, _ = self._read(None)
        for event in events:
            if isinstance(event, protocol.Status):
                self._note_battery(event.battery_pct, None)
        return events

    def _note_battery(self, pct: int, visit: Visit | None) -> None:
        """Keep the battery level; warn once when it falls to BATTERY_LOW_PCT and once more at
        BATTERY_CRITICAL_PCT. A reading that wavers around a level does not warn again; a
        stethoscope charged above BATTERY_LOW_PCT is warned about afresh."""
        self.battery_pct = pct
        level = "critical" if pct <= BATTERY_CRITICAL_PCT else "low" if pct <= BATTERY_LOW_PCT else None
        if level is None:
            self.battery_warning = None
        elif self.battery_warning is None or (level == "critical" and self.battery_warning == "low"):
            self.battery_warning = level
            self._log("battery_low", {"percent": pct, "warning": level}, visit)
            self._emit({"type": "battery", "warning": level, "battery_pct": pct})

    def _read(self, visit: Visit | None) -> tuple[list, float]:
        """Events from the link; on an unplug, reopen with backoff. Returns (events, seconds away)."""
        try:
            return self.session.read(), 0.0
        except Disconnected as exc:
            return [], self._reconnect(visit, str(exc))

    def _reconnect(self, visit: Visit, why: str) -> float:
        started = time.monotonic()
        self.connected = False
        self._log("device_disconnected", {"port": self.device, "error": why}, visit)
        self._emit({"type": "device", "state": "disconnected", "error": why, **self.device_status()})
        delay = 0.05
        while True:
            try:
                self.session.reconnect(timeout_s=delay)
                break
            except Stopped as exc:
                raise ScreeningError("stopped waiting for the unplugged stethoscope: the program is shutting down; what "
                                     "was recorded is kept") from exc
            except Disconnected as exc:
                if time.monotonic() - started > self.max_outage_s:
                    raise ScreeningError(f"the stethoscope has been unplugged for more than {self.max_outage_s:g} s "
                                         f"({exc}); what was recorded is kept") from exc
                self.stopping.wait(delay)
                delay = min(delay * 2, 2.0)
        away = time.monotonic() - started
        self.connected = True
        self.reconnects += 1
        self._log("device_reconnected", {"port": self.device, "away_s": round(away, 3)}, visit)
        self._emit({"type": "device", "state": "reconnected", "away_s": round(away, 3), **self.device_status()})
        return away

    # -- result ----------------------------------------------------------------------------------

    def finish(self, visit: Visit, *, keep_open_on_retake: bool = False) -> TriageResult:
        """Triage the visit on what was recorded, store the result and close the visit. With
        `keep_open_on_retake`, a RETAKE leaves the visit open: the operator records the named sites
        again and finishes again (each result is stored; the last one stands). A site that failed
        the quality gate on its first recording and MAX_RETAKES_PER_SITE retakes ends the loop: the
        result is RETAKE with the reason "cannot assess: refer for clinical auscultation" and
        `cannot_assess` naming the sites, and the visit is closed even with `keep_open_on_retake`."""
        if not visit.sites:
            raise ScreeningError("no site was recorded: nothing to screen")
        features = {s: r.features for s, r in visit.sites.items()}
        quality = {s: r.quality for s, r in visit.sites.items()}
        missing = tuple(s for s in GUIDED_SITES if s not in visit.sites)
        exhausted = visit.cannot_assess()
        if self.model is None:
            result = decide(None, quality, None, missing_sites=missing, cannot_assess=exhausted,
                            stored=self.store is not None and visit.session_id is not None)
        else:
            manifest = self.model.manifest
            scored = {s: r.prediction for s, r in visit.sites.items() if r.prediction is not None}
            score = score_patient(self.model, features, visit.demographics, self.config, scored)
            notes = model_limits(manifest, visit.demographics, list(features), self.model.trust) + list(score.notes)
            result = decide(score, quality, manifest, self.operating_point, missing_sites=missing,
                            cannot_assess=exhausted, notes=notes,
                            model_info=model_summary(manifest, self.model.provider, self.model.trust))
        visit.decided_at = time.monotonic()
        if self.store is not None and visit.session_id is not None:
            session = self.store.session(visit.session_id)
            if result.decision is not None:
                self.store.save_result(session, decision=result.decision, probability=result.probability,
                                       reason=result.reason, site_contributions=result.site_contributions,
                                       model=self._model_record, operating_point=result.operating_point,
                                       threshold=result.threshold, murmur=result.murmur)
            if self.session is not None:
                self._log("link_counters", self.session.decoder.stats.as_dict(), visit)
            retake_to_do = result.decision == "RETAKE" and not result.cannot_assess
            if session.status == "open" and not (keep_open_on_retake and retake_to_do):
                self.store.close_session(session)
        visit.result = result
        visit.stored_at = time.monotonic()
        self._emit({"type": "result", "patient_code": visit.patient_code, **result.to_dict()})
        return result

    # -- plumbing --------------------------------------------------------------------------------

    def _emit(self, event: dict) -> None:
        if self.listener is not None:
            self.listener(event)

    def _emit_level(self, site: str, elapsed_s: float, seconds: float, reading, pending: list[np.ndarray]) -> None:
        if self.listener is None:
            return
        self._emit({"type": "level", "site": site, "elapsed_s": round(elapsed_s, 3), "seconds": seconds,
                    "rms_dbfs": round(max(float(reading.level_dbfs), -120.0), 1), "meter": round(float(reading.meter), 3),
                    "clipping": round(float(reading.clipped_fraction), 4), "waveform": waveform(pending)})

    def _log(self, kind: str, detail: dict, visit: Visit | None = None) -> None:
        """Log a device event; a full disk loses the event, never what the operator is doing (the
        recording in progress stops on its own DiskFullError, which must not be masked)."""
        if self.store is None:
            return
        session = self.store.session(visit.session_id) if visit is not None and visit.session_id else None
        try:
            self.store.log_event(kind, detail, session=session)
        except (DiskFullError, LowDiskSpaceError):
            self.events_not_logged += 1


def waveform(chunks: list[np.ndarray], points: int = WAVEFORM_POINTS) -> list[float]:
    """The signed peak of each of `points` equal slices of the new audio, in [-1, 1]."""
    if not chunks:
        return []
    audio = np.concatenate(chunks).astype(np.float32) / 32768.0
    if len(audio) < points:
        return [round(float(v), 4) for v in audio]
    slices = np.array_split(audio, points)
    return [round(float(s[np.argmax(np.abs(s))]), 4) for s in slices]
