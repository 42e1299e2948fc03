"""`pcg-runtime`: screen patients from a stethoscope (or the built-in virtual one), offline.

    pcg-runtime [--device PORT|sim] [--model M] [--db DIR] [demographics flags] [--kiosk]
    pcg-runtime triage [--model M] DATA_DIR --out results.csv
    pcg-runtime export [--db DIR] --format csv|json|circor [--after SEQ] [--since DATE] --out DIR
    pcg-runtime erase CODE [--db DIR] [--reason TEXT] [--yes]
    pcg-runtime model [--model M]

Live screening asks for the patient's demographics (each skippable as unknown), the guardian's
consent to screen and store, then the separate, optional consent to reuse the recordings for
retraining, guides the operator through the sites AV, PV, TV and MV, shows the live level and the
quality of each site, and prints the triage: REFER, NO_REFER or RETAKE with the reason. Every prompt
can be answered by flags or a JSON file (--demographics), for scripts. Without a terminal on stdin
nothing is asked. Exit status: 0 done, 2 bad input or the stethoscope failed, 3 the model was refused,
130 stopped by Ctrl-C and 143 by SIGTERM (what was recorded is kept; the kiosk exits 0 on either).

Practice: `--device sim --scenario NAME` plays a simulated patient with known properties
(firmware_bridge.scenarios: normal, murmur, noisy, bad-contact, unplug, low-battery) through the
real link, front-end, quality gate and model. Its result is labelled practice and is whatever the
model and the gate said. Practice never writes the box's store: practice patients would otherwise
be counted with real ones in exports and referral rates. The terminal stores nothing; the kiosk,
which needs a store for its screens, keeps them in one thrown away when it stops.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import sys
import tempfile
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path

from firmware_bridge.host import LinkError
from runtime.clock import clock_warning, newest_record
from runtime.manifest import DISCLAIMER
from runtime.metadata import PREGNANCY_AGE_GROUPS
from runtime.records import AGE_GROUPS, SEXES, Demographics
from runtime.screening import ScreeningBox, ScreeningError
from runtime.sites import GUIDED_SITES
from runtime.store.errors import InvalidDemographicsError, StoreError
from runtime.version import add_version_flag

SITE_NAMES = {"AV": "aortic", "PV": "pulmonary", "TV": "tricuspid", "MV": "mitral", "Phc": "other"}
DEMOGRAPHIC_KEYS = ("age_group", "sex", "height_cm", "weight_kg", "pregnant", "consent", "consent_reuse")


def default_db() -> Path:
    """$PCG_SCREEN_DB, else $XDG_DATA_HOME/pcg-screen (~/.local/share/pcg-screen)."""
    if os.environ.get("PCG_SCREEN_DB"):
        return Path(os.environ["PCG_SCREEN_DB"])
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "pcg-screen"


# -- demographics -------------------------------------------------------------------------------


class InputError(ValueError):
    """A flag, a file or an answer that cannot be used (the message names it)."""


def parse_age_group(text: str) -> str:
    wanted = text.strip().lower()
    for group in AGE_GROUPS:
        if group.lower() == wanted:
            return group
    matches = [g for g in AGE_GROUPS if g.lower().startswith(wanted)] if wanted else []
    if len(matches) == 1:
        return matches[0]
    raise InputError(f"age group {text!r} is not one of {', '.join(AGE_GROUPS)}")


def parse_sex(text: str) -> str:
    wanted = text.strip().lower()
    for sex in SEXES:
        if wanted in (sex.lower(), sex[0].lower()):
            return sex
    raise InputError(f"sex {text!r} is not one of {', '.join(SEXES)} (or F/M)")


def parse_number(text: str, name: str, unit: str) -> float:
    try:
        value = float(text.strip().replace(",", "."))
    except ValueError:
        raise InputError(f"{name} {text!r} is not a number of {unit}") from None
    return value


def parse_yes_no(text: str, name: str) -> bool:
    wanted = text.strip().lower()
    if wanted in ("y", "yes", "s", "sim", "true", "1"):
        return True
    if wanted in ("n", "no", "nao", "não", "false", "0"):
        return False
    raise InputError(f"{name}: answer yes or no, not {text!r}")


def demographics_from_file(path: Path) -> tuple[dict, bool | None, bool | None]:
    """(fields, consent, consent_reuse) from a JSON object with any of age_group, sex, height_cm,
    weight_kg, pregnant (null = unknown), and optionally consent and consent_reuse (true/false)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"--demographics {path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise InputError(f"--demographics {path}: not a UTF-8 text file; save it as UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"--demographics {path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise InputError(f"--demographics {path}: not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # a number of thousands of digits
        raise InputError(f"--demographics {path}: not valid JSON ({str(exc).split(';')[0]})") from None
    if not isinstance(data, dict):
        raise InputError(f"--demographics {path}: expected a JSON object")
    unknown = sorted(set(data) - set(DEMOGRAPHIC_KEYS))
    if unknown:
        raise InputError(f"--demographics {path}: unknown keys {unknown}; allowed: {', '.join(DEMOGRAPHIC_KEYS)}")
    fields = {}
    if data.get("age_group") is not None:
        fields["age_group"] = parse_age_group(str(data["age_group"]))
    if data.get("sex") is not None:
        fields["sex"] = parse_sex(str(data["sex"]))
    for key, unit in (("height_cm", "cm"), ("weight_kg", "kg")):
        if data.get(key) is not None:
            fields[key] = parse_number(str(data[key]), key, unit)
    if data.get("pregnant") is not None:
        if not isinstance(data["pregnant"], bool):
            raise InputError(f"--demographics {path}: pregnant must be true, false or null")
        fields["pregnant"] = data["pregnant"]
    consents = {key: data.get(key) for key in ("consent", "consent_reuse")}
    for key, value in consents.items():
        if value is not None and not isinstance(value, bool):
            raise InputError(f"--demographics {path}: {key} must be true or false")
    return fields, consents["consent"], consents["consent_reuse"]


