"""Adapting a trained model to a stethoscope it never heard, without labels (AdaBN).

    adapt_batchnorm(model, recordings, clip_frames, n_crops) -> a copy of the model

A batch-normalised CNN keeps the mean and variance of every channel as seen in training, on the
training stethoscopes. A new stethoscope shifts those statistics (another microphone, chest piece
and noise floor), so every later layer sees features off the scale it was trained on, and the
scores drift: their ranking inside the new device mostly survives, their level does not. AdaBN
(Li et al., "Revisiting batch normalization for practical domain adaptation", 2016) re-estimates
those statistics on unlabelled recordings from the new device and changes nothing else.

The recordings are cropped exactly as at inference (trainer.crops: `n_crops` evenly spaced windows
of `clip_frames`, short recordings tiled), each crop passes the encoder once, and every batch-norm
layer takes the plain average over all crops (momentum None). Labels are never read; the class mix
of the adaptation recordings still enters the statistics, so they should be an ordinary clinic
population rather than a chosen set of patients (trainer/STATUS.md measures how much it matters).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from trainer.crops import crop, window_starts

#: Fewer recordings than this give statistics too noisy to trust.
MIN_RECORDINGS = 8


class AdaptationError(ValueError):
    """The model or the recordings cannot be adapted; the message says why."""


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def adapt_batchnorm(model: nn.Module, recordings: Sequence[np.ndarray], clip_frames: int, n_crops: int, batch: int = 64) -> nn.Module:
    """A copy of `model` (a ScreeningModel) whose batch-norm statistics are those of `recordings`
    (features [F, T] each, one site recording each); the original is left untouched."""
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
