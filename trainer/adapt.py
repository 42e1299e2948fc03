"""Adapting a trained model to a stethoscope it never heard, from a few of its recordings (AdaBN).

    adapt_batchnorm(model, recordings, clip_frames, n_crops) -> a copy of the model

A batch-normalised CNN keeps the mean and variance of every channel as seen in training, on the
training stethoscopes. A new stethoscope shifts those statistics (another microphone, chest piece
and noise floor), so every later layer sees features off the scale it was trained on, and the
scores drift: their ranking inside the new device mostly survives, their level does not. AdaBN
(Li et al., "Revisiting batch normalization for practical domain adaptation", 2016) re-estimates
those statistics on recordings from the new device and changes nothing else.

The recordings are cropped exactly as at inference (trainer.crops: `n_crops` evenly spaced windows
of `clip_frames`, short recordings tiled), each crop passes the encoder once, and every batch-norm
layer takes the plain average over all crops (momentum None). adapt_batchnorm reads no labels, but
the class mix of the recordings enters the statistics: a reference of people without heart disease
("healthy") aligned devices best, an unselected population less, abnormal recordings least
(trainer/STATUS.md, "Adapting to the stethoscope"). pcg-train --adapt-bn picks the references by
these rules (reference_rows, adaptation_parts) and checks there are enough (adaptation_shortfalls).

Torch is imported only to adapt, so pcg-train can check its options without it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np

from trainer.crops import crop, window_starts

#: Fewer recordings than this are refused; a few dozen give steadier statistics (pcg-export warns below RECOMMENDED_RECORDINGS).
MIN_RECORDINGS = 3
RECOMMENDED_RECORDINGS = 20


#: A database held out of training is cross-fitted in this many parts of itself.
ADAPTATION_PARTS = 5


class AdaptationError(ValueError):
    """The model or the recordings cannot be adapted; the message says why."""


def adaptation_parts(labels: np.ndarray, adaptation: str, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cross-fitting for adapted_predictions: (scored rows, rows whose recordings adapt the model)
    for each of ADAPTATION_PARTS random parts. unlabelled: the adaptation rows are every example
    outside the part (labels unread). healthy: only the normal ones outside it (a reference of
    children without heart disease, as a team commissioning a stethoscope would record); the normal
    examples are dealt round the parts, so every part leaves the same number of them."""
    rng = np.random.default_rng(seed)
    part = np.empty(len(labels), dtype=np.int64)
    if adaptation == "healthy":
        for value in (0, 1):
            rows = rng.permutation(np.flatnonzero(labels == value))
            part[rows] = np.arange(len(rows)) % ADAPTATION_PARTS
    else:
        part[rng.permutation(len(labels))] = np.arange(len(labels)) % ADAPTATION_PARTS
    parts = []
    for k in range(ADAPTATION_PARTS):
        outside = part != k
        if adaptation == "healthy":
            outside &= labels == 0
        parts.append((np.flatnonzero(part == k), np.flatnonzero(outside)))
    return [(scored, adapting) for scored, adapting in parts if len(scored)]


def adaptation_size(labels: np.ndarray, adaptation: str) -> int:
    """The fewest recordings any part of adaptation_parts adapts on (one per example and site at least)."""
    n = int((labels == 0).sum()) if adaptation == "healthy" else len(labels)
    return n - -(-n // ADAPTATION_PARTS)


def reference_rows(outcome: np.ndarray, groups: np.ndarray, pool: np.ndarray, group: str, adaptation: str) -> np.ndarray:
    """The examples of `pool` that serve as `group`'s adaptation references: all of that database's,
    or only its normal ones for "healthy"."""
    rows = pool[groups[pool] == group]
    return rows[outcome[rows] == 0] if adaptation == "healthy" else rows


def adaptation_shortfalls(outcome: np.ndarray, groups: np.ndarray, folds, adaptation: str) -> list[str]:
    """Where pcg-train --adapt-bn would have fewer than MIN_RECORDINGS references: for each fold, a
    validation or test database adapts on its references in the fold's training part (test: training
    and validation parts), and a database with none there is cross-fitted within the scored part."""
    problems = []
    for fold in folds:
        known = np.concatenate([fold.train, fold.validation])
        for what, scored, pool in (("validation", fold.validation, fold.train), ("test", fold.test, known)):
            for group in np.unique(groups[scored]):
                refs = reference_rows(outcome, groups, pool, group, adaptation)
                inside = scored[groups[scored] == group]
                n = len(refs) if len(refs) else adaptation_size(outcome[inside], adaptation)
                if n < MIN_RECORDINGS:
                    problems.append(f"{fold.name} {what} {group}: {n}")
    return problems


def batchnorm_layers(model) -> list:
    from torch import nn

    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def adapt_batchnorm(model, recordings: Sequence[np.ndarray], clip_frames: int, n_crops: int, batch: int = 64):
    """A copy of `model` (a ScreeningModel) whose batch-norm statistics are those of `recordings`
    (features [F, T] each, one site recording each); the original is left untouched."""
    import torch

    if not batchnorm_layers(model):
        raise AdaptationError("the model has no batch normalisation to adapt (instance-normalised models adapt to every crop by themselves)")
    if len(recordings) < MIN_RECORDINGS:
        raise AdaptationError(f"adaptation needs at least {MIN_RECORDINGS} recordings from the new stethoscope, got {len(recordings)}")
    crops = [crop(f, int(start), clip_frames) for f in recordings for start in window_starts(f.shape[1], clip_frames, n_crops)]
    # batches mix recordings (a fixed shuffle), so averaging the batches' variances loses little of
    # the variance between recordings
    order = np.random.default_rng(0).permutation(len(crops))
    adapted = copy.deepcopy(model).eval()
    for layer in batchnorm_layers(adapted):
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over every batch
        layer.train()
    parameter = next(adapted.parameters())
    with torch.no_grad():
        for start in range(0, len(crops), batch):
            x = torch.from_numpy(np.stack([crops[i] for i in order[start : start + batch]]).astype(np.float32)).to(parameter.device)
            adapted.encoder(x)
    return adapted.eval()
