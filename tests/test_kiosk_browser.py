"""The kiosk in headless Chromium at 800x480, against the virtual stethoscope on a pseudo-terminal.

Screenshots go to runs/kiosk-screenshots/<test>/ (git-ignored); the path is printed.
"""

from __future__ import annotations

import base64
import io
import time
import zipfile

import pytest
from kiosk_fixtures import headless_chromium, running_kiosk, screenshot_dir

from firmware_bridge.emulator import Faults

pytestmark = pytest.mark.slow

SITES = ("AV", "PV", "TV", "MV")
NO_DECISION_EN = "No screening decision: no model is available"


def wait(driver, condition, timeout_s: float = 30.0, what: str = ""):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s, poll_frequency=0.05).until(condition, message=what)


def by_id(driver, element_id: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def text_of(driver, element_id: str) -> str:
    """The element's visible text, read in one step (the app re-renders parts of the page on events)."""
    return driver.execute_script("const e = document.getElementById(arguments[0]); return e ? e.innerText : '';",
                                 element_id).strip()


def content_of(driver, element_id: str) -> str:
    """The element's text whether shown or not (inside closed details, say)."""
    return driver.execute_script("return document.getElementById(arguments[0]).textContent;", element_id).strip()


def classes_of(driver, element_id: str) -> list[str]:
    return driver.execute_script("return Array.from(document.getElementById(arguments[0]).classList);", element_id)


def site_finished(driver, site: str) -> bool:
    return bool({"ok", "retake"} & set(classes_of(driver, f"step-{site}")))


def start_patient_in_form(driver, kiosk, shots, *, reuse: bool = False) -> str:
    """Fill the new-patient form: first wrongly (field messages, nothing stored), then rightly;
    `reuse` ticks the separate consent to reuse the recordings for retraining."""
    by_id(driver, "nav-patient").click()
    by_id(driver, "height").send_keys("999")
    by_id(driver, "start-patient").click()
    wait(driver, lambda d: d.find_element("css selector", '.err[data-for="height_cm"]').text.strip(),
         what="height error shown")
    assert "30" in driver.find_element("css selector", '.err[data-for="height_cm"]').text
    assert driver.find_element("css selector", '.err[data-for="consent"]').text.strip()
    assert "invalid" in classes_of(driver, "height")
    driver.save_screenshot(str(shots / "02-patient-validation.png"))
    assert kiosk.count("patients") == 0
    by_id(driver, "height").clear()
    by_id(driver, "height").send_keys("121")
    by_id(driver, "weight").send_keys("24,5")
    by_id(driver, "consent").click()
    if reuse:
        by_id(driver, "consent_reuse").click()
    by_id(driver, "age_group-Child").click()
    by_id(driver, "sex-Female").click()
    driver.save_screenshot(str(shots / "03-patient-form.png"))
    by_id(driver, "start-patient").click()
    wait(driver, lambda d: text_of(d, "patient-code").startswith("PCG-"), what="patient code shown")
    return text_of(driver, "patient-code")


def test_a_whole_patient_is_screened_in_the_browser(tmp_path):
    seconds = 6.0
    with running_kiosk(tmp_path, speed=5.0, seconds=seconds) as kiosk, headless_chromium() as driver:
        shots = screenshot_dir("whole-patient")
        driver.get(kiosk.url)
        wait(driver, lambda d: "ok" in classes_of(d, "device-pill"), what="device connected")
        by_id(driver, "device-pill").click()
        wait(driver, lambda d: text_of(d, "device-rate") == "4000 Hz", what="device screen")
        assert text_of(driver, "device-firmware") == "1.0.0"
        wait(driver, lambda d: text_of(d, "device-battery").endswith("%"), what="battery shown")
        driver.save_screenshot(str(shots / "01-device.png"))

        code = start_patient_in_form(driver, kiosk, shots, reuse=True)
        (stored_code, reuse) = kiosk.store.query("SELECT code, consent_reuse FROM patients")[0]
        assert code == stored_code and reuse == 1

        for site in SITES:
            wait(driver, lambda d: by_id(d, "btn-record").is_displayed() and by_id(d, "btn-record").is_enabled(),
                 what=f"record button for {site}")
            assert "current" in classes_of(driver, f"step-{site}")
            # the chest diagram shows where this site is, and which sites are done
            assert by_id(driver, "chest").is_displayed()
            assert "current" in by_id(driver, f"chest-{site}").get_attribute("class")
            assert all({"ok", "retake"} & set(by_id(driver, f"chest-{s}").get_attribute("class").split())
                       for s in SITES[:SITES.index(site)])
            # the next action is reachable without scrolling at 800x480
            assert driver.execute_script("return document.getElementById('btn-record').getBoundingClientRect().bottom") <= 480
            by_id(driver, "btn-record").click()
            if site == "AV":
                wait(driver, lambda d: not text_of(d, "timer").startswith("0.0 /"), what="live timer")
                driver.save_screenshot(str(shots / "04-recording-AV.png"))
            wait(driver, lambda d: site_finished(d, site), what=f"{site} recorded")
            assert by_id(driver, "site-outcome").is_displayed()
            audio_src = by_id(driver, "playback").get_attribute("src")
            assert "/api/recordings/" in audio_src
            if site == "AV":
                driver.save_screenshot(str(shots / "05-site-done-AV.png"))
                duration = driver.execute_async_script(
                    "const done = arguments[arguments.length - 1]; const a = document.getElementById('playback');"
                    "a.preload = 'auto'; a.onloadedmetadata = () => done(a.duration); a.onerror = () => done(-1); a.load();")
                assert duration == pytest.approx(seconds, abs=0.01)  # the stored WAV plays back in the browser
            if site != SITES[-1]:
                by_id(driver, "btn-next").click()

        wait(driver, lambda d: by_id(d, "btn-finish").is_displayed(), what="finish button")
        by_id(driver, "btn-finish").click()
        wait(driver, lambda d: by_id(d, "result-decision").is_displayed() and text_of(d, "result-decision"),
             what="result screen")
        driver.save_screenshot(str(shots / "06-result.png"))

        decision = by_id(driver, "result-decision").get_attribute("data-decision")
        if decision in ("REFER", "NO_REFER"):  # no referral place configured: a generic one
            assert text_of(driver, "plain-next") == {
                "REFER": "Refer the child to a paediatric cardiologist or the reference clinic for a heart examination.",
                "NO_REFER": NEXT_STEP["NO_REFER", "en"]}[decision]
        notice = text_of(driver, "notice")
        assert "research use" in notice and "not a diagnosis" in notice
        assert by_id(driver, "unused").find_elements("css selector", "li")
        results = kiosk.store.query("SELECT decision, probability FROM results")
        if kiosk.server.state.result["model"] is None:
            assert text_of(driver, "result-decision") == NO_DECISION_EN or \
                text_of(driver, "result-decision").startswith("Record again: ")
        if decision:
            assert [r["decision"] for r in results] == [decision]
            probability = results[0]["probability"]
            if probability is not None:  # under the closed details, in the language's format
                assert content_of(driver, "result-probability") == f"{probability:.2f} ({round(probability * 100)}%)"
        else:
            assert results == [] and text_of(driver, "result-decision") == NO_DECISION_EN
        recordings = kiosk.store.query("SELECT site, status, samples_written, rate_hz FROM recordings ORDER BY seq")
        assert [r["site"] for r in recordings] == list(SITES)
        assert all(r["status"] == "complete" and r["samples_written"] == seconds * r["rate_hz"] for r in recordings)
        assert kiosk.store.query("SELECT status FROM sessions")[0][0] == "closed"
        assert kiosk.store.query("PRAGMA integrity_check")[0][0] == "ok"

        by_id(driver, "lang").click()
        wait(driver, lambda d: text_of(d, "nav-today") == "Hoje", what="Portuguese")
        assert "uso em pesquisa" in text_of(driver, "notice")
        driver.save_screenshot(str(shots / "07-result-pt.png"))

        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
        assert by_id(driver, "slip").is_displayed() and not by_id(driver, "result-decision").is_displayed()
        assert text_of(driver, "slip-code") == code
        driver.save_screenshot(str(shots / "08-referral-slip-print.png"))
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
        (shots / "08-referral-slip.pdf").write_bytes(base64.b64decode(driver.print_page()))

        by_id(driver, "nav-today").click()
        wait(driver, lambda d: code in text_of(d, "today-rows"), what="today's list")
        assert "4 / 4" in text_of(driver, "today-rows")
        driver.save_screenshot(str(shots / "09-today-pt.png"))
        by_id(driver, "lang").click()
        by_id(driver, "nav-export").click()
        driver.save_screenshot(str(shots / "10-export.png"))
        href = by_id(driver, "export-csv").get_attribute("href")
        status, _, archive = kiosk.request("GET", href[len(kiosk.url) - 1:])
        with zipfile.ZipFile(io.BytesIO(archive)) as z:
            patients_csv = z.read(next(n for n in z.namelist() if n.endswith("/patients.csv"))).decode()
        assert status == 200 and code in patients_csv


def wait_for_device_phase(emulator, period_s: float, low_s: float, high_s: float) -> None:
    """Wait until the emulator's clock is between low_s and high_s into its unplug period."""
    deadline = time.monotonic() + 60
    while not low_s <= emulator.summary()["device_time_s"] % period_s < high_s:
        assert time.monotonic() < deadline, "the emulator's clock did not advance"
        time.sleep(0.02)


def test_unplugging_mid_site_is_shown_and_recording_goes_on_after_reconnect(tmp_path):
    seconds, period_s = 6.0, 12.0
    # Unplugged at device seconds 12-14, 24-26, ...; AV starts 7-9 s into a period, so the unplug
    # falls in the middle of it, and PV (about 16 s on) finishes before the next one.
    faults = Faults(disconnect_every_s=period_s, reconnect_after_s=2.0)
    with running_kiosk(tmp_path, speed=2.0, seconds=seconds, faults=faults, model=None) as kiosk, \
            headless_chromium() as driver:
        shots = screenshot_dir("unplug")
        driver.get(kiosk.url)
        wait(driver, lambda d: "ok" in classes_of(d, "device-pill"), what="device connected")
        status, _, visit = kiosk.request("POST", "/api/patients", {"consent": True})
        assert status == 201
        wait(driver, lambda d: text_of(d, "patient-code") == visit["patient_code"], what="visit pushed to the page")

        wait_for_device_phase(kiosk.emulator, period_s, 7.0, 9.0)
        by_id(driver, "btn-record").click()
        wait(driver, lambda d: "disconnected" in text_of(d, "banner").lower(), what="unplug shown")
        assert "kept" in text_of(driver, "banner")
        assert "bad" in classes_of(driver, "device-pill")
        assert by_id(driver, "btn-stop").is_displayed()  # still recording the site
        driver.save_screenshot(str(shots / "01-unplugged-mid-site.png"))
        wait(driver, lambda d: any(word in text_of(d, "banner") for word in ("reconnected", "restarted")),
             what="reconnect shown")
        assert "ok" in classes_of(driver, "device-pill")
        wait(driver, lambda d: site_finished(d, "AV"), what="AV finished after reconnect")
        driver.save_screenshot(str(shots / "02-site-done-after-reconnect.png"))

        by_id(driver, "btn-next").click()
        by_id(driver, "btn-record").click()
        wait(driver, lambda d: site_finished(d, "PV"), what="PV recorded after the reconnect")
        assert text_of(driver, "banner") == ""

        recordings = kiosk.store.query(
            "SELECT site, repeat, status, stop_reason, samples_written, rate_hz, gaps FROM recordings ORDER BY seq")
        av = [r for r in recordings if r["site"] == "AV"]
        # Either the stethoscope kept its sample count across the unplug (one recording, the audio
        # missed stored as a gap), or it restarted it (the cut recording kept as interrupted, the
        # site recorded again); both keep what was recorded and finish the site.
        for cut in av[:-1]:
            assert (cut["status"], cut["stop_reason"]) == ("interrupted", "device_restart") and cut["samples_written"] > 0
        if len(av) == 1:
            assert av[0]["gaps"] != "[]" and kiosk.server.state.sites["AV"]["samples_lost"] > 0
        pv = [r for r in recordings if r["site"] == "PV"]
        for final in (av[-1], pv[-1]):  # one WAV per site, filled to its length across the unplug
            assert final["status"] == "complete" and final["samples_written"] == seconds * final["rate_hz"]
        kinds = [k for (k,) in kiosk.store.query("SELECT kind FROM device_events ORDER BY seq")]
        assert "device_disconnected" in kinds and "device_reconnected" in kinds


SCREENS = ("patient", "record", "today", "export")


def test_portuguese_messages_and_touch_targets_at_800x480(tmp_path):
    with running_kiosk(tmp_path, model=None) as kiosk, headless_chromium() as driver:
        shots = screenshot_dir("portuguese")
        driver.get(kiosk.url)
        wait(driver, lambda d: "ok" in classes_of(d, "device-pill"), what="device connected")
        by_id(driver, "lang").click()
        wait(driver, lambda d: text_of(d, "nav-patient") == "Novo paciente", what="Portuguese")
        by_id(driver, "weight").send_keys("abc")
        by_id(driver, "start-patient").click()
        wait(driver, lambda d: d.find_element("css selector", '.err[data-for="consent"]').text.strip(),
             what="consent error shown")
        errors = {field: driver.find_element("css selector", f'.err[data-for="{field}"]').text
                  for field in ("consent", "weight_kg")}
        assert errors == {"consent": "O consentimento é obrigatório antes de gravar.",
                          "weight_kg": "Digite um número, ou deixe vazio se não souber."}
        driver.save_screenshot(str(shots / "01-validation-pt.png"))
        assert kiosk.count("patients") == 0
        assert driver.execute_script("return document.getElementById('consent').getBoundingClientRect().height") >= 32
        for screen in SCREENS:
            by_id(driver, f"nav-{screen}").click()
            layout = driver.execute_script(
                "const small = Array.from(document.querySelectorAll('button, .button, input, audio'))"
                "  .filter(e => e.offsetParent !== null && e.type !== 'checkbox')"
                "  .filter(e => e.getBoundingClientRect().height < 40).map(e => e.id || e.textContent);"
                "return {small, width: document.documentElement.scrollWidth, viewport: window.innerWidth};")
            assert layout["small"] == [], f"{screen}: controls under 40 px tall: {layout['small']}"
            assert layout["width"] <= layout["viewport"] == 800, f"{screen} is wider than the screen"


def test_an_unfinished_visit_is_continued_or_closed_only_on_the_operators_word(tmp_path):
    """A power cut leaves patient A's visit open (AV recorded). The restarted kiosk shows who it is
    for and waits; "yes" continues it. Then starting patient B over A's unfinished visit asks first,
    and "close it" keeps A's recording and starts B."""
    with running_kiosk(tmp_path, speed=40.0, seconds=2.0, model=None) as kiosk, headless_chromium() as driver:
        driver.get(kiosk.url)
        wait(driver, lambda d: "ok" in classes_of(d, "device-pill"), what="device connected")
        first = start_patient_in_form(driver, kiosk, screenshot_dir("unfinished-visit"))
        assert kiosk.store.query("SELECT consent_reuse FROM patients")[0][0] == 0  # not ticked: not given
        by_id(driver, "btn-record").click()
        wait(driver, lambda d: site_finished(d, "AV"), what="AV recorded")
    with running_kiosk(tmp_path, speed=40.0, seconds=2.0, model=None) as kiosk, headless_chromium() as driver:
        shots = screenshot_dir("unfinished-visit")
        driver.get(kiosk.url)
        wait(driver, lambda d: by_id(d, "open-visit").is_displayed(), what="open visit shown")
        who = text_of(driver, "open-visit-who")
        assert first in who and "Child" in who and "121 cm" in who and "sites done: AV" in who
        assert not by_id(driver, "start-patient").is_enabled()  # no new patient meanwhile
        driver.save_screenshot(str(shots / "01-open-visit.png"))
        by_id(driver, "btn-open-continue").click()
        wait(driver, lambda d: text_of(d, "patient-code") == first, what="visit continued")
        assert site_finished(driver, "AV") and not site_finished(driver, "PV")
        by_id(driver, "nav-patient").click()
        by_id(driver, "consent").click()
        by_id(driver, "age_group-Infant").click()
        by_id(driver, "start-patient").click()
        wait(driver, lambda d: by_id(d, "unfinished").is_displayed(), what="unfinished visit question")
        assert first in text_of(driver, "unfinished-title") and "AV" in text_of(driver, "unfinished-title")
        assert kiosk.count("patients") == 1
        driver.save_screenshot(str(shots / "02-new-patient-over-unfinished.png"))
        by_id(driver, "btn-unfinished-close").click()
        wait(driver, lambda d: text_of(d, "patient-code").startswith("PCG-") and text_of(d, "patient-code") != first,
             what="new patient started")
        assert kiosk.count("patients") == 2 and kiosk.count("recordings") == 1
        by_id(driver, "nav-today").click()
        wait(driver, lambda d: "Closed unfinished" in text_of(d, "today-rows"), what="today lists the closed visit")


# --- the result in plain words (issue 16, item 2) ---------------------------------------------

REFERRAL = {"place": "Ambulatório de Cardiologia Pediátrica do Hospital Regional", "within_days": 30,
            "note": "Agendar pelo telefone 0800 000 0000"}
NEXT_STEP = {  # what the plain-words block says to do, per decision and language, with REFERRAL configured
    ("REFER", "pt"): f"Encaminhe a criança para {REFERRAL['place']} em até 30 dias.",
    ("REFER", "en"): f"Refer the child to {REFERRAL['place']} within 30 days.",
    ("NO_REFER", "pt"): "Não é preciso encaminhar a partir desta triagem: a consulta terminou. Dê à família a "
                        "orientação abaixo.",
    ("NO_REFER", "en"): "No referral is needed from this screening: the visit is finished. Give the family the advice "
                        "below.",
}


def record_every_site(driver) -> None:
    """Record AV, PV, TV and MV on the recording screen, then ask for the result."""
    for site in SITES:
        wait(driver, lambda d: by_id(d, "btn-record").is_displayed() and by_id(d, "btn-record").is_enabled(),
             what=f"record button for {site}")
        by_id(driver, "btn-record").click()
        wait(driver, lambda d: site_finished(d, site), what=f"{site} recorded")
        if site != SITES[-1]:
            by_id(driver, "btn-next").click()
    wait(driver, lambda d: by_id(d, "btn-finish").is_displayed() and by_id(d, "btn-finish").is_enabled(),
         what="finish button")
    by_id(driver, "btn-finish").click()
    wait(driver, lambda d: by_id(d, "result-decision").is_displayed() and text_of(d, "result-decision"),
         what="result screen")


def result_layout(driver) -> dict:
    """What a health worker sees of the result, scrolled to its top, without opening the details: the
    visible text, whether the details are open, and how far the next step and the action buttons reach
    down the screen."""
    return driver.execute_script(
        "document.querySelector('main').scrollTop = 0;"
        "const details = document.getElementById('result-details');"
        "const bottom = (id) => document.getElementById(id).getBoundingClientRect().bottom;"
        "return {open: details.open, visible: document.getElementById('screen-result').innerText,"
        "        details: details.textContent, viewport: window.innerHeight,"
        "        next: bottom('plain-next'), actions: bottom('btn-new')};")


def tap_details(driver) -> None:
    """Scroll the details' summary to the middle of the screen (above the action bar) and tap it."""
    summary = by_id(driver, "result-details").find_element("css selector", "summary")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", summary)
    summary.click()


def switch_language(driver, lang: str) -> None:
    if driver.execute_script("return document.documentElement.lang") != {"pt": "pt-BR", "en": "en"}[lang]:
        by_id(driver, "lang").click()
    wait(driver, lambda d: text_of(d, "nav-today") == {"pt": "Hoje", "en": "Today"}[lang], what=lang)


def test_a_decided_result_says_what_to_do_next_in_plain_portuguese_and_english(tmp_path):
    """The murmur practice patient with a referral place configured: whatever the model decides, the
    top of the result says what to do next in the chosen language; the probability, threshold and
    operating point are in the closed details, written in the language's number format."""
    with running_kiosk(tmp_path, speed=20.0, scenario="murmur", referral=REFERRAL) as kiosk, \
            headless_chromium() as driver:
        shots = screenshot_dir("result-words")
        driver.get(kiosk.url)
        wait(driver, lambda d: "ok" in classes_of(d, "device-pill"), what="device connected")
        switch_language(driver, "pt")
        status, _, _ = kiosk.request("POST", "/api/patients", {"consent": True, "age_group": "Child"})
        assert status == 201
        wait(driver, lambda d: text_of(d, "patient-code").startswith("PCG-"), what="patient on screen")
        record_every_site(driver)
        result = kiosk.server.state.result
        decision = result["decision"]
        assert decision in ("REFER", "NO_REFER"), result  # the model's own decision, whichever it is
        for lang in ("pt", "en"):
            switch_language(driver, lang)
            assert text_of(driver, "plain-next") == NEXT_STEP[decision, lang]
            assert text_of(driver, "result-decision") == {"pt": {"REFER": "Encaminhar ao especialista",
                                                                 "NO_REFER": "Sem necessidade de encaminhamento"},
                                                          "en": {"REFER": "Refer to a specialist",
                                                                 "NO_REFER": "No referral needed"}}[lang][decision]
            layout = result_layout(driver)
            driver.save_screenshot(str(shots / f"01-{decision}-{lang}.png"))
            assert not layout["open"]
            assert layout["next"] <= layout["viewport"] and layout["actions"] <= layout["viewport"], layout
            for raw in (result["operating_point"], "threshold", "limiar", "graph_sha256", "created_utc", "0,", "0."):
                assert raw not in layout["visible"], (raw, layout["visible"])
            probability = content_of(driver, "result-probability")
            share = round(result["probability"] * 100)
            if lang == "pt":
                assert probability == f"{result['probability']:.2f}".replace(".", ",") + f" ({share}%)"
                assert "Diga à família" in layout["visible"] and "uso em pesquisa" in layout["visible"]
            else:
                assert probability == f"{result['probability']:.2f} ({share}%)"
                assert "Tell the family" in layout["visible"] and "research use" in layout["visible"]
            assert result["operating_point"] in layout["details"]
            if result.get("murmur"):
                murmur = text_of(driver, "plain-murmur")
                assert murmur.startswith({"pt": "Sopro: o modelo", "en": "Murmur: the model"}[lang])
            tap_details(driver)
            wait(driver, lambda d: result["operating_point"] in text_of(d, "screen-result"), what="details opened")
            driver.save_screenshot(str(shots / f"02-{decision}-{lang}-details.png"))
            tap_details(driver)
        if decision == "REFER":
            assert REFERRAL["note"] in text_of(driver, "plain-note")
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
        assert text_of(driver, "slip-next").startswith(NEXT_STEP[decision, "en"])
        driver.save_screenshot(str(shots / f"03-slip-{decision}-en.png"))
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})


