"use strict";
// The kiosk app: one page, screens shown and hidden. Everything the runtime does arrives on the
// server-sent event stream (/api/events), which starts with the whole state; requests only ask.

const AGE_GROUPS = ["Neonate", "Infant", "Child", "Adolescent", "Young adult"];
const SEXES = ["Female", "Male"];
const PREGNANCY_AGE_GROUPS = ["Adolescent", "Young adult"];
const WAVE_POINTS = 1920;  // 3 s of audio at real time (the runtime sends 64 points per 0.1 s)

const app = {
  state: null,          // the server's state (see KioskState.snapshot), kept current by events
  screen: "patient",
  site: null,           // the site shown on the recording screen
  lang: "en",
  form: { age_group: null, sex: null, pregnant: null },
  failure: null,        // {site, message} of the last recording that stopped early
  pendingPatient: null, // the new patient's form, held while the operator decides about an unfinished visit
  unfinished: null,     // {patient_code, sites_done} of the visit a new patient would close
  banner: null,         // "lost" | "back" | "restarted" | "server" | "battery_low" | "battery_critical" | null
  bannerVars: {},       // values the banner's text names (the battery's percentage)
  wave: [],             // recent waveform points, newest last
  waveDirty: false,
};

const $ = (id) => document.getElementById(id);

function t(key, vars) {
  const table = window.I18N[app.lang] || window.I18N.en;
  let text = key in table ? table[key] : (window.I18N.en[key] || key);
  for (const [name, value] of Object.entries(vars || {})) text = text.split(`{${name}}`).join(String(value));
  return text;
}

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const child of children) node.append(child);
  return node;
}

async function api(method, path, body) {
  const options = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  return { ok: response.ok, status: response.status, data: data || {} };
}

// --- language ----------------------------------------------------------------------------

/** The locale numbers and dates are written in: "0,29" and "6 de dez. de 2026" in Portuguese. */
function locale() { return app.lang === "pt" ? "pt-BR" : "en-GB"; }

function applyLanguage() {
  document.documentElement.lang = app.lang === "pt" ? "pt-BR" : "en";
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  renderAll();
}

// --- screens -----------------------------------------------------------------------------

function show(screen) {
  app.screen = screen;
  for (const section of document.querySelectorAll("main .screen")) section.hidden = section.id !== `screen-${screen}`;
  for (const button of document.querySelectorAll(".tabs button")) button.classList.toggle("active", button.dataset.screen === screen);
  if (screen === "today") loadToday();
  document.querySelector("main").scrollTop = 0;
  renderAll();
}

function renderAll() {
  if (!app.state) return;
  renderPractice();
  renderDevice();
  renderBanner();
  renderOpenVisit();
  renderChoices();
  renderRecord();
  renderResult();
}

// --- practice ----------------------------------------------------------------------------

function practiceText(key, name) {
  return t(key, { scenario: t(`scenario.${name}`) });
}

function renderPractice() {
  // pcg-runtime --scenario: every screen says so, so nobody takes a practice result for a child's
  const name = app.state.practice;
  $("practice-badge").hidden = !name;
  if (name) $("practice-badge").textContent = practiceText("practice.badge", name);
}

// --- device ------------------------------------------------------------------------------

function renderDevice() {
  const device = app.state.device || {};
  const pill = $("device-pill");
  const state = device.connected ? (device.state === "reconnected" ? "reconnected" : "connected")
    : (device.state === "connecting" ? "connecting" : device.state === "failed" ? "failed" : "disconnected");
  let text = t(`device.${state}`);
  if (device.connected && device.battery_pct != null) text += ` · ${device.battery_pct}%`;
  pill.textContent = text;
  const battery = device.connected ? device.battery_pct : null;
  pill.className = "pill " + (!device.connected ? (state === "connecting" ? "" : "bad")
    : battery != null && battery <= 10 ? "bad" : battery != null && battery <= 20 ? "warn" : "ok");
  const rows = [
    ["device.state", t(`device.${state}`)], ["device.port", device.port], ["device.firmware", device.firmware],
    ["device.rate", device.rate_hz != null ? `${device.rate_hz} Hz` : null],
    ["device.battery", device.battery_pct != null ? `${device.battery_pct} %` : null],
    ["device.frames", device.frames_ok], ["device.crc", device.crc_errors], ["device.gaps", device.gaps],
    ["device.lost", device.samples_lost], ["device.reconnects", device.reconnects], ["device.error", device.error],
  ];
  const table = $("device-table");
  table.replaceChildren();
  for (const [key, value] of rows) {
    if (value === undefined || value === null) continue;
    table.append(el("dt", { textContent: t(key) }), el("dd", { textContent: String(value), id: `device-${key.split(".")[1]}` }));
  }
  $("btn-connect").disabled = app.state.busy !== null;
}

