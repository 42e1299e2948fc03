"""A hypernetwork that turns a patient's demographics into the weights of a dynamic linear layer.

    W(m) = W_static + dW(m),  b(m) = b_static + db(m),  [dW, db] = G2 . dropout(relu(G1 . m))
    y = x @ W(m) + b(m)                      (a batched matmul: one weight matrix per patient)

"Static layer + generated delta" (as HyperFusion): the static part is an ordinary linear layer with
its usual initialisation, so a model whose demographics carry nothing still trains like the
primary network. The generator's output layer is initialised so that, for unit-scale demographic
inputs, the generated delta has `delta_scale` times the standard deviation of the static weights:
the demographics start as a small, trainable perturbation of a well-scaled layer rather than as
noise that swamps it (or as exact zeros, which would leave G1 without a gradient at the start).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class HyperNetwork(nn.Module):
    """Demographics [B, metadata_dim] -> flat parameters [B, n_params] (two linear layers)."""

    def __init__(self, metadata_dim: int, hidden: int, n_params: int, target_std: float, dropout: float):
        super().__init__()
        self.hidden = nn.Linear(metadata_dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, n_params)
        # relu(hidden) of unit-variance inputs under PyTorch's default init has E[h^2] ~ 1/6
        mean_square_hidden = 1.0 / 6.0
        nn.init.normal_(self.out.weight, 0.0, target_std / math.sqrt(hidden * mean_square_hidden))
        nn.init.zeros_(self.out.bias)

    def forward(self, metadata: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(torch.relu(self.hidden(metadata))))


class DynamicLinear(nn.Module):
    """Linear layer in_features -> out_features whose weights depend on each patient's metadata.

    forward(x [B, in] or [B, K, in], metadata [B, M]) -> [B, out] or [B, K, out]; with K, the same
    patient-specific layer is applied to each of the K rows (e.g. one per site).
    """

    def __init__(self, in_features: int, out_features: int, metadata_dim: int, hidden: int, dropout: float, delta_scale: float = 0.1):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.static = nn.Linear(in_features, out_features)
        static_std = 1.0 / math.sqrt(3.0 * in_features)  # std of PyTorch's default uniform init
        self.generator = HyperNetwork(
            metadata_dim, hidden, in_features * out_features + out_features, delta_scale * static_std, dropout
        )

    def forward(self, x: torch.Tensor, metadata: torch.Tensor) -> torch.Tensor:
        params = self.generator(metadata)
        n_weights = self.in_features * self.out_features
        delta_w = params[:, :n_weights].reshape(-1, self.in_features, self.out_features)
        delta_b = params[:, n_weights:]
        weight = self.static.weight.t().unsqueeze(0) + delta_w  # [B, in, out]
        bias = self.static.bias.unsqueeze(0) + delta_b  # [B, out]
        if x.dim() == 2:
            return torch.matmul(x.unsqueeze(1), weight).squeeze(1) + bias
        return torch.matmul(x, weight) + bias.unsqueeze(1)
