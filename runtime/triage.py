"""Triage: what the quality gate said about each site and what the model said about the patient,
turned into REFER / NO_REFER / RETAKE with the reason, at a named operating point of the manifest.

Two rules are decided here and nowhere else:

- Sites the model never heard in training. A model trained on PhysioNet 2016 knows one slot only,
  "Phc" (recordings of unknown location). Its weights are shared across sites, but the site
  embeddings of AV, PV, TV and MV were never trained. So each recorded site is then scored on its
  own as an unknown-location recording, the way the model was evaluated, and the patient's logit is
  the mean of the sites' logits; the per-site probabilities are the site contributions. The result
  says so (`unused`).
- RETAKE. When the quality gate fails any site, the decision is RETAKE with the gate's reasons; the
  probability on what there is is still given, never hidden.
- Cannot assess. A site that failed the gate on its first recording and on every retake allowed
  (the caller counts them: runtime.screening.MAX_RETAKES_PER_SITE) is not asked for again: the
  reason is CANNOT_ASSESS ("cannot assess: refer for clinical auscultation") with the sites and the
  gate's last sentences, and `cannot_assess` names the sites. The decision stays RETAKE, because
  DESIGN.md contract 6 enumerates REFER, NO_REFER and RETAKE (the store checks them and pcg-eval
  reads them); `cannot_assess` is how a program tells it from a retake to do.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Mapping

import numpy as np

from runtime.dsp import FrontEndConfig, assemble_patient
from runtime.manifest import DISCLAIMER, ModelManifest
from runtime.records import Demographics
from runtime.sites import SITES

DECISIONS = ("REFER", "NO_REFER", "RETAKE")
CANNOT_ASSESS = "cannot assess: refer for clinical auscultation"
UNKNOWN_SITE = "Phc"


@dataclass(frozen=True)
class Score:
    """The model's view of one patient."""

    probability: float
    logit: float
    site_contributions: dict[str, float]  # per-site weight (fusion) or per-site probability (scored alone)
    contribution_kind: str  # "fusion_weight" or "site_probability"
    murmur: dict[str, float] | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class TriageResult:
    decision: str | None  # one of DECISIONS; None only when no model is loaded
    reason: str
    probability: float | None = None
    site_contributions: dict[str, float] = field(default_factory=dict)
    contribution_kind: str | None = None
    operating_point: str | None = None
    threshold: float | None = None
    model: dict | None = None  # name, graph_sha256, provider, provenance summary
    unused: tuple[str, ...] = ()  # what the model could not use, in sentences
    quality: dict[str, dict] = field(default_factory=dict)  # site -> SiteQuality.to_dict()
    murmur: dict[str, float] | None = None
    cannot_assess: tuple[str, ...] = ()  # sites that failed the quality gate on every try: refer, do not retake
    disclaimer: str = DISCLAIMER

    def to_dict(self) -> dict:
        data = asdict(self)
        data["unused"], data["cannot_assess"] = list(self.unused), list(self.cannot_assess)
        return data


def model_summary(manifest: ModelManifest, provider: str | None = None, trust=None) -> dict:
    """The provenance a result shows: which model, trained on what, measured how, who vouches for it
    (`trust`: runtime.signing.Trust, from Model.trust)."""
    pooled = {}
    for label, block in _metric_blocks(manifest.metrics):
        auroc = block.get("auroc") if isinstance(block, dict) else None
        if isinstance(auroc, (int, float)):
            pooled[label] = round(float(auroc), 3)
    lodo = manifest.metrics.get("leave_one_database_out") if isinstance(manifest.metrics, dict) else None
    spread = lodo.get("seed_spread") if isinstance(lodo, dict) else None
    if isinstance(spread, dict) and "pooled_auroc_min" in spread:
        pooled["leave-one-database-out over seeds"] = (
            f"{spread['pooled_auroc_min']:.3f}-{spread['pooled_auroc_max']:.3f} (mean {spread['pooled_auroc_mean']:.3f}, "
            f"{len(spread['seeds'])} seeds)")
    adaptation = manifest.inference.get("batchnorm_adaptation") if isinstance(manifest.inference, dict) else None
    return {
        "name": manifest.model_name,
        "graph_sha256": manifest.graph_sha256,
        "adapted_to": ({"recordings": adaptation.get("recordings_used"), "patients": adaptation.get("patients"),
                        "folder": adaptation.get("folder"), "adapted_utc": adaptation.get("adapted_utc")}
                       if isinstance(adaptation, dict) else None),
        "created_utc": manifest.created_utc,
        "task": manifest.task,
        "architecture": manifest.architecture,
        "training_data": manifest.training_data.get("dataset") if isinstance(manifest.training_data, dict) else None,
        "auroc": pooled,
        "provider": provider,
        "trust": trust.describe() if trust is not None else None,
    }