function renderBanner() {
  const banner = $("banner");
  banner.hidden = !app.banner;
  banner.className = "banner" + (app.banner === "back" ? " back" : app.banner === "battery_low" ? " warn" : "");
  banner.textContent = app.banner ? t(`device.banner_${app.banner}`, app.bannerVars) : "";
}

// --- new patient ---------------------------------------------------------------------------

function choiceButtons(containerId, field, options) {
  // Built once per language and then only updated, so a tap never lands on a replaced button.
  const container = $(containerId);
  if (container.dataset.lang !== app.lang) {
    container.dataset.lang = app.lang;
    container.replaceChildren();
    for (const [value, label] of options) {
      const id = `${field}-${value === null ? "unknown" : String(value).replace(" ", "-")}`;
      const button = el("button", { type: "button", id, textContent: label });
      button.addEventListener("click", () => { app.form[field] = value; clearError(field); renderChoices(); });
      button.choice = value;
      container.append(button);
    }
  }
  for (const button of container.children) button.setAttribute("aria-pressed", String(app.form[field] === button.choice));
}

function pregnancyPlausible() {
  return app.form.sex === "Female" && PREGNANCY_AGE_GROUPS.includes(app.form.age_group);
}

function renderChoices() {
  choiceButtons("age-choices", "age_group", [...AGE_GROUPS.map((g) => [g, t(`age.${g}`)]), [null, t("patient.unknown")]]);
  choiceButtons("sex-choices", "sex", [...SEXES.map((s) => [s, t(`sex.${s}`)]), [null, t("patient.unknown")]]);
  if (!pregnancyPlausible()) app.form.pregnant = null;
  $("pregnancy").hidden = !pregnancyPlausible();
  choiceButtons("pregnant-choices", "pregnant", [[false, t("patient.no")], [true, t("patient.yes")], [null, t("patient.unknown")]]);
}

function clearError(field) {
  const node = document.querySelector(`.err[data-for="${field}"]`);
  if (node) node.textContent = "";
}

function showErrors(errors) {
  for (const node of document.querySelectorAll("#patient-form .err")) node.textContent = "";
  for (const input of document.querySelectorAll("#patient-form .invalid")) input.classList.remove("invalid");
  let first = null;
  for (const [field, error] of Object.entries(errors)) {
    const node = document.querySelector(`#patient-form .err[data-for="${field}"]`) || document.querySelector('#patient-form .err[data-for="demographics"]');
    const key = `err.${error.code}`;
    node.textContent = key in window.I18N[app.lang] ? t(key, error) : error.message;
    const input = document.querySelector(`#patient-form [name="${field}"]`);
    if (input) input.classList.add("invalid");
    first = first || node;
  }
  if (first) first.scrollIntoView({ block: "center" });
}

function measure(id) {
  const text = $(id).value.trim().replace(",", ".");
  if (text === "") return null;
  const value = Number(text);
  return Number.isFinite(value) ? value : text;  // the server explains what is wrong with text
}

async function submitPatient(event) {
  event.preventDefault();
  const body = {
    consent: $("consent").checked,
    consent_reuse: $("consent_reuse").checked,  // separate and optional: reuse of the recordings for retraining
    age_group: app.form.age_group, sex: app.form.sex,
    height_cm: measure("height"), weight_kg: measure("weight"),
    pregnant: pregnancyPlausible() ? app.form.pregnant : null,
  };
  await sendPatient(body);
}

async function sendPatient(body) {
  const button = $("start-patient");
  button.disabled = true;
  try {
    const reply = await api("POST", "/api/patients", body);
    const visitError = ((reply.data.errors || {}).visit || {});
    if (reply.ok) {
      $("patient-form").reset();
      app.form = { age_group: null, sex: null, pregnant: null };
      app.pendingPatient = null; app.unfinished = null;
      showErrors({});
      adoptVisit(reply.data);
    } else if (reply.status === 409 && visitError.code === "visit_in_progress") {
      // the visit on screen is not finished: the operator decides before anything is closed
      app.pendingPatient = body;
      app.unfinished = { patient_code: visitError.patient_code, sites_done: visitError.sites_done || [] };
      showErrors({});
      renderOpenVisit();
    } else {
      showErrors(reply.data.errors || { demographics: { code: "", message: reply.data.error || `HTTP ${reply.status}` } });
    }
  } finally {
    button.disabled = !!(app.state && app.state.open_visit) || !!app.unfinished;
  }
}