def test_a_noisy_room_asks_for_retakes_in_plain_words_and_then_for_clinical_auscultation(tmp_path):
    """The noisy-room practice patient, no referral configured: the result names each site to record
    again and why, in the worker's language; once AV has failed its retakes, it says to refer for
    clinical auscultation, to a generic place, and the details tell the supervisor where to set one."""
    with running_kiosk(tmp_path, speed=20.0, scenario="noisy") as kiosk, headless_chromium() as driver:
        shots = screenshot_dir("result-words")
        driver.get(kiosk.url)
        wait(driver, lambda d: "ok" in classes_of(d, "device-pill"), what="device connected")
        switch_language(driver, "pt")
        assert kiosk.request("POST", "/api/patients", {"consent": True})[0] == 201
        wait(driver, lambda d: text_of(d, "patient-code").startswith("PCG-"), what="patient on screen")
        record_every_site(driver)
        result = kiosk.server.state.result
        assert result["decision"] == "RETAKE" and not result["cannot_assess"], result
        failed = [s for s in SITES if not result["quality"][s]["ok"]]
        assert failed
        assert text_of(driver, "result-decision") == "Grave de novo: " + ", ".join(failed[:-1]) + \
            (" e " if len(failed) > 1 else "") + failed[-1]
        retake = text_of(driver, "plain-retake")
        for site in failed:
            assert site in retake
        assert "desligue ou afaste-se do ruído" in retake  # the "noise" reason, as the worker can act on it
        driver.save_screenshot(str(shots / "04-RETAKE-pt.png"))
        switch_language(driver, "en")
        assert "turn off or move away from the noise" in text_of(driver, "plain-retake")
        layout = result_layout(driver)
        assert not layout["open"] and layout["actions"] <= layout["viewport"], layout
        driver.save_screenshot(str(shots / "04-RETAKE-en.png"))

        by_id(driver, "btn-retake-now").click()
        wait(driver, lambda d: by_id(d, "screen-record").is_displayed(), what="back to recording")
        assert "current" in classes_of(driver, f"step-{failed[0]}")
        for _ in range(2):  # AV's two retakes allowed fail too: the site cannot be assessed
            wait(driver, lambda d: by_id(d, "btn-retake").is_displayed() and by_id(d, "btn-retake").is_enabled(),
                 what="retake button")
            before = kiosk.count("recordings")
            by_id(driver, "btn-retake").click()
            wait(driver, lambda d: kiosk.count("recordings") == before + 1 and by_id(d, "btn-retake").is_enabled(),
                 what="site retaken")
        wait(driver, lambda d: by_id(d, "btn-finish").is_displayed() and by_id(d, "btn-finish").is_enabled(),
             what="finish button")
        by_id(driver, "btn-finish").click()
        wait(driver, lambda d: kiosk.server.state.result and kiosk.server.state.result["cannot_assess"],
             what="cannot assess")
        wait(driver, lambda d: "auscultation" in text_of(d, "result-decision"), what="cannot-assess screen")
        sites = kiosk.server.state.result["cannot_assess"]
        assert failed[0] in sites
        assert text_of(driver, "result-decision") == "Cannot assess: refer for clinical auscultation"
        assert "Refer the child to a doctor or the reference clinic" in text_of(driver, "plain-next")
        assert not by_id(driver, "btn-retake-now").is_displayed()
        unset = content_of(driver, "result-referral")
        assert "box configuration" in unset and "referral" in unset
        driver.save_screenshot(str(shots / "05-cannot-assess-en.png"))
        switch_language(driver, "pt")
        assert text_of(driver, "result-decision") == "Não foi possível avaliar: encaminhe para ausculta clínica"
        assert "ausculta clínica" in text_of(driver, "plain-next")
        driver.save_screenshot(str(shots / "05-cannot-assess-pt.png"))