def _metric_blocks(metrics: dict):
    """(label, pooled metrics) for each cross-validation block the manifest carries."""
    if not isinstance(metrics, dict):
        return
    if isinstance(metrics.get("pooled"), dict):
        yield metrics.get("measured_as", "cross-validated").split(" (")[0], metrics["pooled"]
    for name, block in metrics.items():
        if isinstance(block, dict) and isinstance(block.get("pooled"), dict):
            label = block.get("measured_as", name).split(" (")[0]
            # a second head (pcg-export --murmur-run) is measured the same way: say whose figure it is
            yield (f"murmur head, {label}" if name == "murmur_head" else label), block["pooled"]


def model_limits(manifest: ModelManifest, demographics: Demographics | None, sites: list[str], trust=None) -> list[str]:
    """Sentences for the operator: what was recorded that this model cannot use, a model exported
    below the quality floor (pcg-export --allow-weak-model), and a model nobody this box trusts
    vouches for (`trust`: runtime.signing.Trust; allowed only explicitly, see runtime.cli)."""
    notes = []
    if trust is not None and not trust.trusted:
        notes.append(f"untrusted model ({trust.describe()}): it screens only because the operator allowed it "
                     "explicitly; its thresholds and statistics may have been changed")
    weak = manifest.metrics.get("weak_model") if isinstance(manifest.metrics, dict) else None
    if isinstance(weak, dict):
        notes.append(f"weak model: its cross-validated AUROC ({weak.get('pooled_auroc', float('nan')):.2f}) is below "
                     f"{weak.get('threshold', 0.6):.2f}; it was exported only by explicit override and is not fit for screening decisions")
    notes += outside_population(manifest, demographics)
    if not manifest.uses_metadata:
        notes.append("the model was trained without demographics: age group, sex, height, weight and pregnancy "
                     "do not change its result")
    elif demographics is not None:
        unknown = [name.replace("_cm", "").replace("_kg", "").replace("_", " ")
                   for name, value in asdict(demographics).items() if value is None and name != "pregnant"]
        if unknown:
            notes.append(f"not given: {', '.join(unknown)}; the model used its encoding for a missing value instead")
    untrained = [s for s in sites if s not in manifest.sites_trained]
    if untrained:
        if set(manifest.sites_trained) == {UNKNOWN_SITE}:
            notes.append(f"the model was trained on recordings of unknown chest location only: {', '.join(untrained)} "
                         "were each scored as such a recording and the patient's score is their mean")
        else:
            notes.append(f"the model never heard {', '.join(untrained)} in training: their input may be less reliable")
    return notes


FEW_IN_TRAINING = 30  # fewer patients like this one in training: the result is an extrapolation


def outside_population(manifest: ModelManifest, demographics: Demographics | None) -> list[str]:
    """A warning for a patient from a group the model saw little or nothing of in training (an adult,
    a neonate, a pregnant patient for a model trained on children), from the manifest's
    training_data["population"] counts; [] when the manifest has none or the group is well covered."""
    population = manifest.training_data.get("population") if isinstance(manifest.training_data, dict) else None
    if not isinstance(population, dict) or demographics is None:
        return []
    total = population.get("patients", 0)
    warnings = []
    ages = population.get("age_group", {})
    group = demographics.age_group
    if group is not None and ages.get(group, 0) < FEW_IN_TRAINING:
        seen = ages.get(group, 0)
        warnings.append(f"outside the population the model was trained on: {'no' if seen == 0 else f'only {seen}'} "
                        f"{group.lower()} patient{'s' if seen != 1 else ''} among its {total}; this result is an "
                        "extrapolation: rely on clinical auscultation")
    if demographics.pregnant and population.get("pregnant", 0) < FEW_IN_TRAINING:
        seen = population.get("pregnant", 0)
        warnings.append(f"outside the population the model was trained on: {'no' if seen == 0 else f'only {seen}'} "
                        f"pregnant patient{'s' if seen != 1 else ''} among its {total}; this result is an "
                        "extrapolation: rely on clinical auscultation")
    return warnings


def scores_sites_alone(manifest: ModelManifest) -> bool:
    """True when each site is scored on its own (the model knows unknown-location recordings only)."""
    return set(manifest.sites_trained) == {UNKNOWN_SITE}


def score_site(model, features: np.ndarray, demographics: Demographics | None, config: FrontEndConfig):
    """One site scored alone as an unknown-location recording (see the module docstring)."""
    return model.predict(assemble_patient([(UNKNOWN_SITE, 0, features)], config), demographics)