// --- a visit left unfinished ----------------------------------------------------------------

function describeDemographics(demo) {
  const known = [
    demo.age_group ? t(`age.${demo.age_group}`) : null, demo.sex ? t(`sex.${demo.sex}`) : null,
    demo.height_cm != null ? `${demo.height_cm} cm` : null, demo.weight_kg != null ? `${demo.weight_kg} kg` : null,
    demo.pregnant ? t("patient.pregnant") : null,
  ].filter((k) => k);
  return known.length ? known.join(", ") : t("open.no_details");
}

/** A visit a crash left open is shown, with who it is for, until the operator says whether the
 * child in front of them is that patient; a new patient's form waits meanwhile. */
function renderDemographicsNote() {
  const uses = app.state.model_uses_demographics;
  const note = $("demographics-note");
  note.hidden = uses === null || uses === undefined;
  if (!note.hidden) note.textContent = t(uses ? "patient.uses_demographics" : "patient.ignores_demographics");
}

/** A clock earlier than the newest record or than the model's making (runtime/clock.py): said
 * before anyone screens, in the operator's language and the locale's date format. */
function renderClock() {
  const clock = app.state.clock;
  const box = $("clock-warning");
  box.hidden = !clock;
  if (clock) {
    const when = (iso) => new Date(iso).toLocaleString(locale(), { dateStyle: "short", timeStyle: "short" });
    box.textContent = t(`clock.${clock.code}`, { now: when(clock.now), then: when(clock.not_before) });
  }
}

function renderOpenVisit() {
  renderDemographicsNote();
  renderClock();
  const open = app.state.open_visit;
  const box = $("open-visit");
  box.hidden = !open;
  if (open) {
    const started = new Date(open.started_utc).toLocaleString(locale(),
      { dateStyle: "short", timeStyle: "short" });
    $("open-visit-who").textContent = t("open.who", {
      code: open.patient_code, details: describeDemographics(open.demographics || {}), started,
      sites: open.sites_done.length ? open.sites_done.join(", ") : t("open.none"),
    }) + (open.other_open_visits ? " " + t("open.others", { n: open.other_open_visits }) : "");
  }
  const unfinished = app.unfinished;
  $("unfinished").hidden = !unfinished || !!open;
  if (unfinished) {
    $("unfinished-title").textContent = t("unfinished.title", {
      code: unfinished.patient_code, sites: unfinished.sites_done.length ? unfinished.sites_done.join(", ") : t("open.none"),
    });
  }
  $("start-patient").disabled = !!open || !!unfinished;
}

async function answerOpenVisit(sameChild) {
  const open = app.state.open_visit;
  if (!open) return;
  for (const id of ["btn-open-continue", "btn-open-close"]) $(id).disabled = true;
  try {
    const reply = await api("POST", sameChild ? "/api/visit/continue" : "/api/visit/close", { patient_code: open.patient_code });
    if (!reply.ok) {
      showErrors(reply.data.errors || { demographics: { code: "", message: reply.data.error || `HTTP ${reply.status}` } });
      return;
    }
    app.state = reply.data;
    if (sameChild) {
      app.failure = null; app.wave = [];
      app.site = nextSite() || app.state.guided_sites[0];
      show("record");
    } else {
      renderAll();
    }
  } finally {
    for (const id of ["btn-open-continue", "btn-open-close"]) $(id).disabled = false;
  }
}

async function answerUnfinished(close) {
  const body = app.pendingPatient;
  if (!close || !body) {
    app.pendingPatient = null; app.unfinished = null;
    renderOpenVisit();
    if (!close) show("record");
    return;
  }
  await sendPatient({ ...body, close_unfinished: true });
}

// --- recording -----------------------------------------------------------------------------

function adoptVisit(visit) {
  if (app.state.visit && app.state.visit.session_id === visit.session_id && app.site) return;
  app.state.visit = visit;
  app.state.sites = {};
  app.state.result = null;
  app.failure = null;
  app.site = app.state.guided_sites[0];
  app.wave = [];
  show("record");
}

/** The visit has its result and no site may be recorded again; a RETAKE result leaves it open. */
function finished(s) {
  return !!s.result && (s.result.decision !== "RETAKE" || (s.result.cannot_assess || []).length > 0);
}

function nextSite() {
  const sites = app.state.guided_sites;
  const start = sites.indexOf(app.site);
  for (let i = 1; i <= sites.length; i++) {
    const site = sites[(start + i) % sites.length];
    if (!app.state.sites[site]) return site;
  }
  return null;
}