def demographics_from_flags(args) -> dict:
    fields = {}
    if args.age_group:
        fields["age_group"] = parse_age_group(args.age_group)
    if args.sex:
        fields["sex"] = parse_sex(args.sex)
    if args.height is not None:
        fields["height_cm"] = args.height
    if args.weight is not None:
        fields["weight_kg"] = args.weight
    if args.pregnant is not None and args.pregnant != "unknown":
        fields["pregnant"] = args.pregnant == "yes"
    return fields


def ask(prompt: str, parse, *, stream=None):
    """Ask until the answer parses; an empty answer is None (unknown)."""
    stream = stream or sys.stdin
    while True:
        print(prompt, end="", flush=True)
        line = stream.readline()
        if not line:
            raise EOFError("no more input")
        text = line.strip()
        if not text:
            return None
        try:
            return parse(text)
        except InputError as exc:
            print(f"  {exc}; try again, or press Enter for unknown")


def prompt_demographics(known: dict, uses_demographics: bool | None = None) -> dict:
    """Ask for each field not already given; Enter leaves it unknown. `uses_demographics` (the
    model's manifest) decides what the operator is told about the answers' effect."""
    from runtime.metadata import HEIGHT_RANGE_CM, WEIGHT_RANGE_KG

    fields = dict(known)
    print("Patient (press Enter to leave a field unknown; no names are asked or stored)")
    if uses_demographics:
        print("  the model uses these answers: they change its result, so give what you know; an unknown field is "
              "scored as unknown")
    elif uses_demographics is False:
        print("  this model does not use these answers (it was trained without them); they are stored with the visit")
    if "age_group" not in fields:
        fields["age_group"] = ask(f"  age group [{'/'.join(AGE_GROUPS)}]: ", parse_age_group)
    if "sex" not in fields:
        fields["sex"] = ask("  sex [F/M]: ", parse_sex)
    for key, name, unit, (low, high) in (("height_cm", "height", "cm", HEIGHT_RANGE_CM),
                                         ("weight_kg", "weight", "kg", WEIGHT_RANGE_KG)):
        if key not in fields:
            def parse(text, name=name, unit=unit, low=low, high=high):
                value = parse_number(text, name, unit)
                if not low <= value <= high:
                    raise InputError(f"{name} {value:g} {unit} is outside {low:g} to {high:g} {unit}")
                return value
            fields[key] = ask(f"  {name} in {unit}: ", parse)
    if "pregnant" not in fields and fields.get("sex") != "Male" and (
            fields.get("age_group") is None or fields["age_group"] in PREGNANCY_AGE_GROUPS):
        fields["pregnant"] = ask("  pregnant [y/n]: ", lambda t: parse_yes_no(t, "pregnant"))
    return {k: v for k, v in fields.items() if v is not None}


def prompt_consents(consent: bool | None, consent_reuse: bool | None) -> tuple[bool | None, bool | None]:
    """Ask what flags and file left open: the consent to store the recording and result, then,
    only once that is given, the separate and optional consent to reuse the recordings for
    retraining (Enter: not given)."""
    if consent is None:
        consent = ask("Guardian consent to store the recording and result? [y/n]: ", lambda t: parse_yes_no(t, "consent"))
    if consent and consent_reuse is None:
        consent_reuse = bool(ask("Separate and optional: guardian consent to reuse the recordings, under a number "
                                 "instead of the code, to retrain the screening model? [y/n, Enter: no]: ",
                                 lambda t: parse_yes_no(t, "reuse consent")))
    return consent, consent_reuse


# -- live screening -----------------------------------------------------------------------------


class Terminated(KeyboardInterrupt):
    """SIGTERM (a service manager, `kill`): the run stops as on Ctrl-C, what was recorded kept."""


def _terminate(signum, frame) -> None:
    raise Terminated()


