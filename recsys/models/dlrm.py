"""DLRM: bottom MLP on dense features, pairwise dot products with the embeddings, top MLP.

Naumov et al., "Deep Learning Recommendation Model for Personalization and Recommendation
Systems", 2019. Shapes for B rows, F sparse features, embedding dim D:

    dense [B, 13] --bottom MLP--> x [B, D]
    lookup(sparse) --> E [B, F, D];  T = [x; E] [B, F + 1, D]
    interaction: dot products T_i . T_j for i < j  [B, (F + 1) F / 2], concatenated with x
    top MLP --> logit [B]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.models.layers import MLP, pooled_matrix
from recsys.tables.interface import LookupModule


@dataclass(frozen=True)
class DLRMConfig:
    bottom_mlp: tuple[int, ...] = (512, 256)
    top_mlp: tuple[int, ...] = (512, 256)


class DotInteraction(nn.Module):
    """Pairwise dot products of the F + 1 vectors, upper triangle without the diagonal."""

    def __init__(self, vector_count: int) -> None:
        super().__init__()
        rows, columns = torch.triu_indices(vector_count, vector_count, offset=1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("columns", columns, persistent=False)
        self.out_features = rows.numel()

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        products = torch.bmm(vectors, vectors.transpose(1, 2))
        return products[:, self.rows, self.columns]


class DLRM(nn.Module):
    config_type = DLRMConfig

    def __init__(self, lookup: LookupModule, dense_features: int, config: DLRMConfig = DLRMConfig()) -> None:
        super().__init__()
        self.lookup = lookup
        self.feature_count = len(lookup.feature_names)
        self.embedding_dim = lookup.embedding_dim
        self.bottom = MLP(dense_features, [*config.bottom_mlp, self.embedding_dim], activate_last=True)
        self.interaction = DotInteraction(self.feature_count + 1)
        self.top = MLP(self.interaction.out_features + self.embedding_dim, [*config.top_mlp, 1])

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        dense_vector = self.bottom(dense)
        embeddings = pooled_matrix(self.lookup(sparse).values(), self.feature_count, self.embedding_dim)
        vectors = torch.cat([dense_vector.unsqueeze(1), embeddings], dim=1)
        interactions = self.interaction(vectors)
        return self.top(torch.cat([dense_vector, interactions], dim=1)).squeeze(-1)