def score_patient(model, site_features: Mapping[str, np.ndarray], demographics: Demographics | None,
                  config: FrontEndConfig, scored: Mapping[str, object] | None = None) -> Score:
    """Run `model` (runtime.inference.Model) on one patient's per-site features [n_freq, T].
    `scored`: sites already scored alone (score_site) while the next site was being recorded."""
    sites = [s for s in SITES if s in site_features]
    if not sites:
        raise ValueError("no site has audio to score")
    manifest = model.manifest
    alone = scores_sites_alone(manifest) and any(s != UNKNOWN_SITE for s in sites)
    if not alone:
        tensor = assemble_patient(((s, 0, site_features[s]) for s in sites), config)
        prediction = model.predict(tensor, demographics)
        contributions = {s: float(prediction.site_contributions.get(s, 0.0)) for s in sites}
        return Score(float(prediction.probability), float(prediction.logit), contributions, "fusion_weight",
                     prediction.murmur)
    scored = dict(scored or {})
    todo = [s for s in sites if s not in scored]
    if todo:
        tensors = [assemble_patient([(UNKNOWN_SITE, 0, site_features[s])], config) for s in todo]
        scored.update(zip(todo, model.predict_batch(tensors, [demographics] * len(tensors))))
    predictions = [scored[s] for s in sites]
    logits = [float(p.logit) for p in predictions]
    mean_logit = float(np.mean(logits))
    murmur = None
    if all(p.murmur for p in predictions):
        murmur = {k: float(np.mean([p.murmur[k] for p in predictions])) for k in predictions[0].murmur}
    return Score(_sigmoid(mean_logit), mean_logit, {s: float(p.probability) for s, p in zip(sites, predictions)},
                 "site_probability", murmur)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def operating_point(manifest: ModelManifest, name: str | None = None) -> tuple[str, float]:
    """(name, threshold) of the named operating point, or the manifest's default."""
    name = name or manifest.default_operating_point
    if name not in manifest.operating_points:
        raise ValueError(f"operating point {name!r} is not in the model's manifest; it has "
                         f"{', '.join(sorted(manifest.operating_points))}")
    return name, float(manifest.operating_points[name].threshold)


def decide(score: Score | None, quality: Mapping[str, object], manifest: ModelManifest | None,
           point: str | None = None, *, missing_sites: tuple[str, ...] = (), cannot_assess: tuple[str, ...] = (),
           notes: list[str] | None = None, model_info: dict | None = None, stored: bool = True) -> TriageResult:
    """The triage for one patient. `quality` maps site -> runtime.quality.SiteQuality;
    `missing_sites` are guided sites that were not recorded at all (a RETAKE); `cannot_assess` are
    sites whose latest recording failed the gate after every retake allowed (the result is
    CANNOT_ASSESS, not another retake); `stored` says whether the recordings were kept (no store,
    or no consent: not)."""
    quality_dicts = {s: q.to_dict() for s, q in quality.items()}
    failed = {s: q for s, q in quality.items() if not q.ok}
    retake_reasons = [f"retake {s}: {'; '.join(q.messages) or ', '.join(q.reasons)}" for s, q in failed.items()]
    retake_reasons += [f"{s} was not recorded" for s in missing_sites]
    common = dict(quality=quality_dicts, unused=tuple(notes or ()), model=model_info)
    if score is not None:
        common.update(probability=score.probability, site_contributions=score.site_contributions,
                      contribution_kind=score.contribution_kind, murmur=score.murmur)
    if manifest is not None and score is not None:
        name, threshold = operating_point(manifest, point)
        common.update(operating_point=name, threshold=threshold)
    if cannot_assess:
        last = "; ".join(f"{s}: {'; '.join(quality[s].messages) or ', '.join(quality[s].reasons)}" for s in cannot_assess)
        reason = f"{CANNOT_ASSESS} ({', '.join(cannot_assess)} failed the quality check on every retake; last: {last})"
        return TriageResult("RETAKE", reason=reason, cannot_assess=tuple(cannot_assess), **common)
    if retake_reasons:
        return TriageResult("RETAKE", reason="; ".join(retake_reasons), **common)
    if manifest is None or score is None:
        kept = "the recordings are stored" if stored else "nothing was stored"
        return TriageResult(None, reason=f"no model is loaded: no screening decision was made ({kept})", **common)
    name, threshold = common["operating_point"], common["threshold"]
    if score.probability >= threshold:
        return TriageResult("REFER", reason=f"probability {score.probability:.2f} is at or above the {name} "
                                            f"threshold {threshold:.2f}: refer to a specialist", **common)
    return TriageResult("NO_REFER", reason=f"probability {score.probability:.2f} is below the {name} threshold "
                                           f"{threshold:.2f}: no referral needed", **common)