class TerminalView:
    """Prints what the box reports: a live level line per site on a terminal, device changes and
    battery warnings."""

    def __init__(self, live: bool) -> None:
        self.live = live

    def __call__(self, event: dict) -> None:
        kind = event["type"]
        if kind == "level" and self.live:
            bar = "#" * int(round(event["meter"] * 20))
            clip = f"  CLIPPING {event['clipping']:.1%}" if event["clipping"] > 0.001 else ""
            print(f"\r  {event['site']:<4}[{bar:<20}] {event['rms_dbfs']:6.1f} dBFS  "
                  f"{event['elapsed_s']:4.1f}/{event['seconds']:g} s{clip}   ", end="", flush=True)
        elif kind == "device" and event["state"] != "connected":
            end = "\n" if self.live else ""
            if event["state"] == "disconnected":
                print(f"{end}  stethoscope disconnected ({event.get('error', '')}): reconnecting, the recording is kept",
                      file=sys.stderr)
            elif event["state"] == "restarted":
                print(f"{end}  the stethoscope restarted while recording {event.get('site', 'this site')}: what was "
                      "recorded is kept and the site is recorded again from the start", file=sys.stderr)
            elif "away_s" in event:
                print(f"  stethoscope reconnected after {event['away_s']:.1f} s: recording goes on", file=sys.stderr)
            else:
                print(f"  stethoscope {event['state']}", file=sys.stderr)
        elif kind == "battery":
            end = "\n" if self.live else ""
            advice = ("charge it now: it may switch off during a recording" if event["warning"] == "critical"
                      else "charge it after this patient")
            print(f"{end}  stethoscope battery low ({event['battery_pct']} %): {advice}", file=sys.stderr)


def wait_for_operator(box, site: str, interactive: bool) -> None:
    """Interactive: wait for Enter or the stethoscope's button; audio meanwhile is discarded."""
    if not interactive:
        return
    from firmware_bridge import protocol

    print(f"Place the stethoscope at {site} ({SITE_NAMES[site]}), then press Enter or the stethoscope's button")
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], 0.0)
        if ready:
            sys.stdin.readline()
            return
        events = box.poll()
        if any(isinstance(e, protocol.SiteEvent) and e.source == protocol.SITE_SOURCE_BUTTON for e in events):
            return


def describe_quality(recording) -> str:
    q = recording.quality
    rate = f", heart rate {q.heart_rate_bpm:.0f}/min" if q.heart_rate_bpm else ""
    lost = f", {recording.samples_lost} samples lost on the link" if recording.samples_lost else ""
    head = f"{recording.site}: {recording.seconds:.1f} s, level {q.rms_dbfs:.0f} dBFS{rate}{lost}"
    return f"{head} - good" if q.ok else f"{head} - RETAKE: {'; '.join(q.messages)}"


def describe_open_visit(interrupted) -> str:
    """Who an open visit is for, in the words an operator checks against the child in front of them."""
    d = interrupted.patient.demographics
    known = [d.age_group, d.sex, f"{d.height_cm:g} cm" if d.height_cm else None, f"{d.weight_kg:g} kg" if d.weight_kg else None,
             "pregnant" if d.pregnant else None]
    done = sorted({r.site for r in interrupted.recordings if r.status == "complete"})
    return (f"patient {interrupted.patient.code} ({', '.join(k for k in known if k) or 'no details given'}), "
            f"visit started {interrupted.session.created_at[:16].replace('T', ' ')} UTC, sites done: {', '.join(done) or 'none'}")


def details_differ(stored: Demographics, given: dict) -> list[str]:
    """The fields given on this run that contradict the open visit's patient."""
    differ = []
    for key, value in given.items():
        if key in ("consent",) or value is None:
            continue
        kept = getattr(stored, key)
        if kept is not None and (kept != value if not isinstance(value, float) else abs(kept - value) > 0.5):
            differ.append(f"{key.replace('_cm', '').replace('_kg', '').replace('_', ' ')} {value} given, {kept} stored")
        elif kept is None:
            differ.append(f"{key.replace('_cm', '').replace('_kg', '').replace('_', ' ')} {value} given, unknown stored")
    return differ


def open_visit_to_continue(box, args, demographics: dict, consent, interactive: bool, say):
    """A visit left open by a crash is continued only once the operator has confirmed it is the same
    child: --resume CODE, or "yes" to the question on a terminal. Details given for this run that
    contradict that child's are refused with a sentence; "no" (or --new-patient) closes the open
    visit as unfinished, everything in it kept, and the new patient is registered. A run that asks
    nothing and names no visit is refused while one is open: it cannot know who is being screened.
    Consent belongs to the person: a resumed visit keeps its own patient's."""
    open_visits = box.resumable()
    if not open_visits:
        if args.resume is not None:
            raise InputError(f"--resume {args.resume}: no visit is open to continue; leave out --resume to register "
                             "the patient")
        return None
    chosen = open_visits[-1]
    if args.resume is not None:
        from runtime.store import normalize_patient_code

        try:
            wanted = normalize_patient_code(args.resume)
        except ValueError as exc:
            raise InputError(f"--resume: {exc}") from None
        matches = [v for v in open_visits if v.patient.code == wanted]
        if not matches:
            codes = ", ".join(v.patient.code for v in open_visits) or "none"
            raise InputError(f"--resume {args.resume}: no open visit of that patient (open visits: {codes})")
        chosen = matches[-1]
    others = [v.patient.code for v in open_visits if v is not chosen]
    if others:
        say(f"other open visits (resume one with --resume CODE): {', '.join(others)}")
    described = describe_open_visit(chosen)
    if args.new_patient:
        box.close_unfinished(chosen, "the operator registered another patient (--new-patient)")
        say(f"closed the unfinished visit of {described}: everything recorded in it is kept; registering the new patient")
        return None
    if args.resume is None:
        if not interactive:
            raise InputError(f"an unfinished visit is open: {described}. This run asks nothing, so it cannot confirm that the "
                             f"same child is being screened: continue that visit with --resume {chosen.patient.code}, or close it "
                             "and register this patient with --new-patient")
        print(f"An unfinished visit is open: {described}.")
        same = ask("Is the child in front of you that patient? [y: continue that visit / n: new patient]: ",
                   lambda t: parse_yes_no(t, "answer"))
        while same is None:
            same = ask("  please answer y or n: ", lambda t: parse_yes_no(t, "answer"))
        if not same:
            box.close_unfinished(chosen, "the operator said the child is another patient")
            say(f"closed the unfinished visit of patient {chosen.patient.code} (everything recorded kept); registering the new patient")
            return None
    differ = details_differ(chosen.patient.demographics, demographics)
    if differ:
        raise InputError(f"the details given are not those of patient {chosen.patient.code} ({'; '.join(differ)}): a visit is "
                         "continued only for the same child. Leave the details out to continue it, or use --new-patient to close "
                         "it and register this child")
    if consent is False:
        say(f"note: consent was given with patient {chosen.patient.code}'s registration and stays theirs; --no-consent does not apply "
            "to a continued visit")
    visit = box.resume_visit(chosen)
    say(f"resuming the interrupted visit of patient {visit.patient_code}: kept "
        f"{', '.join(visit.sites) or 'no site'}; to record: {', '.join(box.remaining_sites(visit))}")
    return visit