function renderRecord() {
  const s = app.state;
  const visit = s.visit;
  $("record-empty").hidden = !!visit;
  $("record-body").hidden = !visit;
  if (!visit) return;
  if (!app.site) app.site = s.guided_sites.find((site) => !s.sites[site]) || s.guided_sites[0];
  $("patient-code").textContent = visit.patient_code;
  const notes = visit.model_notes || [];
  if ($("model-notes").dataset.session !== visit.session_id) {
    $("model-notes").dataset.session = visit.session_id;
    $("model-notes").replaceChildren(...notes.map((note) => el("li", { textContent: note })));
  }
  $("model-notes-box").hidden = notes.length === 0;
  $("model-notes-summary").textContent = t("record.model_notes", { n: notes.length });
  const recording = s.recording;
  const busy = s.busy !== null;
  const steps = $("steps");
  if (!steps.children.length) {
    for (const site of s.guided_sites) {
      const button = el("button", { type: "button", id: `step-${site}` });
      button.addEventListener("click", () => { app.site = site; app.failure = null; app.wave = []; drawWave(); renderRecord(); });
      steps.append(button);
    }
  }
  for (const site of s.guided_sites) {
    const done = s.sites[site];
    const button = $(`step-${site}`);
    button.textContent = site + (done ? (done.quality.ok ? " ✓" : " !") : "");
    button.className = (site === app.site ? "current " : "") + (done ? (done.quality.ok ? "ok" : "retake") : "");
    button.disabled = busy || finished(s);
    $(`chest-${site}`).setAttribute("class", "spot " + button.className);
  }
  const site = app.site;
  const done = s.sites[site];
  const isRecording = recording && recording.site === site;
  $("record-instruction").textContent = app.failure && app.failure.site === site
    ? t("record.failed", { message: app.failure.message })
    : isRecording ? t("record.recording", { site })
    : done ? t("record.done", { site }) : t("record.place", { site, name: t(`site.${site}`) });
  $("record-instruction").classList.toggle("warn", !!(app.failure && app.failure.site === site));
  const allDone = s.guided_sites.every((x) => s.sites[x]);
  const anyDone = s.guided_sites.some((x) => s.sites[x]);
  $("btn-record").hidden = !!isRecording || !!done;
  $("btn-record").disabled = busy || finished(s);
  $("btn-stop").hidden = !isRecording;
  $("btn-retake").hidden = !done || !!isRecording;
  $("btn-retake").disabled = busy || finished(s);
  $("btn-next").hidden = !done || !!isRecording || allDone;
  $("btn-skip").hidden = !!done || !!isRecording || !nextSite();
  $("btn-skip").disabled = busy;
  $("btn-finish").hidden = !(allDone || (anyDone && !nextSite())) || !!isRecording;
  $("btn-finish").disabled = busy;
  if (!isRecording && !done) {
    $("timer").textContent = `0.0 / ${(s.seconds_per_site || 0).toFixed(1)} s`;
  }
  const outcome = $("site-outcome");
  outcome.hidden = !done || !!isRecording;
  $("wave").hidden = !outcome.hidden;  // once a site is done, its outcome and playback take the waveform's place
  if (done && !isRecording) {
    const ok = done.quality.ok;
    outcome.className = "outcome" + (ok ? "" : " bad");
    $("quality-verdict").textContent = ok ? t("record.quality_ok") : t("record.quality_bad");
    const list = $("quality-messages");
    // the runtime's sentences are English (with the measured figures); Portuguese uses each reason's own text
    const messages = app.lang === "en" ? (done.quality.messages || [])
      : (done.quality.reasons || []).map((reason, i) => window.I18N[app.lang][`quality.${reason}`] || done.quality.messages[i]);
    list.replaceChildren(...messages.map((m) => el("li", { textContent: m })));
    if (done.samples_lost) list.append(el("li", { textContent: t("record.lost", { n: done.samples_lost }) }));
    $("timer").textContent = `${done.seconds.toFixed(1)} s`;
    const audio = $("playback");
    const source = done.recording_id ? `/api/recordings/${done.recording_id}/audio` : "";
    if (audio.dataset.src !== source) { audio.dataset.src = source; if (source) audio.src = source; else audio.removeAttribute("src"); }
  }
}

