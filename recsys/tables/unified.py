"""`unified`: feature multiplexing, one shared table for all features (Unified Embedding).

Coleman, Kang, Fahrbach, Wang, Hong, Mazumder, Jain, Nguyen, Sundaresan, Song, Rajaraman, Menon,
Chen, "Unified Embedding: Battle-Tested Feature Representations for Web-Scale ML Systems",
NeurIPS 2023. Every feature hashes into the same table of M rows, each with its own salt, so the
features' collisions spread over one large table instead of each crowding its own small one. In
the variable-size form a feature f makes n_f lookups with n_f different salts and concatenates
the rows (n_f chunks of `chunk_dim`):

    M = 1000, chunk_dim = 8, C3 with n = 2:  id 977 -> rows [h(C3, 0, 977), h(C3, 1, 977)] = [412, 73]
                                             vector = [T[412], T[73]]  (16 wide)

The table is one torchrec table listing every (feature, lookup) as a feature name, so torchrec
stores and shards it as one table. When n_f * chunk_dim differs from the model's `embedding_dim`,
a learned linear projection (no bias) maps the feature's vector to it; its parameters are counted.
`lookups` is a number for every feature, or "cardinality": n_f = ceil(log10(|V_f| + 1) / 2)
clamped to [1, `max_lookups`], so large vocabularies get more chunks.

Memory: M * chunk_dim * 4 bytes plus the projections, no index. With a budget M takes what the
projections leave.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from recsys.data.stats import FeatureStatistics
from recsys.tables.budget import FLOAT_BYTES, budget_bytes
from recsys.tables.hashes import derive_salt, feature_key, hash_ids
from recsys.tables.interface import LookupModule
from recsys.tables.jagged import FeatureParts, remap_features
from recsys.tables.spec import DIM_MULTIPLE, BudgetSpec, check_width


@dataclass(frozen=True)
class UnifiedSpec(BudgetSpec):
    lookups: int | Literal["cardinality"] = 1
    max_lookups: int = 4
    chunk_dim: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.lookups, int) and self.lookups < 1:
            raise ValueError(f"lookups must be at least 1, got {self.lookups}")
        if self.max_lookups < 1:
            raise ValueError(f"max_lookups must be at least 1, got {self.max_lookups}")
        if self.chunk_dim is not None:
            check_width("chunk_dim", self.chunk_dim)

    def lookups_of(self, cardinality: int) -> int:
        if self.lookups == "cardinality":
            return min(self.max_lookups, max(1, math.ceil(math.log10(cardinality + 1) / 2)))
        return self.lookups

    def chunk_width(self) -> int:
        """`chunk_dim`, or by default the widest multiple of 4 at which the most lookups fit `embedding_dim`."""
        if self.chunk_dim is not None:
            return self.chunk_dim
        most = self.max_lookups if self.lookups == "cardinality" else self.lookups
        return max(DIM_MULTIPLE, self.embedding_dim // most // DIM_MULTIPLE * DIM_MULTIPLE)


class UnifiedLookup(LookupModule):
    name = "unified"
    spec_type = UnifiedSpec

    def __init__(self, spec: UnifiedSpec, statistics: FeatureStatistics) -> None:
        super().__init__(spec, statistics)
        self.chunk_dim = spec.chunk_width()
        self.lookups = {feature: spec.lookups_of(statistics.cardinalities[feature]) for feature in self.feature_names}
        self.salts = {
            feature: [derive_salt(spec.seed, feature_key(feature), lookup) for lookup in range(self.lookups[feature])]
            for feature in self.feature_names
        }
        self.projections = nn.ModuleDict(
            {
                feature: nn.Linear(self.lookups[feature] * self.chunk_dim, spec.embedding_dim, bias=False)
                for feature in self.feature_names
                if self.lookups[feature] * self.chunk_dim != spec.embedding_dim
            }
        )
        self.rows = self.table_rows(spec)
        self.configs = [
            EmbeddingBagConfig(
                name="unified",
                embedding_dim=self.chunk_dim,
                num_embeddings=self.rows,
                feature_names=[name for feature in self.feature_names for name in self.lookup_names(feature)],
            )
        ]
        self.storage = EmbeddingBagCollection(tables=self.configs)

    def table_rows(self, spec: UnifiedSpec) -> int:
        """`rows`, or the rows the budget leaves after the projections."""
        if spec.rows is not None:
            return spec.rows
        left = budget_bytes(spec.compression, spec.bytes, self.full_bytes) - self.extra_parameter_bytes()
        rows = left // (self.chunk_dim * FLOAT_BYTES)
        if rows < 1:
            raise ValueError(
                f"the budget leaves no rows for the unified table after {self.extra_parameter_bytes():,} bytes of "
                "projections; raise the budget or make lookups * chunk_dim equal embedding_dim"
            )
        return rows

    def lookup_names(self, feature: str) -> list[str]:
        return [f"{feature}/{lookup}" for lookup in range(self.lookups[feature])]

    def table_configs(self) -> list[EmbeddingBagConfig]:
        return self.configs

    def extra_parameter_bytes(self) -> int:
        return sum(parameter.numel() * FLOAT_BYTES for parameter in self.projections.parameters())

    def remap_feature(self, feature: str, ids: torch.Tensor, lengths: torch.Tensor) -> FeatureParts:
        """One hashed row per (id, lookup): every feature and lookup with a salt of its own."""
        return [
            (name, hash_ids(ids, salt, self.rows), lengths)
            for name, salt in zip(self.lookup_names(feature), self.salts[feature])
        ]

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        pooled = self.storage(remap_features(features, self.remap_feature, self.feature_names)).to_dict()
        vectors = []
        for feature in self.feature_names:
            vector = torch.cat([pooled[name] for name in self.lookup_names(feature)], dim=1)
            vectors.append(self.projections[feature](vector) if feature in self.projections else vector)
        return KeyedTensor.from_tensor_list(self.feature_names, vectors)