def run_live(args, model, store) -> dict:
    interactive = sys.stdin.isatty() and not args.json and not args.yes
    view = TerminalView(live=sys.stdout.isatty() and not args.json)
    demographics, consent, consent_reuse = dict(args.fields), args.consent_value, args.consent_reuse_value
    box = ScreeningBox(args.device_path, store=store, model=model, baud=args.baud, seconds_per_site=args.seconds,
                       operating_point=args.operating_point, listener=view)
    with box:
        status = box.connect()
        say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
        say(f"stethoscope on {args.device}: firmware {status['firmware']}, {status['rate_hz']} Hz")
        clock = clock_warning(datetime.now(timezone.utc), newest_record=newest_record(store),
                              model_created=None if model is None else model.manifest.created_utc)
        if clock is not None:
            print(f"WARNING: {clock['message']}", file=sys.stderr)
        if args.scenario:
            from firmware_bridge.scenarios import SCENARIOS

            say(f"PRACTICE: scenario {args.scenario}, {SCENARIOS[args.scenario]}. A simulated patient: the result is "
                "labelled practice and nothing is stored")
        visit = open_visit_to_continue(box, args, demographics, consent, interactive, say) if store is not None else None
        args.visit = visit
        if visit is None:
            if interactive:
                demographics = prompt_demographics(demographics, None if model is None else model.uses_metadata)
                if store is not None:
                    consent, consent_reuse = prompt_consents(consent, consent_reuse)
            visit = box.begin_patient(Demographics(**demographics), consent=bool(consent) and store is not None,
                                      consent_reuse=bool(consent_reuse))
            args.visit = visit
            say(f"patient code {visit.patient_code}" + ("" if visit.session_id else
                " (not stored: " + ("no consent" if store is not None else "practice" if args.scenario else "--no-store")
                + ")"))
        if model is not None:
            from runtime.triage import model_limits

            for note in model_limits(model.manifest, visit.demographics, list(GUIDED_SITES), model.trust):
                say(f"note: {note}")
        for site in box.remaining_sites(visit):
            for attempt in range(args.retakes + 1):
                wait_for_operator(box, site, interactive)
                recording = box.record_site(visit, site)
                if view.live:
                    print()
                say("  " + describe_quality(recording))
                if recording.quality.ok or attempt == args.retakes:
                    break
                if interactive and not ask(f"  retake {site}? [y/n]: ", lambda t: parse_yes_no(t, "retake")):
                    break
        result = box.finish(visit)
        device = box.device_status()
    return {"patient_code": visit.patient_code, "stored": visit.session_id is not None, "device": device,
            "sites": [r.to_dict() for r in visit.sites.values()], "result": {**result.to_dict(), "practice": args.scenario}}


def describe_murmur(murmur: dict) -> str:
    """The murmur head's finding, in the order a clinician reads it (Present, Unknown, Absent)."""
    likeliest = max(murmur, key=murmur.get)
    shares = ", ".join(f"{name} {murmur[name]:.0%}" for name in ("Present", "Unknown", "Absent") if name in murmur)
    return f"murmur: most likely {likeliest} ({shares})"


