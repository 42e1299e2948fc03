"""Murmur head (Present / Unknown / Absent) over the site embeddings, and its losses.

    site tokens [B, S, D]: the encoder's embedding + a site embedding where the site was recorded,
    a learned per-site "missing" token where it was not (absent audio never enters)
    -> a small pre-norm transformer over the S tokens -> attention pooling over PRESENT sites
    -> [B, D], which ScreeningModel's final layer turns into n_heads x 3 logits.

The heads are trained each with a focal loss (label smoothing) plus a KL term pulling each toward
their (detached) mean; the prediction is the mean of the heads' probabilities.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class SelfAttention(nn.Module):
    """Multi-head self-attention written with matmul only (exports to plain ONNX MatMul/Softmax)."""

    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, dim // n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, S, D]
        b, s, d = x.shape
        qkv = self.qkv(x).reshape(b, s, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attention = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim), dim=-1)
        mixed = torch.matmul(self.dropout(attention), v)  # [B, H, S, hd]
        return self.out(mixed.transpose(1, 2).reshape(b, s, d))


class TransformerLayer(nn.Module):
    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = SelfAttention(dim, n_heads, dropout)
        self.feed_forward = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.norm1(x)))
        return x + self.dropout(self.feed_forward(self.norm2(x)))


def masked_attention_pool(tokens: torch.Tensor, scores: torch.Tensor, site_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool tokens [B, S, D] with softmax(scores [B, S]) over present sites only.

    Returns (pooled [B, D], weights [B, S]); absent sites get weight exactly 0, and a patient with
    no site at all gets zeros (callers reject such patients before this point).
    """
    present = site_mask > 0.5
    weights = torch.softmax(scores.masked_fill(~present, -1e9), dim=1) * present.to(scores.dtype)
    return (weights.unsqueeze(2) * tokens).sum(dim=1), weights


class MurmurHead(nn.Module):
    """Site embeddings [B, S, D] + site mask [B, S] -> pooled [B, D] and per-site weights [B, S]."""

    def __init__(self, n_sites: int, dim: int, n_layers: int, n_heads: int, dropout: float):
        super().__init__()
        self.missing_token = nn.Parameter(torch.randn(n_sites, dim) * 0.02)
        self.layers = nn.Sequential(*[TransformerLayer(dim, n_heads, dropout) for _ in range(n_layers)])
        self.norm = nn.LayerNorm(dim)
        self.pool_score = nn.Linear(dim, 1)

    def forward(self, site_embeddings: torch.Tensor, site_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        present = (site_mask > 0.5).unsqueeze(2)
        tokens = torch.where(present, site_embeddings, self.missing_token.unsqueeze(0).expand_as(site_embeddings))
        tokens = self.norm(self.layers(tokens))
        return masked_attention_pool(tokens, self.pool_score(tokens).squeeze(2), site_mask)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, smoothing: float = 0.1, class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-class focal loss with label smoothing. logits [B, K], target [B] class indices."""
    k = logits.shape[1]
    log_p = F.log_softmax(logits, dim=1)
    soft_target = F.one_hot(target, k).to(logits.dtype) * (1.0 - smoothing) + smoothing / k
    focal = (1.0 - log_p.exp()).pow(gamma)
    per_class = -soft_target * focal * log_p
    if class_weight is not None:
        per_class = per_class * class_weight.unsqueeze(0)
    return per_class.sum(dim=1).mean()


def multi_head_murmur_loss(head_logits: torch.Tensor, target: torch.Tensor, distill_weight: float = 0.5, class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """head_logits [B, H, 3]: mean focal loss over heads + KL(mean of heads || head) distillation."""
    n_heads = head_logits.shape[1]
    supervised = sum(focal_loss(head_logits[:, h], target, class_weight=class_weight) for h in range(n_heads)) / n_heads
    log_probs = F.log_softmax(head_logits, dim=2)
    consensus = log_probs.exp().mean(dim=1, keepdim=True).detach()
    distill = (consensus * (consensus.clamp_min(1e-8).log() - log_probs)).sum(dim=2).mean()
    return supervised + distill_weight * distill
