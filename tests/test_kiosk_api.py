"""The kiosk's HTTP API: bad input gets a 4xx with field-level messages and stores nothing; a whole
patient can be screened through it; the event stream pushes the runtime's progress."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import urllib.request
import zipfile

import pytest
from kiosk_fixtures import EventStream, kiosk_process, running_kiosk

from runtime.kiosk.api import FieldErrors, parse_patient
from runtime.kiosk.server import LEVEL_INTERVAL_S, _Subscriber

STORED_TABLES = ("patients", "demographics", "sessions", "recordings", "results")


@pytest.fixture(scope="module")
def kiosk(tmp_path_factory):
    with running_kiosk(tmp_path_factory.mktemp("kiosk-api"), speed=40.0, seconds=2.0, model=None) as kiosk:
        yield kiosk


def nothing_stored(kiosk) -> bool:
    return all(kiosk.count(table) == 0 for table in STORED_TABLES)


VALID = {"consent": True, "age_group": "Child", "sex": "Female", "height_cm": 121.5, "weight_kg": 24, "pregnant": None}

INVALID_PATIENTS = [
    ({**VALID, "consent": False}, "consent", "consent_required"),
    ({k: v for k, v in VALID.items() if k != "consent"}, "consent", "consent_required"),
    ({**VALID, "consent": "yes"}, "consent", "consent_required"),
    ({**VALID, "age_group": "Toddler"}, "age_group", "choice"),
    ({**VALID, "sex": "F"}, "sex", "choice"),
    ({**VALID, "height_cm": "tall"}, "height_cm", "number"),
    ({**VALID, "height_cm": True}, "height_cm", "number"),
    ({**VALID, "height_cm": 999}, "height_cm", "range"),
    ({**VALID, "weight_kg": 0.1}, "weight_kg", "range"),
    ({**VALID, "pregnant": "maybe"}, "pregnant", "boolean"),
    ({**VALID, "sex": "Male", "pregnant": True}, "pregnant", "implausible"),
    ({**VALID, "age_group": "Infant", "pregnant": True}, "pregnant", "implausible"),
    ({**VALID, "name": "Maria"}, "name", "unknown_field"),
    ({**VALID, "consent_reuse": "yes"}, "consent_reuse", "boolean"),
    ({**VALID, "consent_reuse": 1}, "consent_reuse", "boolean"),
    ({**VALID, "age_group": "Neonate", "height_cm": 229, "weight_kg": 3}, "height_cm", "age_range"),
    ({**VALID, "age_group": "Neonate", "height_cm": 50, "weight_kg": 249}, "weight_kg", "age_range"),
]


@pytest.mark.parametrize("body, field, code", INVALID_PATIENTS, ids=[f"{f}-{c}" for _, f, c in INVALID_PATIENTS])
def test_invalid_patient_is_refused_per_field_and_nothing_is_stored(kiosk, body, field, code):
    seq_before = kiosk.store.last_seq()  # the link's own events (a reconnect under load) may come meanwhile
    status, _, reply = kiosk.request("POST", "/api/patients", body)
    assert status == 422
    assert reply["errors"][field]["code"] == code
    assert reply["errors"][field]["message"]
    assert nothing_stored(kiosk)
    written = kiosk.store.query("SELECT kind FROM device_events WHERE seq > ?", (seq_before,))
    assert all(row[0].startswith(("device_", "link_")) for row in written), [row[0] for row in written]


def test_every_bad_field_is_reported_at_once(kiosk):
    status, _, reply = kiosk.request("POST", "/api/patients", {"consent": False, "age_group": "x", "height_cm": -1,
                                                                "weight_kg": "heavy"})
    assert status == 422
    assert set(reply["errors"]) == {"consent", "age_group", "height_cm", "weight_kg"}
    assert reply["errors"]["height_cm"]["min"] == 30 and reply["errors"]["height_cm"]["unit"] == "cm"
    assert nothing_stored(kiosk)


@pytest.mark.parametrize("raw, content_type, status", [
    (b"[1, 2]", "application/json", 400),
    (b"{not json", "application/json", 400),
    (b"\xff\xfe", "application/json", 400),
    (b'{"consent": true}', "application/x-www-form-urlencoded", 415),
    (b'{"consent": true}', "text/plain", 415),
    (b"{" + b" " * 20_000 + b"}", "application/json", 413),
])
def test_malformed_bodies_are_refused_before_anything_runs(kiosk, raw, content_type, status):
    got, _, reply = kiosk.request("POST", "/api/patients", raw=raw, headers={"Content-Type": content_type})
    assert got == status and reply["error"]
    assert nothing_stored(kiosk)


def test_recording_and_finishing_need_a_visit(kiosk):
    status, _, reply = kiosk.request("POST", "/api/visit/record", {"site": "AV"})
    assert status == 409 and reply["errors"]["visit"]["code"] == "no_visit"
    status, _, reply = kiosk.request("POST", "/api/visit/finish", {})
    assert status == 409 and reply["errors"]["visit"]["code"] == "no_visit"
    status, _, reply = kiosk.request("POST", "/api/visit/cancel", {})
    assert status == 409 and reply["errors"]["recording"]["code"] == "not_recording"
    assert nothing_stored(kiosk)


@pytest.mark.parametrize("body, field", [
    ({"site": "XX"}, "site"), ({}, "site"), ({"site": "Phc"}, "site"),
    ({"site": "AV", "seconds": 0}, "seconds"), ({"site": "AV", "seconds": 1e9}, "seconds"),
    ({"site": "AV", "seconds": "10"}, "seconds"), ({"site": "AV", "loud": 1}, "loud"),
])
def test_invalid_recording_request_names_the_field(kiosk, body, field):
    status, _, reply = kiosk.request("POST", "/api/visit/record", body)
    assert status == 422 and field in reply["errors"]


@pytest.mark.parametrize("query, field", [("format=xml", "format"), ("format=csv&after_seq=-1", "after_seq"),
                                          ("format=csv&after_seq=abc", "after_seq"), ("colour=red", "colour")])
def test_invalid_export_request_names_the_field(kiosk, query, field):
    status, _, reply = kiosk.request("GET", f"/api/export?{query}")
    assert status == 422 and field in reply["errors"]


def test_unknown_paths_methods_and_recordings(kiosk):
    assert kiosk.request("GET", "/api/nothing")[0] == 404
    assert kiosk.request("GET", "/static/../server.py")[0] == 404
    status, headers, _ = kiosk.request("GET", "/api/patients")
    assert status == 405 and headers["Allow"] == "POST"
    assert kiosk.request("GET", "/api/recordings/not-a-uuid/audio")[0] == 404
    assert kiosk.request("GET", "/api/recordings/00000000-0000-4000-8000-000000000000/audio")[0] == 404


def test_a_request_naming_another_host_is_refused(kiosk):
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends Host: evil.example."""
    status, _, _ = kiosk.request("GET", "/api/state", headers={"Host": "evil.example"})
    assert status == 421
    assert kiosk.request("GET", "/api/state", headers={"Host": f"localhost:{kiosk.server.port}"})[0] == 200


