"""LR: logistic regression on the dense features and the field vectors, concatenated.

The linear baseline. With a table per feature, a weight vector on an id's learned row is that id's
own first-order weight (a row of width 1 would be the textbook form; any lookup works here).

    logit = w . [dense; e_1; ...; e_F] + b
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.models.layers import field_vectors
from recsys.tables.interface import LookupModule


@dataclass(frozen=True)
class LRConfig:
    pass


class LR(nn.Module):
    config_type = LRConfig

    def __init__(self, lookup: LookupModule, dense_features: int, config: LRConfig = LRConfig()) -> None:
        super().__init__()
        self.lookup = lookup
        self.linear = nn.Linear(dense_features + len(lookup.feature_names) * lookup.embedding_dim, 1)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        vectors = field_vectors(self.lookup, sparse)
        return self.linear(torch.cat([dense, vectors.flatten(1)], dim=1)).squeeze(-1)
