"""Layers shared by the CTR models."""

from __future__ import annotations

import torch
from torch import nn


class BatchNorm(nn.BatchNorm1d):
    """Batch normalisation that normalises a one-row training batch (a split's last) by the running statistics."""

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        if self.training and values.shape[0] == 1:
            return nn.functional.batch_norm(
                values, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(values)


class MLP(nn.Sequential):
    """Linear layers with ReLU between them; the last layer has no activation unless asked.

    Hidden layers may add batch normalisation (before the ReLU) and dropout (after it), the
    regularisers CTR libraries tune per dataset; the last layer never gets either.
    """

    def __init__(
        self,
        in_features: int,
        widths: list[int],
        activate_last: bool = False,
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        if not widths:
            raise ValueError("an MLP needs at least one layer width")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = []
        for index, width in enumerate(widths):
            layers.append(nn.Linear(in_features, width))
            hidden = index < len(widths) - 1 or activate_last
            if hidden and batch_norm:
                layers.append(BatchNorm(width))
            if hidden:
                layers.append(nn.ReLU())
            if hidden and dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_features = width
        super().__init__(*layers)
        self.out_features = in_features


def pooled_matrix(pooled_values: torch.Tensor, feature_count: int, embedding_dim: int) -> torch.Tensor:
    """A KeyedTensor's values [B, F * D] viewed as [B, F, D]."""
    return pooled_values.view(-1, feature_count, embedding_dim)


def field_vectors(lookup: nn.Module, sparse) -> torch.Tensor:
    """The lookup's pooled vectors as [B, F, D] (every lookup gives each feature `embedding_dim` columns)."""
    return pooled_matrix(lookup(sparse).values(), len(lookup.feature_names), lookup.embedding_dim)


class FactorizationMachine(nn.Module):
    """Second-order FM term over field vectors [B, N, D]: sum over pairs i < j of <v_i, v_j>, per row.

    Rendle, "Factorization Machines", ICDM 2010; computed as 0.5 * sum_d((sum_i v_id)^2 - sum_i v_id^2)
    in O(N D) instead of O(N^2 D).
    """

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        square_of_sum = vectors.sum(dim=1).pow(2)
        sum_of_squares = vectors.pow(2).sum(dim=1)
        return 0.5 * (square_of_sum - sum_of_squares).sum(dim=1)