def test_static_app_is_served_with_a_strict_content_policy(kiosk):
    status, headers, body = kiosk.request("GET", "/")
    assert status == 200 and b"/static/app.js" in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    for path in ("/static/app.js", "/static/app.css", "/static/i18n.js"):
        status, _, body = kiosk.request("GET", path)
        assert status == 200 and b"http://" not in body and b"https://" not in body  # nothing fetched from outside


def test_parse_patient_takes_empty_fields_as_unknown_and_reuse_consent_as_not_given():
    demographics, consent_reuse = parse_patient({"consent": True, "age_group": "", "sex": None, "height_cm": ""})
    assert demographics.age_group is None and demographics.sex is None and demographics.height_cm is None
    assert consent_reuse is False
    assert parse_patient({"consent": True, "consent_reuse": None})[1] is False
    assert parse_patient({"consent": True, "consent_reuse": True})[1] is True
    with pytest.raises(FieldErrors):
        parse_patient("consent")


def test_slow_browser_gets_the_latest_level_not_a_backlog():
    subscriber = _Subscriber()
    for i in range(50):
        subscriber.put({"type": "level", "i": i})
    subscriber.put({"type": "device", "state": "connected"})
    assert subscriber.get(1.0)["type"] == "device"
    assert subscriber.get(1.0)["i"] == 49
    subscriber.put({"type": "level", "i": 50})
    subscriber.put({"type": "site_done"})
    assert subscriber.get(1.0)["type"] == "site_done"  # the stale level was dropped
    assert subscriber.get(LEVEL_INTERVAL_S) is None


