"""ScreeningModel: the primary network with a selectable metadata path (DESIGN.md contract 4).

    x [B, 5, F, T] --(present sites only)--> SiteEncoder --> [B, 5, D] + site embedding
        --> site projection (static, or hypernetwork-conditioned for `hyperfusion`)
        --> outcome: attention fusion over present sites      murmur: MurmurHead (transformer)
        --> final layer, by metadata path:
              primary      Linear(D)
              mlp          Linear([D, MLP(metadata)])
              hyper        DynamicLinear(D; metadata)          (hypernetwork -> weights, bmm)
              hyperfusion  as hyper, and the site projection is a DynamicLinear too

Outputs (a tuple, in OUTPUT_NAMES order): outcome probability [B], outcome logit [B], per-site
weights [B, 5] (0 for absent sites), and for the murmur task murmur probabilities [B, 3]
(Present, Unknown, Absent). A murmur model refers on Present or Unknown, so its outcome
probability is P(Present) + P(Unknown). The "both" task learns the two together: the murmur head's
transformer pools the sites, and one final layer (one generated layer for hyper) gives the outcome
logit and the murmur logits, so the outcome probability is the outcome head's own.

Sites are encoded only where site_mask is set (a gather/scatter by index, exported as ONNX
NonZero/Gather/ScatterElements): a missing site's tensor never reaches any layer, and a patient
recorded at one site costs one site's compute.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from trainer.encoder import NORMS, SiteEncoder
from trainer.hypernet import DynamicLinear
from trainer.murmur_head import MurmurHead, masked_attention_pool

METADATA_PATHS = ("primary", "mlp", "hyper", "hyperfusion")
TASKS = ("outcome", "murmur", "both")
INPUT_NAMES = ("x", "site_mask", "metadata")
OUTCOME_OUTPUTS = ("outcome_probability", "outcome_logit", "site_weights")
MURMUR_OUTPUTS = OUTCOME_OUTPUTS + ("murmur_probabilities",)


@dataclass
class ModelConfig:
    task: str = "outcome"  # "outcome" | "murmur" | "both" (outcome and murmur from one model)
    metadata_path: str = "primary"  # one of METADATA_PATHS
    n_sites: int = 5
    n_freq: int = 48
    freq_rows: int | None = None  # lowest rows the encoder uses (None: all n_freq); the input keeps n_freq rows
    norm: str = "batch"  # the CNN's normalisation: "batch" | "instance" (trainer.encoder.norm_layer)
    n_frames: int = 250  # crop length the model is trained on (front-end config.clip_frames)
    metadata_dim: int = 15
    channels: tuple[int, int, int] = field(default=(8, 16, 32))
    d_model: int = 64
    dropout: float = 0.2
    metadata_hidden: int = 16  # MLP embedding width / hypernetwork hidden width
    murmur_heads: int = 3
    transformer_layers: int = 1
    attention_heads: int = 4

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {', '.join(TASKS)}")
        if self.metadata_path not in METADATA_PATHS:
            raise ValueError(f"unknown model {self.metadata_path!r}; expected one of {', '.join(METADATA_PATHS)}")
        if self.n_freq % 8:
            raise ValueError(f"n_freq must be a multiple of 8 (three 2x poolings), got {self.n_freq}")
        if self.freq_rows is not None and not (8 <= self.freq_rows <= self.n_freq and self.freq_rows % 8 == 0):
            raise ValueError(f"freq_rows must be a multiple of 8 between 8 and n_freq={self.n_freq}, got {self.freq_rows}")
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; expected one of {', '.join(NORMS)}")
        self.channels = tuple(self.channels)

    @property
    def n_outputs(self) -> int:
        return {"outcome": 1, "murmur": 3 * self.murmur_heads, "both": 1 + 3 * self.murmur_heads}[self.task]

    @property
    def output_names(self) -> tuple[str, ...]:
        return OUTCOME_OUTPUTS if self.task == "outcome" else MURMUR_OUTPUTS

    def to_dict(self) -> dict:
        return asdict(self)


class ScreeningModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = c = config
        self.encoder = SiteEncoder(c.n_freq if c.freq_rows is None else c.freq_rows, c.channels, c.d_model, c.dropout, c.norm)
        self.site_embedding = nn.Parameter(torch.randn(c.n_sites, c.d_model) * 0.02)
        if c.metadata_path == "hyperfusion":
            self.site_projection = DynamicLinear(c.d_model, c.d_model, c.metadata_dim, c.metadata_hidden, c.dropout)
        else:
            self.site_projection = nn.Linear(c.d_model, c.d_model)
        if c.task in ("murmur", "both"):
            self.murmur_head = MurmurHead(c.n_sites, c.d_model, c.transformer_layers, c.attention_heads, c.dropout)
        else:
            self.fusion_score = nn.Sequential(nn.Linear(c.d_model, c.d_model), nn.Tanh(), nn.Linear(c.d_model, 1))
        self.dropout = nn.Dropout(c.dropout)
        if c.metadata_path == "mlp":
            h = c.metadata_hidden
            self.metadata_mlp = nn.Sequential(nn.Linear(c.metadata_dim, h), nn.ReLU(), nn.Dropout(c.dropout), nn.Linear(h, h), nn.ReLU())
            self.final = nn.Linear(c.d_model + h, c.n_outputs)
        elif c.metadata_path in ("hyper", "hyperfusion"):
            self.final = DynamicLinear(c.d_model, c.n_outputs, c.metadata_dim, c.metadata_hidden, c.dropout)
        else:
            self.final = nn.Linear(c.d_model, c.n_outputs)

    def encode_sites(self, x: torch.Tensor, site_mask: torch.Tensor) -> torch.Tensor:
        """x [B, S, F, T] -> [B, S, D]; rows of absent sites are zeros and never touch the encoder."""
        b, s, f, t = x.shape
        present_rows = torch.nonzero(site_mask.reshape(-1) > 0.5).squeeze(1)
        encoded = self.encoder(x.reshape(b * s, f, t).index_select(0, present_rows))
        scatter_index = present_rows.unsqueeze(1).expand(-1, encoded.shape[1])
        rows = encoded.new_zeros(b * s, encoded.shape[1]).scatter(0, scatter_index, encoded)
        return rows.reshape(b, s, -1)

    def head_logits(self, x: torch.Tensor, site_mask: torch.Tensor, metadata: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw final-layer logits [B, n_outputs] and per-site weights [B, S] (what training needs)."""
        site_mask = site_mask.to(x.dtype)
        tokens = self.encode_sites(x, site_mask) + self.site_embedding.unsqueeze(0)
        if self.config.metadata_path == "hyperfusion":
            tokens = torch.relu(self.site_projection(tokens, metadata))
        else:
            tokens = torch.relu(self.site_projection(tokens))
        if self.config.task in ("murmur", "both"):
            pooled, weights = self.murmur_head(tokens, site_mask)
        else:
            pooled, weights = masked_attention_pool(tokens, self.fusion_score(tokens).squeeze(2), site_mask)
        pooled = self.dropout(pooled)
        if self.config.metadata_path == "mlp":
            logits = self.final(torch.cat([pooled, self.metadata_mlp(metadata)], dim=1))
        elif self.config.metadata_path in ("hyper", "hyperfusion"):
            logits = self.final(pooled, metadata)
        else:
            # an empty slice keeps `metadata` a graph input, so every exported model has the same
            # three inputs (contract 4) whatever its metadata path; it adds exactly 0, even for NaN
            logits = self.final(pooled) + metadata[:, :0].sum(dim=1, keepdim=True)
        return logits, weights

    def forward(self, x: torch.Tensor, site_mask: torch.Tensor, metadata: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, weights = self.head_logits(x, site_mask, metadata)
        if self.config.task == "outcome":
            outcome_logit = logits[:, 0]
            return torch.sigmoid(outcome_logit), outcome_logit, weights
        if self.config.task == "both":
            outcome_logit = logits[:, 0]
            murmur = torch.softmax(logits[:, 1:].reshape(logits.shape[0], self.config.murmur_heads, 3), dim=2).mean(dim=1)
            return torch.sigmoid(outcome_logit), outcome_logit, weights, murmur
        murmur = torch.softmax(logits.reshape(logits.shape[0], self.config.murmur_heads, 3), dim=2).mean(dim=1)
        refer = (murmur[:, 0] + murmur[:, 1]).clamp(1e-6, 1.0 - 1e-6)
        return refer, torch.log(refer) - torch.log1p(-refer), weights, murmur


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
