"""Fixed-length crops of a recording's features: the one rule for training, evaluation and export.

A recording's features are float32 [F, T] (runtime.dsp). The model sees crops of `clip_frames`
frames (front-end config.clip_frames), so no padding exists anywhere in a crop:

- T >= clip_frames: a window [start, start + clip_frames).
- T <  clip_frames: the recording is tiled (repeated end to start) until it fills the crop; a
  heart sound recording is roughly periodic, so repeating it keeps it plausible, whereas zero
  padding would reach the LSTM's backward direction.

Inference (what evaluation reports and the manifest must describe): for each present site, the
LONGEST recording at that site (repeats at one site: the longest one is used); `n_crops` windows
with starts round(linspace(0, T - clip_frames, n_crops)) (all at 0 when T <= clip_frames); crop k
of a patient holds window k of every site; the model's outcome logits are averaged over the
crops (murmur probabilities likewise), then Platt scaling gives the probability.
"""

from __future__ import annotations

import numpy as np


def tile_to(features: np.ndarray, n_frames: int) -> np.ndarray:
    """Repeat features [F, T] along time until it has at least n_frames frames."""
    t = features.shape[1]
    if t >= n_frames:
        return features
    if t == 0:
        raise ValueError("cannot crop a recording with no frames")
    return np.tile(features, (1, -(-n_frames // t)))


def crop(features: np.ndarray, start: int, clip_frames: int) -> np.ndarray:
    """features [F, T] -> [F, clip_frames] from `start` (tiled first when T < clip_frames)."""
    tiled = tile_to(features, clip_frames)
    return tiled[:, start : start + clip_frames]


def window_starts(n_frames: int, clip_frames: int, n_crops: int) -> np.ndarray:
    """Evenly spaced crop starts covering a recording of n_frames frames."""
    if n_frames <= clip_frames:
        return np.zeros(n_crops, dtype=np.int64)
    return np.round(np.linspace(0, n_frames - clip_frames, n_crops)).astype(np.int64)


def evaluation_crops(site_features: list[np.ndarray | None], clip_frames: int, n_crops: int, n_freq: int) -> tuple[np.ndarray, np.ndarray]:
    """One patient's inference input.

    site_features: per site slot, the recording used at that site ([F, T]) or None when absent.
    Returns x [n_crops, n_sites, F, clip_frames] float32 (zeros at absent sites) and
    site_mask [n_sites] float32.
    """
    n_sites = len(site_features)
    x = np.zeros((n_crops, n_sites, n_freq, clip_frames), dtype=np.float32)
    mask = np.zeros(n_sites, dtype=np.float32)
    for s, features in enumerate(site_features):
        if features is None:
            continue
        mask[s] = 1.0
        for k, start in enumerate(window_starts(features.shape[1], clip_frames, n_crops)):
            x[k, s] = crop(features, int(start), clip_frames)
    return x, mask


def patient_tensor_crops(x: np.ndarray, site_mask: np.ndarray, time_mask: np.ndarray, clip_frames: int, n_crops: int) -> tuple[np.ndarray, np.ndarray]:
    """The same inference input from a runtime.dsp PatientTensor (x [S, F, T], site_mask [S],
    time_mask [S, T]): each present site's real frames (time_mask) are cropped as above, so the
    padding assemble_patient adds never enters a crop. Returns (x [n_crops, S, F, clip], mask [S])."""
    sites = [x[s][:, np.asarray(time_mask[s], dtype=bool)] if site_mask[s] else None for s in range(x.shape[0])]
    return evaluation_crops(sites, clip_frames, n_crops, x.shape[1])