function onLevel(level) {
  if (!app.state.recording || level.site !== app.site) return;
  $("timer").textContent = `${level.elapsed_s.toFixed(1)} / ${level.seconds.toFixed(1)} s`;
  const bar = $("meter-bar");
  bar.style.width = `${Math.round(Math.max(0, Math.min(1, level.meter)) * 100)}%`;
  bar.className = level.meter < 0.25 ? "low" : level.meter > 0.92 ? "high" : "";
  $("clipping").hidden = !(level.clipping > 0.001);
  app.wave.push(...level.waveform);
  if (app.wave.length > WAVE_POINTS) app.wave.splice(0, app.wave.length - WAVE_POINTS);
  if (!app.waveDirty) { app.waveDirty = true; requestAnimationFrame(drawWave); }
}

function drawWave() {
  app.waveDirty = false;
  const canvas = $("wave");
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.fillStyle = "#0d1b2a";
  ctx.fillRect(0, 0, width, height);
  ctx.strokeStyle = "#4fc3f7";
  ctx.lineWidth = 2;
  ctx.beginPath();
  const points = app.wave;
  const n = WAVE_POINTS;
  for (let i = 0; i < points.length; i++) {
    const x = (width * (n - points.length + i)) / n;
    const y = height / 2 - points[i] * (height / 2 - 4);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  }
  ctx.stroke();
}

async function record(site) {
  app.failure = null;
  app.wave = [];
  drawWave();
  const reply = await api("POST", "/api/visit/record", { site });
  if (!reply.ok) { app.failure = { site, message: reply.data.error || `HTTP ${reply.status}` }; renderRecord(); }
}

/** From a RETAKE result to the recording screen, at the first site it asks for. */
function retakeNow() {
  const first = retakeSites(app.state.result)[0];
  app.site = first ? first.site : app.site;
  app.failure = null; app.wave = [];
  show("record");
}

async function finish() {
  $("btn-finish").disabled = true;
  const reply = await api("POST", "/api/visit/finish", {});
  if (reply.ok) { app.state.result = reply.data; show("result"); }
  else { app.failure = { site: app.site, message: reply.data.error || `HTTP ${reply.status}` }; renderRecord(); }
}

// --- result and referral slip ----------------------------------------------------------------
// The top of the result says, in the chosen language, what to do next and what to tell the family;
// the figures the decision came from (probability, threshold, operating point, model provenance)
// are under "Details (for the supervisor)", numbers and dates in the language's own format.

function percent(p) {
  return p === null || p === undefined ? "—" : new Intl.NumberFormat(locale(), { style: "percent" }).format(p);
}

function decimal(x, digits = 2) {
  return x === null || x === undefined ? "—"
    : new Intl.NumberFormat(locale(), { minimumFractionDigits: digits, maximumFractionDigits: digits }).format(x);
}

function number(x) { return new Intl.NumberFormat(locale()).format(x); }

/** "0,29 (29%)" in Portuguese: a probability as the model gives it and as a share. */
function probabilityText(p) { return p === null || p === undefined ? "—" : `${decimal(p)} (${percent(p)})`; }

/** The text of `key.one` or `key.other`, as the language's plural rule says for `days`. */
function inDays(key, days, vars) {
  const form = new Intl.PluralRules(locale()).select(days);
  return t(`${key}.${`${key}.${form}` in window.I18N[app.lang] ? form : "other"}`, { ...vars, days });
}

function siteList(sites) {
  return new Intl.ListFormat(locale(), { style: "long", type: "conjunction" }).format(sites);
}

function cannotAssess(r) { return (r.cannot_assess || []).length > 0; }

/** The sites a RETAKE asks for (failed the gate, or not recorded) with a sentence for each reason. */
function retakeSites(r) {
  const quality = r.quality || {};
  const failed = Object.keys(quality).filter((site) => !quality[site].ok);
  const missing = app.state.guided_sites.filter((site) => !(site in quality));
  return [
    ...failed.map((site) => ({ site, why: (quality[site].reasons || []).map((reason) =>
      `quality.${reason}` in window.I18N[app.lang] ? t(`quality.${reason}`) : t("retake.other")) })),
    ...missing.map((site) => ({ site, why: [t("retake.not_recorded")] })),
  ];
}

/** [{sites, why}]: the sites to retake grouped by what to do about them, so one sentence is read once. */
function sameReasons(retake) {
  const groups = new Map();
  for (const { site, why } of retake) {
    const text = why.join(" ");
    groups.set(text, [...(groups.get(text) || []), site]);
  }
  return [...groups].map(([why, sites]) => ({ sites, why }));
}

/** The sentence that says where to refer: the site's configured place (and how soon), else a generic one. */
function referSentence() {
  const referral = app.state.referral;
  if (!referral) return t("plain.refer_generic");
  return referral.within_days ? inDays("plain.refer_place_days", referral.within_days, { place: referral.place })
    : t("plain.refer_place", { place: referral.place });
}

