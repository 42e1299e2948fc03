"""The manifest (DESIGN.md contract 5) filled from a pcg-train run: runtime.manifest owns the schema,
this module only gathers the values.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import MISSING, asdict, fields, is_dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from export.source import ExportSource, SourceError
from runtime.manifest import ModelManifest, OperatingPoint
from runtime.metadata import METADATA_FEATURES
from runtime.records import MURMUR_CLASSES, OUTCOME_CLASSES
from runtime.sites import OTHER_SITE, SITES
from trainer.inference import ensemble_thresholds

_OUTPUT_MEANINGS = {
    "outcome_probability": "calibrated probability that the patient should be referred (outcome Abnormal / murmur Present or Unknown)",
    "outcome_logit": "logit of outcome_probability (mean over folds of the Platt-calibrated, crop-averaged logits)",
    "site_weights": "per-site attention weights in site_order, 0 for absent sites, averaged over crops and folds",
    "murmur_probabilities": "P(Present), P(Unknown), P(Absent), averaged over crops and folds",
}
_POINT_DESCRIPTIONS = {
    "cost_optimal": "minimises the PhysioNet 2022 challenge cost on each fold's validation part (mean over folds in logit space)",
    "high_sensitivity": "the lowest of the folds' thresholds that keep sensitivity >= 0.95 on their validation parts",
}


def code_version() -> str:
    """`git describe --always --dirty --tags` of the checkout holding this code, or "unknown"."""
    try:
        result = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else "unknown"


def sites_trained(source: ExportSource) -> tuple[str, ...]:
    """Sites with recordings in the training data (read from the dataset the run names)."""
    data = (source.run or {}).get("settings", {}).get("data")
    if data is None:
        return SITES
    from runtime.formats import FormatError, load_dataset

    try:
        dataset = load_dataset(Path(data))
    except (FormatError, OSError):
        return SITES  # the data moved: claim nothing narrower than the site order
    seen = {r.site if r.site in SITES else OTHER_SITE for p in dataset.patients for r in p.recordings}
    return tuple(s for s in SITES if s in seen)


def _validation_scheme(folds: str) -> str:
    if folds == "lodo":
        return "leave-one-database-out (each database held out in turn; pooled by concatenating the held-out predictions)"
    return f"out-of-fold ({folds}-fold stratified cross-validation; pooled by concatenating the test folds)"


def _metrics(source: ExportSource) -> dict:
    if source.run is None:
        return {"measured_as": "not available: exported from a checkpoint whose run folder has no metrics.json"}
    summary, settings = source.run["summary"], source.run["settings"]
    return {
        "measured_as": _validation_scheme(str(settings.get("folds"))),
        "scope": "the run's cross-validated test predictions of each fold model; the exported fold ensemble itself "
                 "has seen every patient in training and has no held-out figure",
        "pooled": summary.get("pooled", {}),
        "by_group": summary.get("by_group", {}),
        "fold_mean_sd": summary.get("mean_sd", {}),
        "folds": _fold_figures(summary),
        **({"with_batchnorm_adaptation": summary["with_batchnorm_adaptation"]} if "with_batchnorm_adaptation" in summary else {}),
    }


def _fold_figures(summary: dict) -> dict:
    return {name: {k: v for k, v in fold.items() if k in ("n", "auroc", "auroc_ci", "auprc", "cost_optimal", "high_sensitivity")}
            for name, fold in summary.get("folds", {}).items()}


_SAME_SETTINGS = ("data", "format", "frontend", "model", "train")


def _read_lodo_run(source: ExportSource, lodo_dir: Path, flag: str, ignore_seed: bool = False) -> tuple[dict, set, set]:
    """A pcg-train --folds lodo run's metrics.json, checked to share `source`'s settings (all of them, or
    all but the training seed)."""
    path = Path(lodo_dir) / "metrics.json"
    try:
        lodo = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SourceError(f"{flag} {lodo_dir}: cannot read {path.name}: {exc}") from None
    settings = lodo.get("settings", {})
    if str(settings.get("folds")) != "lodo":
        raise SourceError(f"{flag} {lodo_dir}: made with --folds {settings.get('folds')}, not --folds lodo")
    ours, ours_unknown = _comparable((source.run or {}).get("settings", {}))
    theirs, theirs_unknown = _comparable(settings)
    if ignore_seed:
        for side in (ours, theirs):
            if isinstance(side.get("train"), dict):
                side["train"] = {k: v for k, v in side["train"].items() if k != "seed"}
    differing = [k for k in _SAME_SETTINGS if theirs.get(k) != ours.get(k)]
    if differing:
        raise SourceError(f"{flag} {lodo_dir}: its {', '.join(differing)} settings differ from {source.path}'s; "
                          "the leave-one-database-out figures must come from the same configuration"
                          + (" (only the seed may differ)" if ignore_seed else ""))
    return lodo, ours_unknown, theirs_unknown


def _matching_summary(summary: dict, adapted: bool) -> dict:
    """A LODO run's summary as it applies to the exported model. A run made with --adapt-bn scored
    every held-out database after batch-norm adaptation and kept the same models' unadapted AUROCs
    (summary["unadapted"]): an unadapted export gets those (AUROC only; the run's thresholded figures
    were measured adapted, so they are left out), with the adapted ones beside them."""
    if "unadapted" not in summary or adapted:
        return summary
    unadapted = summary["unadapted"]
    return {"pooled": {"auroc": unadapted["auroc"], "auroc_ci": unadapted["auroc_ci"]},
            "by_group": {g: {"auroc": v} for g, v in unadapted.get("by_group", {}).items()},
            "with_batchnorm_adaptation": {
                "pooled": {"auroc": summary["pooled"]["auroc"], "auroc_ci": summary["pooled"]["auroc_ci"]},
                "by_group": {g: {"auroc": b.get("auroc")} for g, b in summary.get("by_group", {}).items()},
                "note": "the same fold models after AdaBN to reference recordings of each held-out database (pcg-train --adapt-bn, "
                        "cross-fitted in 5 parts): what pcg-export --adapt-bn with recordings of a new stethoscope aims at"}}


def _seed_figures(lodo: dict, lodo_dir: Path, adapted: bool) -> dict:
    summary = _matching_summary(lodo["summary"], adapted)
    pooled = summary.get("pooled", {})
    return {"run": str(lodo_dir), "seed": lodo.get("settings", {}).get("train", {}).get("seed"),
            "auroc": pooled.get("auroc"), "auroc_ci": pooled.get("auroc_ci"),
            "by_group_auroc": {g: b.get("auroc") for g, b in summary.get("by_group", {}).items()}}


def lodo_metrics(source: ExportSource, lodo_dir: Path, seed_dirs: tuple[Path, ...] = ()) -> dict:
    """The leave-one-database-out block of the manifest's metrics, from a pcg-train --folds lodo run made
    with the same data, front-end, model and training settings as `source`; SourceError otherwise.
    `seed_dirs`: further LODO runs of the same settings but other seeds, recorded beside it (a single
    run's pooled LODO figure varies with the seed; the spread is part of the evidence)."""
    lodo, ours_unknown, theirs_unknown = _read_lodo_run(source, lodo_dir, "--lodo-run")
    adapted = source.adaptation is not None
    run_adapted = "unadapted" in lodo["summary"]
    summary = _matching_summary(lodo["summary"], adapted)
    seeds = [_seed_figures(lodo, lodo_dir, adapted)] + [
        _seed_figures(_read_lodo_run(source, d, "--lodo-seed-run", ignore_seed=True)[0], d, adapted) for d in seed_dirs]
    spread = {}
    if len(seeds) > 1:
        values = [s["auroc"] for s in seeds if isinstance(s["auroc"], (int, float))]
        spread = {"seeds": seeds, "pooled_auroc_mean": sum(values) / len(values), "pooled_auroc_min": min(values),
                  "pooled_auroc_max": max(values),
                  "note": "the same configuration trained with other seeds; the pooled figure above is the run whose "
                          "seed matches the exported ensemble's"}
    return {
        "measured_as": _validation_scheme("lodo"),
        "scope": "a separate pcg-train run with the exported model's settings, one fold model per held-out database; "
                 "the figure for databases and stethoscopes the model has never heard. The exported ensemble is not these models",
        "batchnorm_adaptation": (f"each held-out database scored after AdaBN to its own reference recordings (pcg-train --adapt-bn "
                                 f"{lodo.get('settings', {}).get('train', {}).get('adapt_bn')}, cross-fitted in 5 parts), as this model "
                                 "was adapted to its stethoscope" if adapted and run_adapted else
                                 "measured without adaptation; this model was adapted to its stethoscope (pcg-export --adapt-bn)" if adapted else
                                 "none: the figures are the unadapted models', as this model is" + (
                                     " (the run's adapted figures are under with_batchnorm_adaptation)" if run_adapted else "")),
        "run": str(lodo_dir), "command": lodo.get("settings", {}).get("command"),
        "settings_not_compared": {"fields the current trainer does not know, recorded by one of the runs": sorted(ours_unknown ^ theirs_unknown),
                                  "recorded by both": sorted(ours_unknown & theirs_unknown)},
        "pooled": summary.get("pooled", {}),
        "by_group": summary.get("by_group", {}),
        "fold_mean_sd": summary.get("mean_sd", {}),
        "folds": _fold_figures(summary),
        **({"with_batchnorm_adaptation": summary["with_batchnorm_adaptation"]} if "with_batchnorm_adaptation" in summary else {}),
        **({"seed_spread": spread} if spread else {}),
    }


def _comparable(settings: dict) -> tuple[dict, set[str]]:
    """Run settings as the current trainer reads them: model, training and augmentation fields a run did
    not record (added to the trainer after it) take the trainer's defaults, as when its checkpoint is
    loaded; fields the current trainer does not know are left out and returned by name."""
    from trainer.augment import AugmentConfig
    from trainer.model import ModelConfig
    from trainer.train import TrainConfig

    unknown: set[str] = set()

    def read(recorded: dict, config, prefix: str) -> dict:
        values = {}
        for f in fields(config):
            default = f.default if f.default is not MISSING else f.default_factory() if f.default_factory is not MISSING else None
            values[f.name] = recorded.get(f.name, asdict(default) if is_dataclass(default) else default)
        unknown.update(f"{prefix}.{name}" for name in recorded if name not in values)
        return values

    out = dict(settings)
    if isinstance(settings.get("model"), dict):
        out["model"] = read(settings["model"], ModelConfig, "model")
    if isinstance(settings.get("train"), dict):
        out["train"] = read(settings["train"], TrainConfig, "train")
        if isinstance(out["train"]["augment"], dict):
            out["train"]["augment"] = read(out["train"]["augment"], AugmentConfig, "train.augment")
        out["train"].pop("adapt_bn", None)  # how held-out databases were scored, not how the models were trained
    return json.loads(json.dumps(out)), unknown  # tuples and lists alike


def _training_data(source: ExportSource) -> dict:
    if source.run is None:
        return {"folds": [d.name for d in source.fold_dirs]}
    settings, data = source.run["settings"], source.run.get("data", {})
    return {
        "dataset": settings.get("data"), "format": settings.get("format"),
        "patients": data.get("patients_used"), "recordings": data.get("recordings_found"),
        "unit": "recording (PhysioNet 2016 has no subject ids)" if settings.get("format") == "physionet2016" else "patient",
        "folds": settings.get("folds"), "fold_models": [d.name for d in source.fold_dirs],
        "metadata": settings.get("metadata"),
        "parameters_per_fold_model": settings.get("parameters"),
        **({"population": data["population"]} if data.get("population") else {}),
    }


def _out_of_fold(source: ExportSource) -> tuple[np.ndarray, np.ndarray] | None:
    """The run's pooled out-of-fold (test) probabilities and binary labels, when every fold saved them."""
    probabilities, labels = [], []
    for fold in source.fold_dirs:
        path = fold / "outcome.npz"
        if not path.is_file():
            return None
        with np.load(path) as saved:
            probabilities.append(saved["test_probabilities"])
            y = saved["test_labels"]
            labels.append(y if source.task == "outcome" else (y <= 1).astype(np.int64))  # murmur: Present/Unknown refer
    return np.concatenate(probabilities), np.concatenate(labels)


def _operating_points(source: ExportSource) -> dict[str, OperatingPoint]:
    """Each ensemble threshold with the sensitivity and specificity it gives on the run's pooled
    out-of-fold predictions (the fold models' test predictions: cross-validated figures)."""
    pooled = (source.run or {}).get("summary", {}).get("pooled", {})
    oof = _out_of_fold(source)
    points = {}
    for name, threshold in ensemble_thresholds(source.checkpoints).items():
        sensitivity, specificity = pooled.get(name, {}).get("sensitivity"), pooled.get(name, {}).get("specificity")
        if oof is not None:
            p, y = oof
            refer = p >= threshold
            sensitivity = float(refer[y == 1].mean()) if (y == 1).any() else None
            specificity = float((~refer[y == 0]).mean()) if (y == 0).any() else None
        points[name] = OperatingPoint(threshold=float(threshold), description=_POINT_DESCRIPTIONS.get(name, ""),
                                      sensitivity=sensitivity, specificity=specificity)
    if oof is not None:
        p, y = oof
        for prevalence in PROGRAMME_PREVALENCES:
            threshold = _cost_optimal_at(p, y, prevalence)
            if threshold is not None:
                refer = p >= threshold
                points[f"cost_optimal_prevalence_{round(100 * prevalence)}"] = OperatingPoint(
                    threshold=threshold,
                    description=f"minimises the challenge cost on the pooled out-of-fold predictions reweighted to "
                                f"{100 * prevalence:g} % abnormal (a community programme's prevalence, not the data's)",
                    sensitivity=float(refer[y == 1].mean()), specificity=float((~refer[y == 0]).mean()))
    return points


PROGRAMME_PREVALENCES = (0.10, 0.05)


def _cost_optimal_at(p: np.ndarray, y: np.ndarray, prevalence: float) -> float | None:
    """The threshold on out-of-fold probabilities `p` that minimises the 2022 challenge cost when the
    abnormal children weigh as if they were `prevalence` of the patients (counts reweighted)."""
    from trainer.metrics import outcome_cost

    n1, n0 = int((y == 1).sum()), int((y == 0).sum())
    if not n1 or not n0:
        return None
    total = n1 + n0
    w1, w0 = prevalence * total / n1, (1 - prevalence) * total / n0
    best = None
    for threshold in np.unique(np.concatenate([p, [1.0 + 1e-9]])):
        refer = p >= threshold
        tp, fn = w1 * refer[y == 1].sum(), w1 * (~refer[y == 1]).sum()
        fp, tn = w0 * refer[y == 0].sum(), w0 * (~refer[y == 0]).sum()
        cost = outcome_cost(tp, fp, fn, tn)
        if best is None or cost < best[0]:
            best = (cost, float(min(threshold, 1.0)))
    return best[1]


def operating_curve(source: ExportSource) -> list[dict] | None:
    """For target sensitivities 0.50 to 0.99: the highest threshold whose pooled out-of-fold
    sensitivity reaches it, with its specificity (a programme picks its point from these)."""
    oof = _out_of_fold(source)
    if oof is None:
        return None
    p, y = oof
    if not (y == 1).any() or not (y == 0).any():
        return None
    curve = []
    for target in np.round(np.arange(0.50, 0.995, 0.01), 2):
        candidates = [t for t in np.unique(p) if (p[y == 1] >= t).mean() >= target]
        threshold = float(max(candidates)) if candidates else float(p.min())
        refer = p >= threshold
        curve.append({"target_sensitivity": float(target), "threshold": threshold,
                      "sensitivity": float(refer[y == 1].mean()), "specificity": float((~refer[y == 0]).mean())})
    return curve


def _inference(source: ExportSource) -> dict:
    k, folds = source.n_crops, len(source.checkpoints)
    aggregation = ("mean over the crops of P(Present) + P(Unknown), then its logit" if source.task == "murmur"
                   else "mean over the crops of the outcome logit")
    return {
        "in_graph": "crop averaging, fold ensemble and Platt calibration are inside the graph; the runtime makes the crops",
        "repeat_rule": "per present site, the longest recording at that site",
        "crop_rule": "n_crops windows of clip_frames frames starting at round(linspace(0, T - clip_frames, n_crops)) "
                     "(all at 0 when T <= clip_frames); a recording shorter than clip_frames is tiled (repeated end "
                     "to start) to fill the crop; crop k of a patient holds window k of every site; absent sites are zeros "
                     "with site_mask 0 (trainer/crops.py evaluation_crops)",
        "n_crops": k,
        "clip_frames": source.clip_frames,
        "crop_aggregation": aggregation,
        "ensemble": {"models": folds, "folds": [d.name for d in source.fold_dirs],
                     "combination": "mean of the folds' Platt-calibrated logits, then sigmoid"},
        "calibration": {"method": "Platt scaling per fold, fitted on that fold's validation part",
                        "a_b": [[c["platt"]["a"], c["platt"]["b"]] for c in source.checkpoints]},
        "operating_points": "each fold's threshold mapped to logit space and averaged over the folds",
        "metadata_encoding": "runtime.metadata.encode_metadata with metadata_stats (the first fold's training statistics); "
                             "folds trained with other statistics re-standardize inside the graph",
    }


def build_manifest(source: ExportSource, commands: tuple[str, ...], variant: dict | None = None,
                   lodo: dict | None = None, weak: dict | None = None) -> ModelManifest:
    """The manifest for `source`'s float graph; `variant` (e.g. int8 details) goes into `inference`,
    `lodo` (lodo_metrics) into `metrics["leave_one_database_out"]` and its command into `commands`."""
    frontend = source.frontend
    c = source.model_config
    batch = ["batch"]
    inputs = {
        "x": {"shape": [*batch, source.n_crops, c["n_sites"], c["n_freq"], source.clip_frames], "dtype": "float32",
              "meaning": "evaluation crops of each site's pooled log spectrogram (runtime.dsp), in site_order"},
        "site_mask": {"shape": [*batch, c["n_sites"]], "dtype": "float32", "meaning": "1 where the site was recorded"},
        "metadata": {"shape": [*batch, c["metadata_dim"]], "dtype": "float32",
                     "meaning": "runtime.metadata vector" if source.architecture != "primary" else "ignored (zeros are fine)"},
    }
    outputs = {name: {"shape": [*batch, c["n_sites"]] if name == "site_weights" else [*batch, 3] if name == "murmur_probabilities" else batch,
                      "meaning": _OUTPUT_MEANINGS[name]} for name in source.graph.output_names}
    class_names = {"outcome": list(OUTCOME_CLASSES)}
    if "murmur_probabilities" in source.graph.output_names:
        class_names["murmur"] = list(MURMUR_CLASSES)
    uses_metadata = source.architecture != "primary"
    inference = _inference(source)
    if source.adaptation:
        inference = {**inference, "batchnorm_adaptation": source.adaptation}
    murmur_metrics, murmur_command = {}, None
    if source.murmur is not None:
        from export.source import MURMUR_HEAD_RULE

        murmur_run = source.murmur.run or {}
        inference = {**inference, "murmur_head": {
            "run": source.murmur.run_dir.name if source.murmur.run_dir else str(source.murmur.path),
            "folds": len(source.murmur.fold_dirs), "architecture": source.murmur.architecture, "rule": MURMUR_HEAD_RULE}}
        murmur_metrics = {"murmur_head": {**_metrics(source.murmur), "rule": MURMUR_HEAD_RULE}}
        murmur_command = murmur_run.get("settings", {}).get("command")
    if variant:
        inference = {**inference, "variant": variant}
    name = source.run_dir.name if source.path.is_dir() or source.run_dir is None else f"{source.run_dir.name}/{source.fold_dirs[0].name}"
    training_command = (source.run or {}).get("settings", {}).get("command")
    manifest = ModelManifest(
        model_name=name, task=source.task, architecture=source.architecture,
        frontend=frontend.to_dict(), frontend_hash=frontend.config_hash(),
        inputs=inputs, outputs=outputs, class_names=class_names,
        operating_points=_operating_points(source), default_operating_point="cost_optimal",
        inference=inference, training_data=_training_data(source),
        metrics={**_metrics(source), **murmur_metrics, **({"leave_one_database_out": lodo} if lodo else {}),
                 **({"operating_curve": curve} if (curve := operating_curve(source)) else {}),
                 **({"weak_model": weak} if weak else {})},
        created_utc=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), code_version=code_version(),
        sites_trained=sites_trained(source),
        metadata_features=METADATA_FEATURES if uses_metadata else (),
        metadata_stats=source.metadata_stats.to_dict() if uses_metadata else {},
        commands=tuple(x for x in (training_command, murmur_command, (lodo or {}).get("command"), *commands) if x),
        graph_sha256="0" * 64,  # embed_manifest replaces it with the real hash
    )
    return manifest