def print_result(report: dict) -> None:
    result = report["result"]
    print()
    practice = f"PRACTICE ({result['practice']}): " if result.get("practice") else ""
    print(f"=== {practice}{result['decision'] or 'NO DECISION'} ===   patient {report['patient_code']}")
    if practice:
        print(f"practice: a simulated patient (scenario {result['practice']}), not a child's result; what the model and "
              "the quality check said about its audio; nothing was stored")
    if result["probability"] is not None:
        print(f"probability {result['probability']:.3f}" + (
            f" (operating point {result['operating_point']}, threshold {result['threshold']:.3f})"
            if result["threshold"] is not None else ""))
    print(result["reason"])
    if result.get("murmur"):
        print(describe_murmur(result["murmur"]))
    if result["site_contributions"]:
        kind = "probability per site" if result["contribution_kind"] == "site_probability" else "site weights"
        print(f"{kind}: " + ", ".join(f"{s} {v:.2f}" for s, v in result["site_contributions"].items()))
    for note in result["unused"]:
        print(f"note: {note}")
    if result["model"]:
        m = result["model"]
        figures = ", ".join(f"{k} AUROC {v}" for k, v in m["auroc"].items())
        print(f"model: {m['name']} ({m['created_utc'][:10]}, {m['training_data']}; {figures}; on {m['provider']})")
    d = report["device"]
    print(f"link: {d['frames_ok']} frames, {d['crc_errors']} CRC errors, {d['gaps']} gaps, "
          f"{d['samples_lost']} samples lost, {d['reconnects']} reconnects")
    print(result["disclaimer"])


# -- commands -----------------------------------------------------------------------------------


def load_model(args):
    """The --model file, else $PCG_SCREEN_MODEL, else the bundled default; None with --no-model.
    ModelError propagates (main() reports it, exit 3)."""
    if getattr(args, "no_model", False):
        return None
    from runtime.config import ConfigError, load_box_config
    from runtime.inference import Model, ModelError

    try:
        config = load_box_config(args.config)
    except ConfigError as exc:
        raise InputError(str(exc)) from None
    model = Model.load(args.model or os.environ.get("PCG_SCREEN_MODEL") or None, backend=args.backend,
                       trusted_keys=config.key_ids)
    if not model.trust.trusted and not (args.allow_unsigned_model or config.allow_unsigned_models):
        if model.trust.kind == "signed":
            raise ModelError(f"{model.path} is signed by key {model.trust.key_id}, which this box does not trust: add that "
                             f"key's public line (its .pub file) to trusted_keys in the box configuration ({config.where}), "
                             "or pass --allow-unsigned-model to screen with it anyway (every result then says so)")
        raise ModelError(f"{model.path} is unsigned: nobody vouches for its thresholds, statistics or graph. Use a model "
                         f"signed by your programme (pcg-export --sign-key) whose public key is in the box configuration "
                         f"({config.where}), or pass --allow-unsigned-model to screen with it anyway (every result then says so)")
    points = model.manifest.operating_points
    if args.operating_point is not None and args.operating_point not in points:
        raise InputError(f"--operating-point {args.operating_point!r} is not one of this model's: {', '.join(points)}")
    if args.operating_point is None and config.operating_point is not None:
        from runtime.config import programme_point

        try:
            model.manifest, args.operating_point = programme_point(model.manifest, config.operating_point)
        except ConfigError as exc:
            raise InputError(str(exc)) from None
    return model


def add_model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, default=None, help="ONNX model with manifest (default: $PCG_SCREEN_MODEL, else the bundled model)")
    p.add_argument("--backend", choices=("auto", "cpu", "tensorrt"), default="auto",
                   help="auto: TensorRT where a GPU and TensorRT exist, else CPU (default)")
    p.add_argument("--operating-point", default=None, help="named threshold of the manifest (default: its default)")
    p.add_argument("--config", type=Path, default=None,
                   help="box configuration: trusted signing keys (default: $PCG_SCREEN_CONFIG, else /etc/pcg-screen/box.json)")
    p.add_argument("--allow-unsigned-model", action="store_true",
                   help="screen with a model that is unsigned or signed by a key this box does not trust (results say so)")