/** {headline, next, family, retake: [{site, why}], murmur}: the plain words for result r. */
function plainWords(r) {
  const referral = app.state.referral;
  if (cannotAssess(r)) {
    const sites = siteList(r.cannot_assess);
    return {
      headline: t("result.CANNOT_ASSESS"),
      next: referral ? t("plain.cannot_assess_place", { sites, place: referral.place }) : t("plain.cannot_assess_generic", { sites }),
      family: t("plain.cannot_assess_family"), note: referral && referral.note, retake: [],
    };
  }
  if (r.decision === "RETAKE") {
    const retake = retakeSites(r);
    return { headline: t("plain.retake_title", { sites: siteList(retake.map((x) => x.site)) }), next: t("plain.retake"),
             family: t("plain.retake_family"), retake };
  }
  const murmur = r.murmur ? likeliestMurmur(r.murmur) : null;
  const heard = murmur ? t(`plain.murmur.${murmur}`) : null;
  if (r.decision === "REFER") {
    return { headline: t("result.REFER"), next: referSentence(), family: t("plain.refer_family"),
             note: referral && referral.note, retake: [], murmur: heard };
  }
  if (r.decision === "NO_REFER") {
    return { headline: t("result.NO_REFER"), next: t("plain.no_refer"), family: t("plain.no_refer_family"), retake: [], murmur: heard };
  }
  return { headline: t("result.NONE"), next: t("plain.none"), retake: [] };
}

function likeliestMurmur(murmur) {
  const order = ["Present", "Unknown", "Absent"].filter((k) => k in murmur);
  return order.reduce((a, b) => (murmur[b] > murmur[a] ? b : a));
}

function renderResult() {
  const r = app.state.result;
  $("nav-result").disabled = !r;
  if (!r) return;
  $("result-practice").hidden = !r.practice;
  if (r.practice) $("result-practice").textContent = practiceText("practice.result", r.practice);
  const words = plainWords(r);
  const decision = $("result-decision");
  decision.className = "decision " + (cannotAssess(r) ? "CANNOT_ASSESS" : r.decision || "NONE");
  decision.textContent = words.headline;
  decision.dataset.decision = r.decision || "";
  $("plain-next").textContent = words.next;
  $("plain-retake").hidden = words.retake.length === 0;
  $("plain-retake").replaceChildren(...sameReasons(words.retake).map(({ sites, why }) =>
    el("li", {}, el("strong", { textContent: siteList(sites) }), `: ${why}`)));
  $("plain-note").hidden = !words.note;
  $("plain-note").textContent = words.note || "";
  $("plain-family").hidden = !words.family;
  $("plain-family-text").textContent = words.family || "";
  $("plain-murmur").hidden = !words.murmur;
  $("plain-murmur").textContent = words.murmur || "";
  const retake = r.decision === "RETAKE" && !cannotAssess(r);
  $("btn-retake-now").hidden = !retake;
  $("btn-print").hidden = retake;  // nothing to refer yet
  $("btn-new").classList.toggle("primary", !retake);
  $("notice").textContent = app.lang === "en" ? r.disclaimer : t("result.notice");
  renderDetails(r);
  renderSlip(r, words);
}

function renderDetails(r) {
  $("result-probability").textContent = probabilityText(r.probability);
  $("result-threshold").textContent = r.threshold != null ? decimal(r.threshold) : "—";
  $("result-point").textContent = r.operating_point || "—";
  const rule = r.decision === "REFER" || r.decision === "NO_REFER"
    ? t(`details.rule_${r.decision.toLowerCase()}`, { probability: decimal(r.probability), threshold: decimal(r.threshold) })
    : null;
  // the runtime's own reason is English: other languages get the rule in their words, or the plain block above
  $("result-reason").textContent = rule || (app.lang === "en" ? r.reason : retakeReason(r));
  const murmur = r.murmur || null;
  $("result-murmur").hidden = !murmur;
  if (murmur) {
    const order = ["Present", "Unknown", "Absent"].filter((k) => k in murmur);
    $("result-murmur").textContent = t("details.murmur_shares", { shares: order.map((k) => `${t(`murmur.${k}`)} ${percent(murmur[k])}`).join(", ") });
  }
  const referral = app.state.referral;
  $("result-referral").textContent = referral
    ? t("details.referral_set", { place: referral.place, days: referral.within_days ? inDays("details.referral_days", referral.within_days) : "" })
    : t("details.referral_unset");
  const contrib = $("contrib");
  contrib.replaceChildren();
  const entries = Object.entries(r.site_contributions || {});
  const top = Math.max(1e-9, ...entries.map(([, v]) => Math.abs(v)));
  for (const [site, value] of entries) {
    const bar = el("div", { className: "bar" });
    bar.style.width = `${Math.round((Math.abs(value) / top) * 100)}%`;
    contrib.append(el("strong", { textContent: site }), el("div", {}, bar), el("span", { textContent: decimal(value) }));
  }
  const unused = r.unused && r.unused.length ? r.unused : [r.model ? t("result.nothing_unused") : t("result.NONE")];
  $("unused").replaceChildren(...unused.map((u) => el("li", { textContent: u })));
  const model = $("model");
  model.replaceChildren();
  for (const [key, value] of Object.entries(r.model || {})) {
    if (value === null || value === undefined || value === "") continue;
    model.append(el("dt", { textContent: `model.${key}` in window.I18N[app.lang] ? t(`model.${key}`) : key }),
                 el("dd", { textContent: modelValue(key, value) }));
  }
  if (!r.model) model.append(el("dt", { textContent: "—" }), el("dd", { textContent: t("result.NONE") }));
}