def test_a_patient_screened_through_the_api_is_stored_with_every_site(tmp_path):
    with running_kiosk(tmp_path, speed=40.0, seconds=2.0, model=None) as kiosk:
        events = EventStream(kiosk.url)
        try:
            first = events.wait_for(lambda e: True)
            assert first["type"] == "state" and first["visit"] is None
            events.wait_for(lambda e: e["type"] == "device" and e.get("connected"))
            status, _, visit = kiosk.request("POST", "/api/patients", VALID)
            assert status == 201 and visit["patient_code"].startswith("PCG-")
            for site in ("AV", "PV", "TV", "MV"):
                assert kiosk.request("POST", "/api/visit/record", {"site": site})[0] == 202
                done = events.wait_for(lambda e: e["type"] in ("site_done", "recording_failed") and e["site"] == site)
                assert done["type"] == "site_done", done
            assert any(e["type"] == "level" and len(e["waveform"]) > 0 for e in events.events)
            status, _, result = kiosk.request("POST", "/api/visit/finish", {})
            assert status == 200 and result["patient_code"] == visit["patient_code"]
            assert "research use" in result["disclaimer"]
            assert result["decision"] == "RETAKE" and "only 2.0 s recorded" in result["reason"]  # no model; 2-s sites
            recordings = kiosk.store.query("SELECT id, site, status FROM recordings ORDER BY seq")
            assert [(r["site"], r["status"]) for r in recordings] == [(s, "complete") for s in ("AV", "PV", "TV", "MV")]
            status, headers, wav = kiosk.request("GET", f"/api/recordings/{recordings[0]['id']}/audio")
            assert status == 200 and headers["Content-Type"] == "audio/wav" and wav[:4] == b"RIFF"
            status, _, part = kiosk.request("GET", f"/api/recordings/{recordings[0]['id']}/audio",
                                            headers={"Range": "bytes=0-11"})
            assert status == 206 and part == wav[:12]
            status, _, today = kiosk.request("GET", "/api/today")
            assert [v["code"] for v in today["visits"]] == [visit["patient_code"]]
            assert today["visits"][0]["sites_recorded"] == 4
            status, headers, archive = kiosk.request("GET", "/api/export?format=csv")
            assert status == 200 and "attachment" in headers["Content-Disposition"]
            with zipfile.ZipFile(io.BytesIO(archive)) as z:
                patients = next(n for n in z.namelist() if n.endswith("/patients.csv"))
                assert visit["patient_code"] in z.read(patients).decode()
            status, _, document = kiosk.request("GET", "/api/export?format=json")
            assert status == 200 and len(document["tables"]["recordings"]) == 4
            # a RETAKE result keeps the visit open: the site is recorded again and the visit finished again
            assert kiosk.request("POST", "/api/visit/record", {"site": "AV", "seconds": 6})[0] == 202
            assert events.wait_for(lambda e: e["type"] == "site_done" and e["seconds"] == 6.0)["quality"]["ok"]
            status, _, again = kiosk.request("POST", "/api/visit/finish", {})
            assert status == 200 and again["decision"] == "RETAKE" and "retake AV" not in again["reason"]
            assert kiosk.count("results") == 2
            (session_status,) = kiosk.store.query("SELECT status FROM sessions")[0]
            assert session_status == "open"
        finally:
            events.close()


