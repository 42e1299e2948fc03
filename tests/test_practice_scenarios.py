"""Practice mode (issue 16, item 5): `pcg-runtime --device sim --scenario NAME` plays a simulated
patient with known properties through the real pseudo-terminal link, front-end, quality gate and
model. Each scenario gives what it promises, every result says "practice" and is the model's and
the gate's own, and nothing reaches the box's store."""

from __future__ import annotations

import json
import re
import signal

import numpy as np
import pytest
from kiosk_fixtures import EventStream, kiosk_process

from firmware_bridge import protocol
from firmware_bridge.emulator import Battery, Emulator, HeartSource, VirtualStethoscope
from firmware_bridge.heart import HeartSoundGenerator, synthesize
from firmware_bridge.host import DeviceSession
from firmware_bridge.scenarios import SCENARIOS, scenario
from runtime.cli import main
from runtime.records import Demographics
from runtime.store import Store

RUN = ["--device", "sim", "--yes", "--speed", "50", "--seconds", "6"]
SITES = ("AV", "PV", "TV", "MV")
RATE_HZ = protocol.DEFAULT_RATE_HZ


def practise(capsys, name: str, *flags: str) -> tuple[dict, str]:
    """The --json report and stderr of one practice run in the terminal program."""
    code = main([*RUN, "--json", "--scenario", name, *flags])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out), err


def assert_models_decision(result: dict) -> None:
    """A decision the model made at its threshold, in its own words: never a scripted one."""
    assert result["decision"] in ("REFER", "NO_REFER")
    assert (result["decision"] == "REFER") == (result["probability"] >= result["threshold"])
    assert f"probability {result['probability']:.2f}" in result["reason"]


def test_every_scenario_is_documented_and_refuses_an_unknown_name():
    assert list(SCENARIOS) == ["normal", "murmur", "noisy", "bad-contact", "unplug", "low-battery"]
    with pytest.raises(ValueError, match="unknown practice scenario 'flutter'; scenarios are normal, murmur"):
        scenario("flutter")


def test_the_emulator_pulls_the_cable_once_at_the_named_site_and_drains_the_battery_per_site():
    """What the unplug and low-battery scenarios rest on, in device seconds."""
    setup = scenario("unplug", speed=2.0)
    device = VirtualStethoscope(HeartSource(RATE_HZ, 0, profile=setup.profile), faults=setup.faults,
                                battery=Battery(start_pct=15.0, drain_pct_per_s=0.0, drain_pct_per_site=2.4))
    commands = protocol.Encoder()
    device.tick(1.0)
    device.receive(commands.encode(protocol.SetSite("AV")))
    assert device.tick(5.0) and device.connected  # AV: no unplug
    device.receive(commands.encode(protocol.SetSite("PV")))
    device.tick(6.9)
    assert device.connected
    away = [t for t in np.arange(7.0, 16.0, 0.5) if not device.tick(t) and not device.connected]
    assert away[0] == 7.0 and away[-1] == 12.5  # 2 s after PV was set, for UNPLUG_REAL_S at twice real time
    device.receive(commands.encode(protocol.SetSite("PV")))  # a retake of PV: the cable stays in
    assert all(device.tick(t) is not None and device.connected for t in np.arange(16.0, 30.0, 0.5))
    statuses = [e for e in protocol.Decoder().feed(device.tick(31.0)) if isinstance(e, protocol.Status)]
    assert statuses[-1].battery_pct == 8  # 15 % less 2.4 % for each of the three sites set, rounded up


@pytest.mark.parametrize("name", ["normal", "murmur"])
def test_a_practice_patient_gets_the_models_decision_labelled_practice(capsys, name):
    report, err = practise(capsys, name, "--no-store")
    result = report["result"]
    assert result["practice"] == name and report["stored"] is False
    assert f"PRACTICE: scenario {name}" in err and "(not stored: practice)" in err
    assert [s["site"] for s in report["sites"]] == list(SITES)
    assert all(s["quality"]["ok"] and s["samples_lost"] == 0 for s in report["sites"])
    assert_models_decision(result)


