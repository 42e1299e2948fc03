"""FrontEndConfig: derived sizes, JSON round trip, strict parsing, and a stable hash."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.dsp import FrontEndConfig, log_spectrogram, pool_frames

REPO_ROOT = Path(__file__).resolve().parents[1]

DEFAULT = FrontEndConfig()


def test_default_band_keeps_bins_4_to_51_inclusive():
    assert DEFAULT.band_bins == (4, 52)
    assert DEFAULT.n_freq == 48


def test_default_frame_period_and_clip_length():
    assert DEFAULT.frame_period_s == pytest.approx(0.032)
    # 8 s at 1 kHz: (8000 - 128) // 16 + 1 = 493 frames -> (493 - 2) // 2 + 1 = 246 pooled.
    assert DEFAULT.clip_frames == 246


def test_minimum_input_rate_follows_the_band_top_and_the_resampling_filter():
    # Kaiser's design relation puts the filter's passband edge at 0.4197 of the lower rate (beta 5,
    # 20 taps per lower-rate sample): 400 Hz needs 953.1 Hz, not just twice 400 Hz.
    assert DEFAULT.min_input_rate_hz == 954
    assert FrontEndConfig(band_hz=(25.0, 200.0)).min_input_rate_hz == 477
    assert FrontEndConfig(half_len_factor=40).min_input_rate_hz < 840  # a longer filter: a narrower transition


def test_band_edge_on_a_bin_is_inclusive():
    cfg = FrontEndConfig(band_hz=(31.25, 125.0))  # exactly bins 4 and 16 at 1 kHz / 128
    assert cfg.band_bins == (4, 17)


@settings(deadline=None, max_examples=100)
@given(n=st.integers(0, 3000), hop=st.sampled_from([8, 16, 20]), pool=st.sampled_from([(1, 1), (2, 2), (3, 2)]))
def test_frames_for_counts_what_the_spectrogram_produces(n, hop, pool):
    cfg = FrontEndConfig(hop_samples=hop, pool_frames=pool[0], pool_stride=pool[1])
    x = np.random.default_rng(n).standard_normal(n)
    assert pool_frames(log_spectrogram(x, cfg), cfg).shape == (cfg.n_freq, cfg.frames_for(n))


def test_json_round_trip_preserves_every_field():
    cfg = FrontEndConfig(target_rate_hz=2000, n_fft=256, win_length=200, hop_samples=20, band_hz=(20, 500), log_floor=1e-8)
    again = FrontEndConfig.from_json(cfg.to_json())
    assert again == cfg
    assert again.to_json() == cfg.to_json()


def test_to_json_is_canonical():
    text = DEFAULT.to_json()
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


def _with(**changes) -> str:
    data = json.loads(DEFAULT.to_json())
    data.update(changes)
    return json.dumps(data)


@pytest.mark.parametrize(
    "text, message",
    [
        (_with(extra_knob=1), "unknown front-end config keys"),
        (_with(schema="pcg-screen/frontend-config/0"), "schema"),
        (_with(n_fft="128"), "'n_fft'"),
        (_with(n_fft=128.0), "'n_fft'"),
        (_with(pool_frames=True), "'pool_frames'"),
        (_with(band_hz=[25.0]), "'band_hz'"),
        (json.dumps({k: v for k, v in json.loads(DEFAULT.to_json()).items() if k != "hop_samples"}), "missing"),
        ("[1, 2]", "JSON object"),
        ("{not json", "not valid JSON"),
        (_with(win_length=512), "win_length"),
        (_with(window="hamming"), "window"),
    ],
)
def test_from_json_rejects_bad_input_with_a_clear_message(text, message):
    with pytest.raises(ValueError, match=message):
        FrontEndConfig.from_json(text)


def test_integral_floats_hash_like_floats():
    assert FrontEndConfig(kaiser_beta=5, clip_seconds=8, band_hz=(25, 400)).config_hash() == DEFAULT.config_hash()


def test_hash_is_the_same_in_another_process():
    code = "from runtime.dsp.config import FrontEndConfig; print(FrontEndConfig().config_hash())"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == DEFAULT.config_hash()
    assert len(DEFAULT.config_hash()) == 64


CHANGED = {
    "target_rate_hz": 2000,
    "kaiser_beta": 6.0,
    "half_len_factor": 12,
    "n_fft": 256,
    "win_length": 100,
    "hop_samples": 8,
    "band_hz": (25.0, 300.0),
    "log_floor": 1e-9,
    "pool_frames": 3,
    "pool_stride": 3,
    "clip_seconds": 6.0,
}


@pytest.mark.parametrize("name", sorted(CHANGED))
def test_changing_any_field_changes_the_hash(name):
    assert DEFAULT.config_hash() != dataclasses.replace(DEFAULT, **{name: CHANGED[name]}).config_hash()


def test_every_numeric_field_is_covered_by_the_hash_test():
    assert set(CHANGED) | {"window"} == {f.name for f in dataclasses.fields(FrontEndConfig)}


@pytest.mark.parametrize(
    "changes",
    [{"hop_samples": 0}, {"band_hz": (300.0, 25.0)}, {"band_hz": (25.0, 600.0)}, {"log_floor": 0.0}, {"band_hz": (1.0, 2.0)}],
)
def test_invalid_values_are_refused(changes):
    with pytest.raises(ValueError):
        FrontEndConfig(**changes)