def test_a_decided_visit_is_closed_and_refuses_more_recording(tmp_path):
    with running_kiosk(tmp_path, speed=40.0, seconds=6.0) as kiosk:  # the bundled model
        events = EventStream(kiosk.url)
        try:
            events.wait_for(lambda e: e["type"] == "device" and e.get("connected"))
            assert kiosk.request("POST", "/api/patients", VALID)[0] == 201
            for site in ("AV", "PV", "TV", "MV"):
                assert kiosk.request("POST", "/api/visit/record", {"site": site})[0] == 202
                events.wait_for(lambda e: e["type"] in ("site_done", "recording_failed") and e["site"] == site)
            status, _, result = kiosk.request("POST", "/api/visit/finish", {})
            assert status == 200 and result["decision"] in ("REFER", "NO_REFER"), result
            status, _, refused = kiosk.request("POST", "/api/visit/record", {"site": "AV"})
            assert status == 409 and "visit" in refused["errors"]
            (session_status,) = kiosk.store.query("SELECT status FROM sessions")[0]
            assert session_status == "closed"
        finally:
            events.close()


def _leave_a_visit_open(tmp_path) -> dict:
    """A kiosk that registers a patient, records AV, and stops (as a power cut would) before finishing."""
    with running_kiosk(tmp_path, speed=40.0, seconds=2.0, model=None) as kiosk:
        events = EventStream(kiosk.url)
        try:
            events.wait_for(lambda e: e["type"] == "device" and e.get("connected"))
            _, _, visit = kiosk.request("POST", "/api/patients", VALID)
            kiosk.request("POST", "/api/visit/record", {"site": "AV"})
            events.wait_for(lambda e: e["type"] == "site_done")
        finally:
            events.close()
    return visit


def _open_visit_offered(kiosk) -> dict:
    events = EventStream(kiosk.url)
    try:
        return events.wait_for(lambda e: e["type"] == "state" and e.get("open_visit") is not None)
    finally:
        events.close()


def test_a_visit_left_open_is_continued_only_once_the_operator_confirms_the_child(tmp_path):
    visit = _leave_a_visit_open(tmp_path)
    with running_kiosk(tmp_path, speed=40.0, seconds=2.0, model=None) as kiosk:
        offered = _open_visit_offered(kiosk)
        assert offered["visit"] is None  # nothing resumed on its own
        assert offered["open_visit"]["patient_code"] == visit["patient_code"]
        assert offered["open_visit"]["sites_done"] == ["AV"]
        assert offered["open_visit"]["demographics"]["height_cm"] == VALID["height_cm"]
        # another patient cannot be started meanwhile, nor can anything be recorded
        status, _, refused = kiosk.request("POST", "/api/patients", {**VALID, "age_group": "Infant", "height_cm": 70,
                                                                     "weight_kg": 8})
        assert status == 409 and refused["errors"]["visit"]["code"] == "open_visit"
        assert kiosk.request("POST", "/api/visit/record", {"site": "PV"})[0] == 409
        # confirming another code than the one shown is refused
        status, _, wrong = kiosk.request("POST", "/api/visit/continue", {"patient_code": "PCG-AAAA-AA"})
        assert status == 409 and wrong["errors"]["patient_code"]["code"] == "not_the_open_visit"
        status, _, state = kiosk.request("POST", "/api/visit/continue", {"patient_code": visit["patient_code"]})
        assert status == 200
        assert state["visit"]["patient_code"] == visit["patient_code"] and state["open_visit"] is None
        assert list(state["sites"]) == ["AV"]
        assert kiosk.request("POST", "/api/visit/record", {"site": "PV"})[0] == 202
        assert kiosk.count("patients") == 1