def live_parser() -> argparse.ArgumentParser:
    from firmware_bridge.scenarios import SCENARIOS

    p = argparse.ArgumentParser(prog="pcg-runtime", description="\n\n".join(__doc__.split("\n\n")[:2]), epilog=DISCLAIMER,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version_flag(p)
    p.add_argument("--device", default="sim", help="serial port, pyserial URL, or 'sim' for the virtual stethoscope (default)")
    p.add_argument("--baud", type=int, default=921600)
    add_model_flags(p)
    p.add_argument("--no-model", action="store_true", help="record without a model (no decision)")
    p.add_argument("--db", type=Path, default=None, help=f"store folder (SQLite + WAV; default {default_db()})")
    p.add_argument("--no-store", action="store_true", help="store nothing")
    p.add_argument("--new-patient", action="store_true",
                   help="this is a new patient: an unfinished visit left open is closed (everything in it kept), not continued")
    p.add_argument("--resume", metavar="CODE",
                   help="continue this patient's unfinished visit (after a crash or power cut); without it, a terminal asks "
                        "whether the child is the open visit's patient and a run that asks nothing is refused")
    p.add_argument("--seconds", type=float, default=10.0, help="audio to record per site (default 10)")
    p.add_argument("--retakes", type=int, default=2,
                   help="retakes allowed per site whose quality fails (default 2: after the first recording and two "
                        "failed retakes the result is 'cannot assess: refer for clinical auscultation')")
    g = p.add_argument_group("patient (each may be left out: unknown)")
    g.add_argument("--age-group", help="/".join(AGE_GROUPS))
    g.add_argument("--sex", help="Female/Male (F/M)")
    g.add_argument("--height", type=float, help="cm")
    g.add_argument("--weight", type=float, help="kg")
    g.add_argument("--pregnant", choices=("yes", "no", "unknown"))
    g.add_argument("--demographics", type=Path, help="JSON file with the fields above (and consent, consent_reuse)")
    c = g.add_mutually_exclusive_group()
    c.add_argument("--consent", dest="consent_flag", action="store_const", const=True, default=None,
                   help="the guardian consented to storing the recording")
    c.add_argument("--no-consent", dest="consent_flag", action="store_const", const=False)
    r = g.add_mutually_exclusive_group()
    r.add_argument("--consent-reuse", dest="consent_reuse_flag", action="store_const", const=True, default=None,
                   help="the guardian also consented, separately, to reusing the recordings for retraining (default: not "
                        "given; a terminal asks)")
    r.add_argument("--no-consent-reuse", dest="consent_reuse_flag", action="store_const", const=False)
    p.add_argument("--yes", action="store_true", help="ask nothing (flags only), even on a terminal")
    p.add_argument("--json", action="store_true", help="print the result as JSON (asks nothing)")
    s = p.add_argument_group("virtual stethoscope (--device sim)")
    s.add_argument("--speed", type=float, default=20.0, help="times real time (default 20)")
    s.add_argument("--seed", type=int, default=0, help="the simulated patient")
    s.add_argument("--scenario", choices=tuple(SCENARIOS), default=None,
                   help="practice on a simulated patient with known properties (firmware_bridge/scenarios.py says "
                        "what each plays); the result is labelled practice and the box's store is not used")
    k = p.add_argument_group("kiosk")
    k.add_argument("--kiosk", action="store_true", help="serve the touchscreen app instead of the terminal dialogue")
    k.add_argument("--port", type=int, default=8080, help="kiosk port (default 8080)")
    k.add_argument("--kiosk-host", default="127.0.0.1", help="listen address (default loopback only)")
    k.add_argument("--token", default=os.environ.get("PCG_KIOSK_TOKEN"),
                   help="access token, required when --kiosk-host is not loopback (or $PCG_KIOSK_TOKEN)")
    return p


def main_live(argv: list[str]) -> int:
    parser = live_parser()
    args = parser.parse_args(argv)
    if args.scenario and args.device != "sim":
        parser.error(f"--scenario {args.scenario} plays a practice patient on the virtual stethoscope: use it with "
                     f"--device sim, not --device {args.device} (a real stethoscope hears the real patient)")
    if not 0 < args.seconds <= 120:
        parser.error("--seconds must be above 0 and at most 120")
    if not 0 <= args.retakes <= 10:
        parser.error("--retakes must be from 0 to 10")
    if not 0 < args.speed <= 1000:
        parser.error("--speed (times real time, for the virtual stethoscope) must be above 0 and at most 1000")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be from 0 to 65535 (0: any free port); got {args.port}")
    if args.baud <= 0:
        parser.error(f"--baud must be a positive number of bits per second; got {args.baud}")
    try:
        fields, consent, consent_reuse = (({}, None, None) if args.demographics is None
                                          else demographics_from_file(args.demographics))
        fields.update(demographics_from_flags(args))
    except InputError as exc:
        parser.error(str(exc))
    args.fields = fields
    args.consent_value = args.consent_flag if args.consent_flag is not None else consent
    args.consent_reuse_value = args.consent_reuse_flag if args.consent_reuse_flag is not None else consent_reuse
    args.visit = None
    model = load_model(args)
    # The kiosk handles SIGTERM itself (runtime.kiosk.serve); the terminal stops as on Ctrl-C.
    previous = None if args.kiosk else signal.signal(signal.SIGTERM, _terminate)
    try:
        return _live(args, model)
    except KeyboardInterrupt as exc:
        visit = args.visit
        how = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
        print(f"\npcg-runtime: stopped ({how}); what was recorded is kept", file=sys.stderr, end="")
        if visit is not None and visit.session_id is not None:
            print(f". Patient {visit.patient_code}'s visit stays open: continue it with --resume {visit.patient_code}, "
                  "or start another patient with --new-patient", file=sys.stderr)
        else:
            print(file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _live(args, model) -> int:
    with ExitStack() as stack:
        try:
            store = None
            if args.scenario and args.kiosk:  # practice: never the box's store (see the module docstring)
                from runtime.store import Store

                thrown_away = stack.enter_context(tempfile.TemporaryDirectory(prefix="pcg-practice-"))
                store = stack.enter_context(Store.open(Path(thrown_away) / "store"))
            elif not args.no_store and not args.scenario:
                from runtime.store import Store

                store = stack.enter_context(Store.open(args.db or default_db()))
            args.device_path = args.device
            if args.device == "sim":
                from firmware_bridge.emulator import Emulator

                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="pcg-sim-"))
                setup = {}
                if args.scenario:
                    from firmware_bridge.scenarios import scenario

                    practice = scenario(args.scenario, seed=args.seed, speed=args.speed)
                    setup = {"profile": practice.profile, "faults": practice.faults, "battery": practice.battery}
                emulator = stack.enter_context(Emulator(link=Path(tmp) / "stethoscope", seed=args.seed, speed=args.speed,
                                                        **setup))
                args.device_path = emulator.path
            if args.kiosk:
                from runtime.kiosk import serve_from_cli

                return serve_from_cli(args, model=model, store=store)
            report = run_live(args, model, store)
        except (InvalidDemographicsError, InputError, LinkError, StoreError, ScreeningError, EOFError) as exc:
            print(f"pcg-runtime: {exc}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_result(report)
    return 0


def main_triage(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="pcg-runtime triage", description="Screen every patient of a folder "
                                "(CirCor, PhysioNet 2016, or WAV files) and write a results CSV (DESIGN.md contract 6).",
                                epilog=DISCLAIMER)
    add_version_flag(p)
    p.add_argument("data", type=Path, help="data folder")
    p.add_argument("--out", type=Path, required=True, help="results CSV to write")
    p.add_argument("--format", choices=("circor", "physionet2016", "wav"), default=None, help="default: detected")
    add_model_flags(p)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    from runtime.batch import triage_folder
    from runtime.formats import FormatError
    model = load_model(args)

    def progress(done: int, total: int) -> None:
        if not args.quiet and (done % 50 == 0 or done == total):
            print(f"  {done}/{total} patients", file=sys.stderr)

    try:
        summary = triage_folder(model, args.data, args.out, format=args.format,
                                operating_point=args.operating_point, progress=progress)
    except (FormatError, OSError, ValueError) as exc:
        print(f"pcg-runtime triage: {exc}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{k} {v}" for k, v in sorted(summary.decisions.items()))
    print(f"{summary.patients} patients -> {args.out} ({counts}) in {summary.seconds:.1f} s")
    if summary.retake_reasons:
        print("retake reasons: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.retake_reasons.items())))
    if summary.unreadable:
        print(f"{summary.unreadable} patients had no readable recording (RETAKE, reason 'unreadable')")
    for problem in summary.problems[:20]:
        print(f"  reader: {problem}", file=sys.stderr)
    print(DISCLAIMER)
    return 0


def main_export(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="pcg-runtime export", description="Export the store: records since an earlier "
                                "export (csv or json, safe to repeat), or recordings in the CirCor layout for retraining.")
    add_version_flag(p)
    p.add_argument("--db", type=Path, default=None, help=f"store folder (default {default_db()})")
    p.add_argument("--format", choices=("csv", "json", "circor"), default="csv")
    p.add_argument("--after", type=int, default=None, help="only records after this sequence number (an earlier export's max_seq)")
    p.add_argument("--since", default=None, help="only records written at or after this ISO date/time (UTC unless stated)")
    p.add_argument("--out", type=Path, required=True, help="folder to write into")
    args = p.parse_args(argv)
    if args.after is not None and not 0 <= args.after < 2**63:
        p.error(f"--after must be a sequence number from 0 (an earlier export's max_seq); got {args.after}")
    from runtime.store import Store, export_circor, export_records

    root = args.db or default_db()
    from runtime.store.db import DB_NAME

    if not (root / DB_NAME).is_file():
        print(f"pcg-runtime export: no store at {root}", file=sys.stderr)
        return 2
    try:
        with Store.open(root, read_only=True) as store:
            if args.format == "circor":
                if args.after is not None or args.since is not None:
                    p.error("--after/--since apply to csv and json exports; the CirCor export holds every recording "
                            "of the patients who consented to reuse")
                n = export_circor(store, args.out)
                print(f"{n} patients who consented to reuse written in the CirCor layout to {args.out}, under "
                      "pseudonymous numbers (patients without that consent are left out)")
                return 0
            export = export_records(store, args.format, after_seq=args.after, since=args.since)
            paths = export.write(args.out)
    except (StoreError, ValueError) as exc:
        print(f"pcg-runtime export: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"pcg-runtime export: cannot write to {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{k} {v}" for k, v in export.counts.items() if v)
    print(f"{len(paths)} files in {args.out}: {counts or 'nothing new'}; next export: --after {export.max_seq}")
    return 0


def main_erase(argv: list[str]) -> int:
    """Erase a patient whose guardian withdrew consent (runtime.store.Store.erase_patient). Exit
    status: 0 erased (or an interrupted erase finished), 1 the operator answered no, 2 refused."""
    from runtime.store import Store
    from runtime.store.db import DB_NAME, ERASE_REASON

    p = argparse.ArgumentParser(prog="pcg-runtime erase", description="Erase a patient whose guardian withdrew "
                                "consent: the audio of every recording and the details (age group, sex, height, weight, "
                                "pregnancy) are removed for good; the code, visits and results stay without personal data, "
                                "the erase is logged, and the next export carries it to the central copy.")
    add_version_flag(p)
    p.add_argument("code", help="the patient code on the card (PCG-XXXX-XX)")
    p.add_argument("--db", type=Path, default=None, help=f"store folder (default {default_db()})")
    p.add_argument("--reason", default=ERASE_REASON,
                   help=f"why, for the audit log (default: {ERASE_REASON}); never write a name")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation (required when nothing can be asked)")
    args = p.parse_args(argv)
    root = args.db or default_db()
    if not (root / DB_NAME).is_file():
        print(f"pcg-runtime erase: no store at {root} (no {DB_NAME}); check --db (nothing was erased)", file=sys.stderr)
        return 2
    if not args.yes and not sys.stdin.isatty():
        print("pcg-runtime erase: an erase cannot be undone and nothing can be asked here, so nothing was erased; run it "
              "on a terminal to confirm, or add --yes", file=sys.stderr)
        return 2
    try:
        with Store.open(root) as store:
            patient = store.find_patient(args.code)
            if not args.yes and patient.erased_at is None:
                d = patient.demographics
                known = [d.age_group, d.sex, f"{d.height_cm:g} cm" if d.height_cm else None,
                         f"{d.weight_kg:g} kg" if d.weight_kg else None, "pregnant" if d.pregnant else None]
                visits, recordings = store.query(
                    "SELECT COUNT(DISTINCT s.id), COUNT(r.id) FROM sessions s LEFT JOIN recordings r ON r.session_id = s.id "
                    "WHERE s.patient_id = ?", (patient.id,))[0]
                print(f"Erase patient {patient.code} ({', '.join(k for k in known if k) or 'no details given'})? Visits: "
                      f"{visits}, recordings: {recordings}. The audio and the details are removed for good; the code, visits "
                      "and results stay without personal data.")
                try:
                    confirmed = ask("Erase? [y/n]: ", lambda t: parse_yes_no(t, "erase"))
                except EOFError:
                    confirmed = None
                if not confirmed:
                    print(f"patient {patient.code}: nothing was erased")
                    return 1
            try:
                erasure = store.erase_patient(patient.code, reason=args.reason)
            except (StoreError, ValueError) as exc:  # each says whether anything was erased
                print(f"pcg-runtime erase: {exc}", file=sys.stderr)
                return 2
    except LookupError as exc:
        print(f"pcg-runtime erase: {exc}; check the card and type it again (nothing was erased)", file=sys.stderr)
        return 2
    except (StoreError, ValueError) as exc:  # the store could not be opened, or the code is mistyped
        print(f"pcg-runtime erase: {exc} (nothing was erased)", file=sys.stderr)
        return 2
    if erasure.already_erased:
        left = (f"removed {erasure.files_removed} audio files an interrupted erase had left" if erasure.files_removed
                else "nothing was left to remove")
        print(f"patient {erasure.code} was already erased ({erasure.erased_at[:16].replace('T', ' ')} UTC, "
              f"{erasure.reason}); {left}")
        return 0
    print(f"erased patient {erasure.code} ({erasure.reason}): {_count(erasure.files_removed, 'audio file')} removed "
          f"({_count(erasure.recordings, 'recording')} in {_count(erasure.sessions, 'visit')}), details cleared; the code, visits and results "
          "stay without personal data. The erase is logged, and the next export (pcg-runtime export --after SEQ) carries "
          "it to the central copy.")
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def main_model(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="pcg-runtime model", description="Check a model file and print its manifest.")
    add_version_flag(p)
    add_model_flags(p)
    p.add_argument("--json", action="store_true", help="the whole manifest as JSON")
    args = p.parse_args(argv)
    from runtime.triage import model_limits, model_summary

    model = load_model(args)
    if args.json:
        print(model.manifest.to_json())
        return 0
    summary = model_summary(model.manifest, model.provider, model.trust)
    print(f"{model.path}: {summary['name']}, {summary['task']} / {summary['architecture']}, created {summary['created_utc']}")
    print(f"graph sha256 {summary['graph_sha256']} (verified); provider {summary['provider']}")
    print(f"trust: {model.trust.describe()}")
    print(f"trained on {summary['training_data']}; " + ", ".join(f"{k} AUROC {v}" for k, v in summary["auroc"].items()))
    if summary["adapted_to"]:
        adapted = summary["adapted_to"]
        print(f"adapted to a stethoscope: batch-norm statistics of {adapted['recordings']} recordings of {adapted['patients']} patients "
              f"({adapted['folder']}, {adapted['adapted_utc']})")
    for name, point in model.manifest.operating_points.items():
        figures = (f", out-of-fold sensitivity {point.sensitivity:.2f} specificity {point.specificity:.2f}"
                   if point.sensitivity is not None and point.specificity is not None else "")
        chosen = " [used]" if name == (args.operating_point or model.manifest.default_operating_point) else ""
        print(f"operating point {name}{chosen}: threshold {point.threshold:.3f}{figures}  {point.description}")
    for note in model_limits(model.manifest, None, list(GUIDED_SITES), model.trust):
        print(f"note: {note}")
    print(DISCLAIMER)
    return 0


COMMANDS = {"triage": main_triage, "export": main_export, "erase": main_erase, "model": main_model}


def main(argv: list[str] | None = None) -> int:
    from runtime.inference import ModelError

    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    name = f"pcg-runtime{' ' + command if command else ''}"
    try:
        return COMMANDS[command](argv[1:]) if command else main_live(argv)
    except ModelError as exc:  # every command loads the model the same way (load_model)
        print(f"{name}: model refused: {exc}", file=sys.stderr)
        return 3
    except InputError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{name}: stopped (Ctrl-C); what was written so far is kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
