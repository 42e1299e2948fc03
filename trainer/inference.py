"""The whole inference procedure as one exportable graph: crop averaging, fold ensemble, calibration.

    inputs   x [B, K, 5, F, clip_frames]  K crops per patient, made by trainer.crops.evaluation_crops
                                          (the window rule is in trainer/crops.py and goes into the manifest)
             site_mask [B, 5], metadata [B, METADATA_DIM]
    per fold model i (its own checkpoint):
             z_i = mean over the K crops of the outcome logit     (murmur task: logit of the mean over
                                                                   crops of P(Present) + P(Unknown))
             c_i = a_i * z_i + b_i                                 (Platt, fitted on fold i's validation part)
    outputs  outcome_logit = mean_i c_i, outcome_probability = sigmoid(outcome_logit),
             site_weights = mean over folds and crops, murmur_probabilities = mean over folds and crops

Ensemble operating points: each fold's threshold mapped to logit space and averaged, or for the
high-sensitivity point the lowest fold threshold taken (`ensemble_thresholds`); each fold's was
chosen on its own fold's validation data only.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import torch
from torch import nn

from runtime.metadata import METADATA_FEATURES, Z_CLIP, MetadataStats
from trainer.model import ModelConfig, ScreeningModel


class EnsembleGraph(nn.Module):
    def __init__(self, models: list[ScreeningModel], platt: list[tuple[float, float]]):
        super().__init__()
        if not models or len(models) != len(platt):
            raise ValueError("an ensemble needs at least one model and one (a, b) Platt pair per model")
        self.models = nn.ModuleList(m.eval() for m in models)
        self.register_buffer("platt_a", torch.tensor([a for a, _ in platt], dtype=torch.float32))
        self.register_buffer("platt_b", torch.tensor([b for _, b in platt], dtype=torch.float32))
        self.task = models[0].config.task

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.models[0].config.output_names

    def forward(self, x: torch.Tensor, site_mask: torch.Tensor, metadata: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b, k, s, f, t = x.shape
        flat_x = x.reshape(b * k, s, f, t)
        flat_mask = site_mask.unsqueeze(1).expand(b, k, s).reshape(b * k, s)
        flat_meta = metadata.unsqueeze(1).expand(b, k, metadata.shape[1]).reshape(b * k, -1)
        calibrated, weights, murmurs = [], [], []
        for i, model in enumerate(self.models):  # a fixed number of models: unrolled in the graph
            outputs = model(flat_x, flat_mask, flat_meta)
            weights.append(outputs[2].reshape(b, k, s).mean(dim=1))
            if self.task != "outcome":
                murmurs.append(outputs[3].reshape(b, k, 3).mean(dim=1))
            if self.task == "murmur":
                refer = (murmurs[-1][:, 0] + murmurs[-1][:, 1]).clamp(1e-6, 1.0 - 1e-6)
                logit = torch.log(refer) - torch.log1p(-refer)
            else:
                logit = outputs[1].reshape(b, k).mean(dim=1)
            calibrated.append(self.platt_a[i] * logit + self.platt_b[i])
        outcome_logit = torch.stack(calibrated, dim=0).mean(dim=0)
        result = (torch.sigmoid(outcome_logit), outcome_logit, torch.stack(weights, dim=0).mean(dim=0))
        if murmurs:
            result = result + (torch.stack(murmurs, dim=0).mean(dim=0),)
        return result


class WithMurmurHead(nn.Module):
    """An outcome ensemble and a murmur-task ensemble as one graph: the outcome's three outputs
    (the referral decision is theirs alone) and the murmur ensemble's class probabilities as a
    fourth, murmur_probabilities. Both read the same inputs; the murmur folds must have been built
    with the outcome's metadata statistics (ensemble_from(..., given=...))."""

    def __init__(self, outcome: EnsembleGraph, murmur: EnsembleGraph):
        super().__init__()
        if outcome.task != "outcome" or murmur.task != "murmur":
            raise ValueError(f"expected an outcome ensemble and a murmur ensemble, got {outcome.task} and {murmur.task}")
        self.outcome, self.murmur = outcome, murmur
        self.task = "outcome"
        self.eval()  # the exporter restores the mode it found, recursively: it must find eval

    @property
    def output_names(self) -> tuple[str, ...]:
        return (*self.outcome.output_names, "murmur_probabilities")

    def forward(self, x: torch.Tensor, site_mask: torch.Tensor, metadata: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (*self.outcome(x, site_mask, metadata), self.murmur(x, site_mask, metadata)[3])


def load_checkpoint(path: Path) -> tuple[ScreeningModel, dict]:
    """A fold's model.pt -> (model in eval mode, the checkpoint dict)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    model = ScreeningModel(ModelConfig(**checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model"])
    return model.eval(), checkpoint


class Restandardized(nn.Module):
    """A fold model fed metadata z-scores made with `given` stats while it was trained with `own`."""

    def __init__(self, model: nn.Module, given: MetadataStats, own: MetadataStats):
        super().__init__()
        self.model, self.config = model, model.config
        dim = len(METADATA_FEATURES)
        scale, shift = torch.ones(dim), torch.zeros(dim)
        numeric, indicator = torch.zeros(dim, dtype=torch.bool), torch.zeros(dim, dtype=torch.long)
        for name, g_mean, g_std, o_mean, o_std in (
            ("height", given.height_mean, given.height_std, own.height_mean, own.height_std),
            ("weight", given.weight_mean, given.weight_std, own.weight_mean, own.weight_std),
        ):
            i = METADATA_FEATURES.index(f"{name}_z")
            scale[i], shift[i] = g_std / o_std, (g_mean - o_mean) / o_std
            numeric[i], indicator[i] = True, METADATA_FEATURES.index(f"{name}_missing")
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)
        self.register_buffer("numeric", numeric)
        self.register_buffer("indicator", indicator)

    def forward(self, x: torch.Tensor, site_mask: torch.Tensor, metadata: torch.Tensor):
        # a missing value encodes as 0 with its indicator set, and must stay 0
        present = self.numeric & (metadata.index_select(1, self.indicator) < 0.5)
        z = (metadata * self.scale + self.shift).clamp(-Z_CLIP, Z_CLIP)
        return self.model(x, site_mask, torch.where(present, z, metadata))


def ensemble_from(loaded: list[tuple[ScreeningModel, dict]], given: MetadataStats | None = None) -> EnsembleGraph:
    """Fold models and their checkpoints as one EnsembleGraph. One metadata vector feeds every fold,
    encoded with `given` statistics (default: the FIRST fold's, the ones a manifest states); a fold
    trained with other statistics is wrapped in Restandardized so it sees z-scores exactly as in
    its own training."""
    given = given or MetadataStats.from_dict(loaded[0][1]["metadata_stats"])
    models = []
    for model, checkpoint in loaded:
        own = MetadataStats.from_dict(checkpoint["metadata_stats"])
        uses_metadata = checkpoint["model_config"]["metadata_path"] != "primary"
        models.append(Restandardized(model, given, own).eval() if uses_metadata and own != given else model)
    return EnsembleGraph(models, [(c["platt"]["a"], c["platt"]["b"]) for _, c in loaded]).eval()


def load_ensemble(run_dir: Path) -> tuple[EnsembleGraph, list[dict]]:
    """Every <run_dir>/*/model.pt (a pcg-train run) as one EnsembleGraph (see ensemble_from)."""
    paths = sorted(Path(run_dir).glob("*/model.pt"))
    if not paths:
        raise FileNotFoundError(f"{run_dir}: no */model.pt checkpoints (is this a pcg-train --out folder?)")
    loaded = [load_checkpoint(p) for p in paths]
    return ensemble_from(loaded), [c for _, c in loaded]


#: Operating points whose promise is a floor (sensitivity >= 0.95) take the lowest fold threshold, so
#: every fold model keeps its validation sensitivity at the ensemble's threshold; the others average.
LOWEST_THRESHOLD_POINTS = ("high_sensitivity",)


def ensemble_thresholds(checkpoints: list[dict]) -> dict[str, float]:
    """Each named operating point in the ensemble: the folds' thresholds averaged in logit space, or,
    for a sensitivity floor (LOWEST_THRESHOLD_POINTS), the lowest of them."""
    def logit(p: float) -> float:
        p = min(max(p, 1e-6), 1 - 1e-6)
        return math.log(p / (1 - p))

    out = {}
    for name in checkpoints[0]["thresholds"]:
        logits = [logit(c["thresholds"][name]) for c in checkpoints]
        z = min(logits) if name in LOWEST_THRESHOLD_POINTS else sum(logits) / len(logits)
        out[name] = 1.0 / (1.0 + math.exp(-z))
    return out


def export_onnx(graph: EnsembleGraph, example_inputs: tuple[torch.Tensor, ...]) -> bytes:
    """Serialized ONNX (opset 17, dynamic batch) of the ensemble graph; the manifest is export/'s job."""
    buffer = io.BytesIO()
    names = ("x", "site_mask", "metadata")
    torch.onnx.export(graph, example_inputs, buffer, dynamo=False, opset_version=17, input_names=list(names),
                      output_names=list(graph.output_names),
                      dynamic_axes={n: {0: "batch"} for n in (*names, *graph.output_names)})
    return buffer.getvalue()