def test_another_child_closes_the_open_visit_keeping_what_it_recorded(tmp_path):
    visit = _leave_a_visit_open(tmp_path)
    with running_kiosk(tmp_path, speed=40.0, seconds=2.0, model=None) as kiosk:
        _open_visit_offered(kiosk)
        status, _, state = kiosk.request("POST", "/api/visit/close", {"patient_code": visit["patient_code"]})
        assert status == 200 and state["open_visit"] is None and state["visit"] is None
        (session_status,) = kiosk.store.query("SELECT status FROM sessions")[0]
        assert session_status == "closed"
        (reason,) = kiosk.store.query("SELECT detail FROM device_events WHERE kind = 'session_closed_unfinished'")[0]
        assert "another patient" in reason
        assert kiosk.count("recordings") == 1  # AV is kept
        status, _, new = kiosk.request("POST", "/api/patients", {**VALID, "sex": "Male"})
        assert status == 201 and new["patient_code"] != visit["patient_code"]
        assert kiosk.count("patients") == 2


def test_a_new_patient_over_an_unfinished_visit_needs_the_operator_to_close_it(tmp_path):
    with running_kiosk(tmp_path, speed=40.0, seconds=2.0, model=None) as kiosk:
        events = EventStream(kiosk.url)
        try:
            events.wait_for(lambda e: e["type"] == "device" and e.get("connected"))
            _, _, first = kiosk.request("POST", "/api/patients", VALID)
            kiosk.request("POST", "/api/visit/record", {"site": "AV"})
            events.wait_for(lambda e: e["type"] == "site_done")
        finally:
            events.close()
        status, _, refused = kiosk.request("POST", "/api/patients", {**VALID, "sex": "Male"})
        assert status == 409 and refused["errors"]["visit"]["code"] == "visit_in_progress"
        assert refused["errors"]["visit"]["patient_code"] == first["patient_code"]
        assert refused["errors"]["visit"]["sites_done"] == ["AV"]
        assert kiosk.count("patients") == 1
        status, _, second = kiosk.request("POST", "/api/patients", {**VALID, "sex": "Male", "close_unfinished": True,
                                                                    "consent_reuse": True})
        assert status == 201 and second["patient_code"] != first["patient_code"]
        reuse = dict(kiosk.store.query("SELECT code, consent_reuse FROM patients"))
        assert reuse == {first["patient_code"]: 0, second["patient_code"]: 1}  # not given unless ticked
        statuses = dict(kiosk.store.query("SELECT p.code, s.status FROM sessions s JOIN patients p ON p.id = s.patient_id"))
        assert statuses == {first["patient_code"]: "closed", second["patient_code"]: "open"}
        assert kiosk.count("recordings") == 1


def test_stop_keeps_what_was_recorded_and_a_second_recording_waits_its_turn(tmp_path):
    with running_kiosk(tmp_path, speed=1.0, seconds=20.0, model=None) as kiosk:
        events = EventStream(kiosk.url)
        try:
            events.wait_for(lambda e: e["type"] == "device" and e.get("connected"))
            kiosk.request("POST", "/api/patients", {"consent": True})
            assert kiosk.request("POST", "/api/visit/record", {"site": "AV"})[0] == 202
            events.wait_for(lambda e: e["type"] == "level" and e["elapsed_s"] > 0.5)
            status, _, reply = kiosk.request("POST", "/api/visit/record", {"site": "PV"})
            assert status == 409 and reply["busy"] == "recording"
            assert kiosk.request("POST", "/api/patients", {"consent": True})[0] == 409
            assert kiosk.request("POST", "/api/visit/cancel", {})[0] == 202
            stopped = events.wait_for(lambda e: e["type"] in ("site_done", "recording_failed"))
        finally:
            events.close()
        assert stopped["type"] == "recording_failed" and "cancelled" in stopped["message"]
        (recording,) = kiosk.store.query("SELECT site, status, stop_reason, samples_written FROM recordings")
        assert (recording["site"], recording["status"], recording["stop_reason"]) == ("AV", "interrupted", "operator_cancel")
        assert recording["samples_written"] > 0
        assert kiosk.server.state.snapshot()["busy"] is None


