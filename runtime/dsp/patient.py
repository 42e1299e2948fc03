"""Patient tensor assembly (DESIGN.md contract 2): per-site features -> one fixed-layout tensor.

Layout: x float32 [len(SITES), n_freq, T] in runtime.sites.SITES order, site_mask bool [S],
time_mask bool [S, T]. Absent sites are all zeros with site_mask False and time_mask False.

Repeat recordings at one site: the LONGEST is kept (most frames), ties going to the lowest repeat
number; the others are ignored (their (site, repeat) pairs are not in `recordings_used`).
A recording too short to give one frame counts as absent.

Time: T is the frame count of the longest kept recording (capped at max_frames when given);
shorter sites are zero-padded at the end and longer ones truncated to their first max_frames
frames. time_mask marks the real frames, so padding can be kept away from recurrent layers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from runtime.dsp.config import FrontEndConfig
from runtime.sites import SITES, site_index


@dataclass(frozen=True)
class PatientTensor:
    """One patient's model input plus where it came from."""

    x: np.ndarray  # float32 [len(SITES), n_freq, T] pooled log spectrogram per site slot
    site_mask: np.ndarray  # bool [len(SITES)]: slot holds a recording
    time_mask: np.ndarray  # bool [len(SITES), T]: frame is real (not padding)
    sites_used: tuple[str, ...]  # sites present, in SITES order
    recordings_used: tuple[tuple[str, int], ...]  # (site, repeat) kept per present site, SITES order

    @property
    def n_frames(self) -> int:
        return self.x.shape[2]


def assemble_patient(
    site_features: Iterable[tuple[str, int, np.ndarray]],
    config: FrontEndConfig,
    max_frames: int | None = None,
) -> PatientTensor:
    """Build a PatientTensor from (site, repeat, features float [n_freq, t]) triples.

    ValueError for an unknown site, features whose shape is not [config.n_freq, t], or no
    recording with at least one frame.
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    chosen: dict[int, tuple[int, np.ndarray]] = {}  # slot -> (repeat, features)
    for site, repeat, feats in site_features:
        slot = site_index(site)
        feats = np.asarray(feats)
        if feats.ndim != 2 or feats.shape[0] != config.n_freq:
            raise ValueError(
                f"features for site {site} repeat {repeat} have shape {feats.shape}; "
                f"expected [{config.n_freq}, frames] for this front-end config"
            )
        if feats.shape[1] == 0:
            continue
        if slot in chosen:
            kept_repeat, kept = chosen[slot]
            longer = feats.shape[1] > kept.shape[1]
            tie_lower = feats.shape[1] == kept.shape[1] and repeat < kept_repeat
            if not (longer or tie_lower):
                continue
        chosen[slot] = (repeat, feats)
    if not chosen:
        raise ValueError("no recordings for this patient: at least one site with one or more frames is needed")

    n_frames = max(feats.shape[1] for _, feats in chosen.values())
    if max_frames is not None:
        n_frames = min(n_frames, max_frames)
    x = np.zeros((len(SITES), config.n_freq, n_frames), dtype=np.float32)
    site_mask = np.zeros(len(SITES), dtype=bool)
    time_mask = np.zeros((len(SITES), n_frames), dtype=bool)
    for slot, (_, feats) in chosen.items():
        t = min(feats.shape[1], n_frames)
        x[slot, :, :t] = feats[:, :t]
        site_mask[slot] = True
        time_mask[slot, :t] = True
    slots = sorted(chosen)
    return PatientTensor(
        x=x,
        site_mask=site_mask,
        time_mask=time_mask,
        sites_used=tuple(SITES[s] for s in slots),
        recordings_used=tuple((SITES[s], chosen[s][0]) for s in slots),
    )


def stack_patients(patients: list[PatientTensor]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch: x float32 [B, S, n_freq, T], site_mask bool [B, S], time_mask bool [B, S, T].

    T is the longest patient's; shorter ones are zero-padded with time_mask False.
    """
    if not patients:
        raise ValueError("stack_patients needs at least one patient")
    n_freqs = {p.x.shape[1] for p in patients}
    if len(n_freqs) != 1:
        raise ValueError(f"patients have different frequency sizes {sorted(n_freqs)}; were they made with one config?")
    n_frames = max(p.n_frames for p in patients)
    x = np.zeros((len(patients), len(SITES), n_freqs.pop(), n_frames), dtype=np.float32)
    time_mask = np.zeros((len(patients), len(SITES), n_frames), dtype=bool)
    for b, p in enumerate(patients):
        x[b, :, :, : p.n_frames] = p.x
        time_mask[b, :, : p.n_frames] = p.time_mask
    site_mask = np.stack([p.site_mask for p in patients])
    return x, site_mask, time_mask
