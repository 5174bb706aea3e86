"""DCNv2: explicit feature crosses beside (or before) an MLP.

Wang et al., "DCN V2: Improved Deep & Cross Network and Practical Lessons for Web-scale Learning to
Rank Systems", WWW 2021. On x0 = [dense; e_1; ...; e_F], each cross layer computes

    x_{l+1} = x0 * (W_l x_l + b_l) + x_l          (W_l full rank, or U_l V_l of rank r: `low_rank`)

`structure = "stacked"`: MLP(cross(x0)); `"parallel"`: [cross(x0); MLP(x0)]; then one linear unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.models.layers import MLP, field_vectors
from recsys.tables.interface import LookupModule


@dataclass(frozen=True)
class DCNv2Config:
    cross_layers: int = 3
    low_rank: int | None = None
    hidden: tuple[int, ...] = (512, 256)
    structure: Literal["stacked", "parallel"] = "parallel"
    dropout: float = 0.0
    batch_norm: bool = False

    def __post_init__(self) -> None:
        if self.cross_layers < 1:
            raise ValueError(f"cross_layers must be at least 1, got {self.cross_layers}")
        if self.low_rank is not None and self.low_rank < 1:
            raise ValueError(f"low_rank must be at least 1, got {self.low_rank}")


class CrossLayer(nn.Module):
    def __init__(self, width: int, low_rank: int | None) -> None:
        super().__init__()
        if low_rank is None:
            self.weight = nn.Linear(width, width)
        else:
            self.weight = nn.Sequential(nn.Linear(width, low_rank, bias=False), nn.Linear(low_rank, width))

    def forward(self, first: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        return first * self.weight(current) + current


class DCNv2(nn.Module):
    config_type = DCNv2Config

    def __init__(self, lookup: LookupModule, dense_features: int, config: DCNv2Config = DCNv2Config()) -> None:
        super().__init__()
        self.lookup = lookup
        self.structure = config.structure
        width = dense_features + len(lookup.feature_names) * lookup.embedding_dim
        self.cross = nn.ModuleList(CrossLayer(width, config.low_rank) for _ in range(config.cross_layers))
        self.deep = MLP(
            width, list(config.hidden), activate_last=True, dropout=config.dropout, batch_norm=config.batch_norm
        )
        stacked = config.structure == "stacked"
        self.out = nn.Linear(self.deep.out_features + (0 if stacked else width), 1)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        first = torch.cat([dense, field_vectors(self.lookup, sparse).flatten(1)], dim=1)
        crossed = first
        for layer in self.cross:
            crossed = layer(first, crossed)
        if self.structure == "stacked":
            return self.out(self.deep(crossed)).squeeze(-1)
        return self.out(torch.cat([crossed, self.deep(first)], dim=1)).squeeze(-1)
