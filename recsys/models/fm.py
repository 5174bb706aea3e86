"""FM: factorization machine over the field vectors (Rendle, "Factorization Machines", ICDM 2010).

The dense features, standardised by batch normalisation (their log scale reaches ~15 on Criteo,
which would swamp every pair product), become one more field vector through a linear map, so they
interact too:

    x      = BatchNorm(dense)
    fields = [W_d x; e_1; ...; e_F]                           [B, F + 1, D]  (no W_d x without dense features)
    logit  = b + w . [x; e_1; ...; e_F] + sum_{i<j} <fields_i, fields_j>
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.models.layers import BatchNorm, FactorizationMachine, field_vectors
from recsys.tables.interface import LookupModule


@dataclass(frozen=True)
class FMConfig:
    pass


class FMTerms(nn.Module):
    """First- and second-order FM terms from the dense features and the field vectors [B, F, D]."""

    def __init__(self, dense_features: int, feature_count: int, embedding_dim: int) -> None:
        super().__init__()
        self.dense_norm = BatchNorm(dense_features) if dense_features else nn.Identity()
        self.dense_field = nn.Linear(dense_features, embedding_dim, bias=False) if dense_features else None
        self.first_order = nn.Linear(dense_features + feature_count * embedding_dim, 1)
        self.interaction = FactorizationMachine()

    def forward(self, dense: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        dense = self.dense_norm(dense)
        fields = vectors if self.dense_field is None else torch.cat([self.dense_field(dense).unsqueeze(1), vectors], 1)
        linear = self.first_order(torch.cat([dense, vectors.flatten(1)], dim=1)).squeeze(-1)
        return linear + self.interaction(fields)


class FM(nn.Module):
    config_type = FMConfig

    def __init__(self, lookup: LookupModule, dense_features: int, config: FMConfig = FMConfig()) -> None:
        super().__init__()
        self.lookup = lookup
        self.terms = FMTerms(dense_features, len(lookup.feature_names), lookup.embedding_dim)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        return self.terms(dense, field_vectors(self.lookup, sparse))
