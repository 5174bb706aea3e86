"""Layers shared by the CTR models."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Sequential):
    """Linear layers with ReLU between them; the last layer has no activation unless asked."""

    def __init__(self, in_features: int, widths: list[int], activate_last: bool = False) -> None:
        if not widths:
            raise ValueError("an MLP needs at least one layer width")
        layers: list[nn.Module] = []
        for index, width in enumerate(widths):
            layers.append(nn.Linear(in_features, width))
            if index < len(widths) - 1 or activate_last:
                layers.append(nn.ReLU())
            in_features = width
        super().__init__(*layers)
        self.out_features = in_features


def pooled_matrix(pooled_values: torch.Tensor, feature_count: int, embedding_dim: int) -> torch.Tensor:
    """A KeyedTensor's values [B, F * D] viewed as [B, F, D]."""
    return pooled_values.view(-1, feature_count, embedding_dim)