def test_the_terminal_labels_a_practice_result(capsys):
    assert main([*RUN, "--scenario", "normal"]) == 0
    out = capsys.readouterr().out
    assert "=== PRACTICE (normal): " in out
    assert "practice: a simulated patient (scenario normal), not a child's result" in out


def test_the_murmur_scenario_streams_a_murmur_over_the_link(tmp_path):
    """What arrives over the pseudo-terminal is the scenario's heart model, sample for sample, and that
    heart has a murmur: its systole (between S1 and S2) is far louder than its diastole, where a
    healthy child's are alike."""
    seed, site = 4, "TV"
    murmur = scenario("murmur", seed=seed).profile
    with Emulator(link=tmp_path / "stethoscope", seed=seed, speed=20.0, profile=murmur) as emulator:
        with DeviceSession(emulator.path) as session:
            session.connect()
            session.set_site(site)
            received = _audio_after_site_event(session, site, 3 * RATE_HZ)
    site_seed = seed * 10 + protocol.SITE_CODES.index(site)  # the emulator's generator for that site
    np.testing.assert_array_equal(received, HeartSoundGenerator(murmur, site, RATE_HZ, site_seed).read(len(received)))
    for k, listened in enumerate(SITES):
        healthy = _systole_over_diastole(scenario("normal", seed=seed).profile, listened, seed * 10 + k)
        loud = _systole_over_diastole(murmur, listened, seed * 10 + k)
        assert healthy < 2.0 and loud > 5.0, (listened, healthy, loud)


def _audio_after_site_event(session: DeviceSession, site: str, n_samples: int) -> np.ndarray:
    """`n_samples` of the stream from the sample at which the device said it moved to `site`."""
    start, chunks, have = None, [], 0
    for _ in range(2000):
        for event in session.read():
            if isinstance(event, protocol.SiteEvent) and event.site == site:
                start = event.sample_index
            elif isinstance(event, protocol.AudioChunk) and start is not None and event.first_index >= start:
                chunks.append(event.samples)
                have += len(event.samples)
        if have >= n_samples:
            return np.concatenate(chunks)[:n_samples]
    raise AssertionError(f"only {have} samples of {site} arrived")


def _systole_over_diastole(profile, site: str, seed: int) -> float:
    """Mean power in the middle of systole over that of diastole (the S1 and S2 transients at the
    intervals' edges left out), from the heart model's own segmentation."""
    samples, segments = synthesize(profile, site, 10.0, RATE_HZ, np.random.default_rng(seed))
    power = {2: [], 4: []}  # CirCor states: 2 systole, 4 diastole
    for start_s, end_s, state in segments:
        if state in power:
            margin = 0.2 * (end_s - start_s)
            middle = samples[int((start_s + margin) * RATE_HZ): int((end_s - margin) * RATE_HZ)]
            power[state].append(np.mean(middle**2))
    return float(np.mean(power[2]) / np.mean(power[4]))


@pytest.mark.parametrize("name, reason, phrase", [
    ("noisy", "noise", "the heartbeat is faint under steady noise"),
    ("bad-contact", "disconnected", "signal far too weak"),
])
def test_a_noisy_room_and_a_loose_chest_piece_are_retaken_for_what_they_are(capsys, name, reason, phrase):
    report, err = practise(capsys, name, "--no-store")
    result = report["result"]
    assert result["practice"] == name and result["decision"] == "RETAKE"
    assert result["cannot_assess"] == list(SITES)  # the first recording and two retakes all failed
    for site in SITES:
        assert result["quality"][site]["reasons"] == [reason]
        assert err.count(f"  {site}: 6.0 s") == 3 and phrase in err


