"""The primary network's per-site encoder: a pooled log spectrogram crop -> one site embedding.

    crop [N, F, T] -> per-frequency normalisation -> CNN (3 conv blocks) -> spatial attention over
    the frequency-time map -> BiLSTM over time -> temporal attention pooling -> [N, d_model]

N counts site recordings, not patients: the same weights serve every site (ScreeningModel adds a
site embedding afterwards). Crops are fixed-length (config.clip_frames frames, short recordings
tiled by trainer.crops), so no padding ever enters the LSTM in either direction.
"""

from __future__ import annotations

import torch
from torch import nn


def normalize_per_frequency(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Remove each frequency row's mean over time, then scale by the crop's overall spread.

    x [N, F, T] log power. Subtracting the per-row mean cancels any fixed frequency response (a
    stethoscope's colouring, gain, tilt: all additive in log power); one scale per crop keeps the
    relative loudness of bands. This is in the graph, so the runtime need not know about it.
    """
    centred = x - x.mean(dim=2, keepdim=True)
    spread = centred.pow(2).mean(dim=(1, 2), keepdim=True).add(eps).sqrt()
    return centred / spread


NORMS = ("batch", "instance")


def norm_layer(kind: str, channels: int) -> nn.Module:
    """batch: statistics of the training batches, frozen at inference. instance: each crop's own
    statistics per channel (with a learned scale and shift), so a feature map's level and spread
    carry no trace of the recording's device at inference either (IBN-Net's argument for style
    invariance)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    raise ValueError(f"unknown norm {kind!r}; expected one of {', '.join(NORMS)}")


class ConvBlock(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, pool: tuple[int, int], norm: str = "batch"):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            norm_layer(norm, out_channels),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(pool),
        )


class SpatialAttention(nn.Module):
    """CBAM spatial attention: a 7x7 convolution over the channel mean and max gives a [0, 1]
    weight for every frequency-time cell."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [N, C, F, T]
        summary = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(summary))


class TemporalAttentionPool(nn.Module):
    """Additive attention over time steps: [N, T, D] -> [N, D]."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.score(h), dim=1)  # [N, T, 1]
        return (weights * h).sum(dim=1)


class SiteEncoder(nn.Module):
    """Shared per-site encoder. Input [N, F >= n_freq, n_frames] float32, output [N, d_model]: only
    the lowest n_freq rows are used (a band limit inside the graph, so the input contract keeps
    the front-end's rows)."""

    def __init__(self, n_freq: int, channels: tuple[int, int, int], d_model: int, dropout: float, norm: str = "batch"):
        super().__init__()
        self.n_freq = n_freq
        c1, c2, c3 = channels
        self.cnn = nn.Sequential(
            ConvBlock(1, c1, (2, 2), norm),
            ConvBlock(c1, c2, (2, 2), norm),
            ConvBlock(c2, c3, (2, 1), norm),
        )
        self.spatial_attention = SpatialAttention()
        reduced_freq = n_freq // 8
        self.project = nn.Sequential(nn.Linear(c3 * reduced_freq, d_model), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.lstm = nn.LSTM(d_model, d_model // 2, batch_first=True, bidirectional=True)
        self.temporal_attention = TemporalAttentionPool(d_model)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        x = normalize_per_frequency(crops[:, : self.n_freq]).unsqueeze(1)  # [N, 1, F, T]
        x = self.spatial_attention(self.cnn(x))  # [N, C, F/8, T/4]
        n, c, f, t = x.shape
        x = x.permute(0, 3, 1, 2).reshape(n, t, c * f)
        h, _ = self.lstm(self.project(x))  # [N, T/4, d_model]
        return self.temporal_attention(h)