/** The sites to retake and why, in the language's words (the details' reason for a RETAKE outside English). */
function retakeReason(r) {
  if (r.decision !== "RETAKE") return t(`result.${r.decision || "NONE"}`);
  return sameReasons(retakeSites(r)).map(({ sites, why }) => `${siteList(sites)}: ${why}`).join(" ");
}

function localDate(text) {
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? String(text) : date.toLocaleString(locale(), { dateStyle: "medium", timeStyle: "short" });
}

function modelValue(key, value) {
  if (key === "graph_sha256") return String(value).slice(0, 16) + "…";
  if (key === "created_utc") return localDate(value);
  const one = (v) => typeof v === "number" ? decimal(v, 3) : String(v);
  if (typeof value === "object") {
    return Object.entries(value).filter(([, v]) => v !== null && v !== undefined)
      .map(([k, v]) => `${k}: ${/_utc$/.test(k) ? localDate(v) : one(v)}`).join(", ");
  }
  return one(value);
}

function renderSlip(r, words) {
  const visit = app.state.visit || {};
  const demo = visit.demographics || {};
  const unknown = t("patient.unknown");
  $("slip-practice").hidden = !r.practice;
  if (r.practice) $("slip-practice").textContent = practiceText("practice.slip", r.practice);
  $("slip-code").textContent = r.patient_code || visit.patient_code || "";
  $("slip-date").textContent = new Date().toLocaleString(locale(), { dateStyle: "medium", timeStyle: "short" });
  $("slip-demographics").textContent = [
    demo.age_group ? t(`age.${demo.age_group}`) : unknown, demo.sex ? t(`sex.${demo.sex}`) : unknown,
    demo.height_cm != null ? `${number(demo.height_cm)} cm` : unknown, demo.weight_kg != null ? `${number(demo.weight_kg)} kg` : unknown,
  ].join(" / ");
  $("slip-decision").textContent = words.headline;
  $("slip-next").textContent = [words.next, ...sameReasons(words.retake).map(({ sites, why }) => `${siteList(sites)}: ${why}`), words.note || ""]
    .filter((x) => x).join(" ");
  $("slip-family-row").hidden = !words.family;
  $("slip-family").textContent = words.family || "";
  $("slip-murmur-row").hidden = !words.murmur;
  $("slip-murmur").textContent = words.murmur ? t(`murmur.${likeliestMurmur(r.murmur)}`) : "";
  $("slip-probability").textContent = probabilityText(r.probability);
  $("slip-sites").textContent = Object.keys(app.state.sites || {}).join(", ");
  $("slip-model").textContent = r.model ? `${r.model.name || ""} ${String(r.model.graph_sha256 || "").slice(0, 12)}` : "—";
}

// --- today and export ----------------------------------------------------------------------

async function loadToday() {
  const reply = await api("GET", "/api/today");
  if (!reply.ok) return;
  const rows = $("today-rows");
  rows.replaceChildren();
  for (const v of reply.data.visits) {
    const status = ["in_progress", "incomplete", "no_decision", "closed_unfinished"].includes(v.status)
      ? t(`today.${v.status}`) : t(`result.${v.status}`);
    const time = new Date(v.created_at).toLocaleTimeString(locale(), { hour: "2-digit", minute: "2-digit" });
    rows.append(el("tr", {},
      el("td", { textContent: v.code }), el("td", { textContent: time }),
      el("td", { textContent: `${v.sites_recorded} / 4` }),
      el("td", { textContent: status, className: `status-${v.status}` })));
  }
  $("today-empty").hidden = reply.data.visits.length > 0;
}