def test_a_pulled_cable_is_told_and_waited_for_and_the_store_is_left_alone(tmp_path, capsys):
    """The cable comes out mid-PV and goes back 3 s later: the operator is told, the recording goes
    on with the gap, nothing recorded before is lost; the box's store (with a real patient in it) is
    neither written nor harmed."""
    root = tmp_path / "store"
    with Store.open(root) as store:
        store.start_session(store.new_patient(Demographics(age_group="Child"), consent=True))
        before = {t: store.query(f"SELECT COUNT(*) FROM {t}")[0][0] for t in ("patients", "sessions", "device_events")}
    files_before = sorted(p.relative_to(root) for p in root.rglob("*"))
    report, err = practise(capsys, "unplug", "--db", str(root))
    assert "stethoscope disconnected" in err and "reconnecting, the recording is kept" in err
    assert "stethoscope reconnected after" in err
    sites = {s["site"]: s for s in report["sites"]}
    assert list(sites) == list(SITES) and report["device"]["reconnects"] == 1
    assert sites["PV"]["samples_lost"] > 0 and sites["PV"]["seconds"] == 6.0  # the gap is counted, the site completed
    assert all(sites[s]["samples_lost"] == 0 and sites[s]["quality"]["ok"] for s in ("AV", "TV", "MV"))
    assert report["result"]["practice"] == "unplug" and report["stored"] is False
    assert_models_decision(report["result"])
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == files_before
    with Store.open(root, read_only=True) as store:
        assert store.query("PRAGMA integrity_check")[0][0] == "ok"
        assert {t: store.query(f"SELECT COUNT(*) FROM {t}")[0][0] for t in before} == before


def test_a_running_down_battery_is_warned_about_at_20_and_10_percent(capsys):
    assert main([*RUN, "--scenario", "low-battery"]) == 0
    captured = capsys.readouterr()
    warnings = re.findall(r"stethoscope battery low \((\d+) %\): charge it (after this patient|now: it may switch off "
                          r"during a recording)", captured.err)
    assert len(warnings) == 2, captured.err  # once per level, not at every reading
    (low_pct, low_advice), (critical_pct, critical_advice) = warnings
    assert 10 < int(low_pct) <= 15 and low_advice == "after this patient"
    assert 5 <= int(critical_pct) <= 10 and critical_advice.startswith("now")
    assert "=== PRACTICE (low-battery): " in captured.out


def test_a_scenario_needs_the_virtual_stethoscope(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--device", "/dev/ttyUSB0", "--scenario", "murmur", "--yes"])
    assert stopped.value.code == 2
    assert ("--scenario murmur plays a practice patient on the virtual stethoscope: use it with --device sim, not "
            "--device /dev/ttyUSB0") in capsys.readouterr().err


def test_the_kiosk_labels_practice_and_keeps_nothing_in_the_box_store(tmp_path):
    root = tmp_path / "store"
    with kiosk_process("--device", "sim", "--scenario", "low-battery", "--speed", "50", "--seconds", "6",
                       "--db", str(root)) as kiosk:
        events = EventStream(kiosk.url)
        try:
            state = events.wait_for(lambda e: e["type"] == "state")
            assert state["practice"] == "low-battery"
            events.wait_for(lambda e: e["type"] == "device" and e.get("connected"))
            patient = {"consent": True, "age_group": "Child", "sex": "Male"}
            status, _, visit = kiosk.request("POST", "/api/patients", patient)
            assert status == 201
            for site in SITES:
                assert kiosk.request("POST", "/api/visit/record", {"site": site})[0] == 202
                done = events.wait_for(lambda e: e["type"] in ("site_done", "recording_failed") and e["site"] == site)
                assert done["type"] == "site_done", done
            status, _, result = kiosk.request("POST", "/api/visit/finish", {})
            assert status == 200 and result["practice"] == "low-battery"
            assert_models_decision(result)
            warnings = [e for e in events.events if e["type"] == "battery"]
            assert [w["warning"] for w in warnings] == ["low", "critical"], warnings
            assert kiosk.request("GET", "/api/state")[2]["result"]["practice"] == "low-battery"
            status, _, today = kiosk.request("GET", "/api/today")
            assert [v["code"] for v in today["visits"]] == [visit["patient_code"]]
            kiosk.process.send_signal(signal.SIGTERM)
            assert kiosk.process.wait(timeout=30) == 0, kiosk.stderr()[-2000:]
        finally:
            events.close()
    assert not root.exists()  # the practice patients lived in a store thrown away on exit
