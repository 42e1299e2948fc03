"""`pcg-runtime`: screen a patient from a stethoscope (or the built-in virtual one).

This first version runs the link and the signal front-end end to end: it connects to the device
(`--device sim` starts the virtual stethoscope on a pseudo-terminal), records the four guided sites
one after another, turns the audio into the model's input as it arrives, and reports per-site level,
link losses and the patient tensor. Triage needs a bundled model, which this build does not have
yet; the output says so rather than inventing a decision.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from firmware_bridge import protocol
from firmware_bridge.host import DeviceSession, LinkError
from runtime.dsp import FrontEndConfig, FrontEndStream, assemble_patient
from runtime.manifest import DISCLAIMER
from runtime.sites import GUIDED_SITES
from runtime.store.errors import StoreError

#: Audio discarded after moving to a site: frames in flight from the previous site, and the
#: contact noise of placing the chest piece.
SETTLE_S = 0.25


def record_site(session: DeviceSession, site: str, seconds: float, config: FrontEndConfig, store=None, visit=None) -> dict:
    """Record `seconds` of audio at `site`, computing features as chunks arrive; with a `store`,
    the audio goes to its WAV as it arrives and link gaps are noted with the recording."""
    rate_hz = session.info.rate_hz
    session.set_site(site)
    stream = FrontEndStream(config, rate_hz)
    settle, wanted = int(SETTLE_S * rate_hz), int(seconds * rate_hz)
    skipped = kept = samples_lost = 0
    frames, peaks, energy = [], 0, 0.0
    writer = None
    deadline = time.monotonic() + 5.0 + 2.0 * (SETTLE_S + seconds)
    while kept < wanted:
        if time.monotonic() > deadline:
            raise LinkError(f"the stethoscope sent only {kept} of {wanted} samples for site {site}")
        for event in session.read():
            if isinstance(event, protocol.Gap) and kept:
                samples_lost += event.count
                if writer is not None:
                    writer.note_gap(event.first_missing, event.count)
            if not isinstance(event, protocol.AudioChunk):
                continue
            samples, first_index = event.samples, event.first_index
            if skipped < settle:
                take = min(settle - skipped, len(samples))
                skipped += take
                samples, first_index = samples[take:], first_index + take
            samples = samples[: wanted - kept]
            if len(samples) == 0:
                continue
            if store is not None and writer is None:
                writer = store.start_recording(visit, site, rate_hz, first_sample_index=first_index)
            if writer is not None:
                writer.append(samples)
            kept += len(samples)
            peaks = max(peaks, int(np.abs(samples.astype(np.int32)).max()))
            energy += float(np.square(samples / 32768.0).sum())
            frames.append(stream.push(samples))
    frames.append(stream.flush())
    if writer is not None:
        writer.close()
    features = np.concatenate(frames, axis=1)
    rms = np.sqrt(energy / max(kept, 1))
    return {
        "site": site,
        "samples": kept,
        "rate_hz": rate_hz,
        "samples_lost": samples_lost,
        "rms_dbfs": round(20 * np.log10(max(rms, 1e-9)), 1),
        "peak_fraction": round(peaks / 32768.0, 3),
        "frames": int(features.shape[1]),
        "features": features,
    }


def screen(device: str, baud: int, seconds: float, config: FrontEndConfig, store_root: Path | None = None) -> dict:
    """Connect, record the guided sites, assemble the patient tensor; returns a report dict.
    With `store_root`, a new patient (consent given, demographics unknown) and one visit are
    stored there with the audio of every site."""
    store = visit = patient = None
    if store_root is not None:
        from runtime.records import Demographics
        from runtime.store import Store

        store = Store.open(store_root)
    try:
        with DeviceSession(device, baudrate=baud) as session:
            info = session.connect()
            if store is not None:
                patient = store.new_patient(Demographics(), consent=True)
                visit = store.start_session(patient)
                store.log_event("device_connected", {"port": device, "firmware": list(info.firmware)}, session=visit)
            sites = [record_site(session, site, seconds, config, store, visit) for site in GUIDED_SITES]
            if store is not None:
                store.log_event("link_counters", session.decoder.stats.as_dict(), session=visit)
                store.close_session(visit)
    finally:
        if store is not None:
            store.close()
    tensor = assemble_patient(((s["site"], 0, s["features"]) for s in sites), config)
    return {
        "device": {"firmware": ".".join(map(str, info.firmware)), "rate_hz": info.rate_hz},
        "decoder": session.decoder.stats.as_dict(),
        "sites": [{k: v for k, v in s.items() if k != "features"} for s in sites],
        "patient_tensor": {"shape": list(tensor.x.shape), "sites_present": list(tensor.sites_used)},
        "frontend_hash": config.config_hash(),
        "patient_code": patient.code if patient else None,
        "decision": None,
        "note": "no model is bundled in this build yet: features only, no screening decision",
        "disclaimer": DISCLAIMER,
    }


def print_report(report: dict) -> None:
    print(f"stethoscope: firmware {report['device']['firmware']}, {report['device']['rate_hz']} Hz")
    print(f"{'site':<5}{'seconds':>9}{'lost':>7}{'RMS dBFS':>10}{'peak':>7}{'frames':>8}")
    for s in report["sites"]:
        print(
            f"{s['site']:<5}{s['samples'] / s['rate_hz']:>9.1f}{s['samples_lost']:>7}"
            f"{s['rms_dbfs']:>10.1f}{s['peak_fraction']:>7.2f}{s['frames']:>8}"
        )
    d = report["decoder"]
    print(f"link: {d['frames_ok']} frames, {d['crc_errors']} CRC errors, {d['gaps']} gaps, {d['samples_lost']} samples lost")
    if report["patient_code"]:
        print(f"stored as patient {report['patient_code']}")
    print(f"patient tensor {report['patient_tensor']['shape']} (front-end {report['frontend_hash'][:12]})")
    print(f"decision: none - {report['note']}")
    print(report["disclaimer"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pcg-runtime", description=__doc__.split("\n\n")[0], epilog=DISCLAIMER)
    parser.add_argument("--device", default="sim", help="serial port, pyserial URL, or 'sim' for the virtual stethoscope (default)")
    parser.add_argument("--baud", type=int, default=921600)
    parser.add_argument("--seconds", type=float, default=10.0, help="audio to record per site (default 10)")
    parser.add_argument("--speed", type=float, default=20.0, help="with --device sim: times real time (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="with --device sim: the simulated patient")
    parser.add_argument("--db", type=Path, help="store folder (SQLite + WAV); nothing is stored without it")
    parser.add_argument("--consent", action="store_true", help="the patient's guardian consented to storing the recording")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    if args.db is not None and not args.consent:
        parser.error("--db stores the recording: record the guardian's consent with --consent, or leave out --db")
    config = FrontEndConfig()
    try:
        if args.device == "sim":
            from firmware_bridge.emulator import Emulator

            with tempfile.TemporaryDirectory(prefix="pcg-sim-") as tmp:
                with Emulator(link=Path(tmp) / "stethoscope", seed=args.seed, speed=args.speed) as emulator:
                    report = screen(emulator.path, args.baud, args.seconds, config, args.db)
        else:
            report = screen(args.device, args.baud, args.seconds, config, args.db)
    except (LinkError, StoreError) as exc:
        print(f"pcg-runtime: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