// --- events ----------------------------------------------------------------------------------

function onEvent(event) {
  const s = app.state;
  switch (event.type) {
    case "state": {
      app.state = event;
      if (app.banner === "server") app.banner = null;
      if (event.recording) app.site = event.recording.site;
      renderAll();
      if (app.firstState) return;
      app.firstState = true;
      performance.mark("pcg-first-state");  // what benchmarks/kiosk.py times a page load by
      show(event.result ? "result" : event.visit ? "record" : "patient");
      return;
    }
    case "device": {
      const { type, ...device } = event;
      s.device = device;
      if (event.state === "disconnected") app.banner = "lost";
      else if (event.state === "restarted") { app.banner = "restarted"; app.wave = []; }
      else if (event.state === "reconnected" && app.banner === "lost") {
        app.banner = "back";
        setTimeout(() => { if (app.banner === "back") { app.banner = null; renderBanner(); } }, 5000);
      }
      renderDevice();
      renderBanner();
      return;
    }
    case "battery":
      app.banner = `battery_${event.warning}`;
      app.bannerVars = { pct: event.battery_pct };
      renderBanner();
      return;
    case "visit": adoptVisit(event.visit); return;
    case "recording_started":
      s.busy = "recording"; s.recording = { site: event.site, seconds: event.seconds };
      s.result = null;  // only a RETAKE result lets a site be recorded again: the visit goes on
      app.site = event.site; app.failure = null; app.banner = null;
      renderAll();
      return;
    case "level": onLevel(event); return;
    case "site_done": {
      const { type, ...site } = event;
      s.sites[event.site] = site; s.busy = null; s.recording = null;
      if (app.banner === "back" || app.banner === "restarted") app.banner = null;
      renderAll();
      return;
    }
    case "recording_failed":
      s.busy = null; s.recording = null;
      app.failure = { site: event.site, message: event.message };
      renderAll();
      return;
    case "result": {
      const { type, ...result } = event;
      s.result = result;
      show("result");
      return;
    }
  }
}

function connectEvents() {
  const source = new EventSource("/api/events");
  source.onmessage = (message) => onEvent(JSON.parse(message.data));
  source.onerror = () => { app.banner = "server"; renderBanner(); };  // EventSource retries by itself
  window.kioskEvents = source;
}

// --- start ------------------------------------------------------------------------------------

function start() {
  const saved = localStorage.getItem("pcg-kiosk-lang");
  app.lang = saved || ((navigator.language || "").toLowerCase().startsWith("pt") ? "pt" : "en");
  $("lang").addEventListener("click", () => {
    app.lang = app.lang === "pt" ? "en" : "pt";
    localStorage.setItem("pcg-kiosk-lang", app.lang);
    applyLanguage();
  });
  for (const button of document.querySelectorAll("[data-screen]")) button.addEventListener("click", () => show(button.dataset.screen));
  $("patient-form").addEventListener("submit", submitPatient);
  $("consent").addEventListener("change", () => clearError("consent"));
  $("consent_reuse").addEventListener("change", () => clearError("consent_reuse"));
  for (const id of ["height", "weight"]) $(id).addEventListener("input", () => { $(id).classList.remove("invalid"); clearError($(id).name); });
  $("btn-record").addEventListener("click", () => record(app.site));
  $("btn-retake").addEventListener("click", () => record(app.site));
  $("btn-stop").addEventListener("click", () => api("POST", "/api/visit/cancel", {}));
  $("btn-next").addEventListener("click", () => { app.site = nextSite() || app.site; app.wave = []; drawWave(); renderRecord(); });
  $("btn-skip").addEventListener("click", () => { app.site = nextSite() || app.site; app.wave = []; drawWave(); renderRecord(); });
  $("btn-finish").addEventListener("click", finish);
  $("btn-print").addEventListener("click", () => window.print());
  $("btn-new").addEventListener("click", () => show("patient"));
  $("btn-retake-now").addEventListener("click", retakeNow);
  $("btn-open-continue").addEventListener("click", () => answerOpenVisit(true));
  $("btn-open-close").addEventListener("click", () => answerOpenVisit(false));
  $("btn-unfinished-close").addEventListener("click", () => answerUnfinished(true));
  $("btn-unfinished-back").addEventListener("click", () => answerUnfinished(false));
  $("btn-connect").addEventListener("click", () => api("POST", "/api/device/connect", {}));
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  document.documentElement.lang = app.lang === "pt" ? "pt-BR" : "en";
  connectEvents();
}

document.addEventListener("DOMContentLoaded", start);