def test_a_missing_stethoscope_is_reported_and_recording_says_why(tmp_path):
    from runtime.kiosk import KioskServer
    from runtime.screening import ScreeningBox
    from runtime.store import Store

    with Store.open(tmp_path / "store") as store, KioskServer(
        lambda listener: ScreeningBox("/dev/pcg-no-such-stethoscope", store=store, listener=listener),
        store=store, port=0,
    ) as server:
        events = EventStream(server.url)
        try:
            failed = events.wait_for(lambda e: e["type"] == "device" and e.get("state") == "failed"
                                     or e["type"] == "state" and e["device"].get("state") == "failed")
            failed = failed.get("device", failed)
            assert "pcg-no-such-stethoscope" in failed["error"] and failed["connected"] is False
            server_url = server.url.rstrip("/")
            request = urllib.request.Request(server_url + "/api/patients", data=b'{"consent": true}', method="POST",
                                             headers={"Content-Type": "application/json"})
            assert urllib.request.urlopen(request, timeout=30).status == 201
            request = urllib.request.Request(server_url + "/api/visit/record", data=b'{"site": "AV"}', method="POST",
                                             headers={"Content-Type": "application/json"})
            assert urllib.request.urlopen(request, timeout=30).status == 202
            refused = events.wait_for(lambda e: e["type"] == "recording_failed")
            assert "not connected" in refused["message"]
        finally:
            events.close()


def test_event_streams_are_limited(kiosk):
    from runtime.kiosk.server import MAX_EVENT_STREAMS

    streams = [EventStream(kiosk.url) for _ in range(MAX_EVENT_STREAMS)]
    try:
        status, headers, reply = kiosk.request("GET", "/api/events")
        assert status == 503 and headers["Retry-After"] and "event streams" in reply["error"]
    finally:
        for stream in streams:
            stream.close()
    deadline = time.monotonic() + 10
    while len(kiosk.server.hub) > 0:  # closed streams give their place back
        assert time.monotonic() < deadline, "closed event streams were not released"
        time.sleep(0.05)


def test_connecting_again_reopens_the_stethoscope(kiosk):
    stream = EventStream(kiosk.url)
    try:
        assert kiosk.request("POST", "/api/device/connect", {})[0] == 202
        stream.wait_for(lambda e: e["type"] == "device" and e.get("state") == "connected" and e["connected"])
    finally:
        stream.close()
    assert kiosk.request("GET", "/api/state")[2]["device"]["connected"] is True


def test_the_state_says_whether_the_model_uses_the_demographics(tmp_path):
    from kiosk_fixtures import bundled_model

    for folder in ("bundled", "none"):
        (tmp_path / folder).mkdir()
    with running_kiosk(tmp_path / "bundled", model="bundled") as kiosk:
        state = EventStream(kiosk.url)
        try:
            snapshot = state.wait_for(lambda e: e["type"] == "state" and e.get("model_uses_demographics") is not None)
        finally:
            state.close()
        assert snapshot["model_uses_demographics"] is bundled_model().uses_metadata
    with running_kiosk(tmp_path / "none", model=None) as kiosk:
        status, _, body = kiosk.request("GET", "/api/state")
        assert status == 200 and body["model_uses_demographics"] is None


def test_the_state_carries_the_sites_referral_from_the_box_configuration(tmp_path, kiosk):
    assert kiosk.request("GET", "/api/state")[2]["referral"] is None  # none configured: the page says a generic place
    referral = {"place": "Ambulatório de Cardiologia Pediátrica", "within_days": 30, "note": None}
    config = tmp_path / "box.json"
    config.write_text(json.dumps({"referral": {"place": referral["place"], "within_days": 30}}), encoding="utf-8")
    config.chmod(0o644)
    with kiosk_process("--device", "sim", "--no-model", "--db", str(tmp_path / "store"), "--config", str(config)) as box:
        status, _, state = box.request("GET", "/api/state")
        assert status == 200 and state["referral"] == referral
    config.write_text(json.dumps({"referral": {"place": "Hospital", "within_days": 0}}), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "runtime.cli", "--kiosk", "--port", "0", "--device", "sim", "--no-model",
                           "--db", str(tmp_path / "store"), "--config", str(config)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "referral.within_days must be a whole number of days from 1 to 365" in done.stderr
