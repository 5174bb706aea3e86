"""DeepFM: an FM and an MLP side by side on the same field vectors.

Guo et al., "DeepFM: A Factorization-Machine based Neural Network for CTR Prediction", IJCAI 2017.

    fields = [W_d dense; e_1; ...; e_F]
    logit  = FM(fields) + MLP([dense; e_1; ...; e_F])        (the MLP ends in one unit)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.models.fm import FMTerms
from recsys.models.layers import MLP, field_vectors
from recsys.tables.interface import LookupModule


@dataclass(frozen=True)
class DeepFMConfig:
    hidden: tuple[int, ...] = (400, 400, 400)
    dropout: float = 0.0
    batch_norm: bool = False


class DeepFM(nn.Module):
    config_type = DeepFMConfig

    def __init__(self, lookup: LookupModule, dense_features: int, config: DeepFMConfig = DeepFMConfig()) -> None:
        super().__init__()
        self.lookup = lookup
        feature_count = len(lookup.feature_names)
        self.fm = FMTerms(dense_features, feature_count, lookup.embedding_dim)
        self.deep = MLP(
            dense_features + feature_count * lookup.embedding_dim,
            [*config.hidden, 1],
            dropout=config.dropout,
            batch_norm=config.batch_norm,
        )

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        vectors = field_vectors(self.lookup, sparse)
        deep = self.deep(torch.cat([dense, vectors.flatten(1)], dim=1)).squeeze(-1)
        return self.fm(dense, vectors) + deep
