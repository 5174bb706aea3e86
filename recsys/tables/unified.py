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

With `exact_when_fits` (off by default, as in the paper), a feature whose water-filled share of the
budget covers a full table of its own gets one, mapped exactly through its vocabulary, as `hashing`
does; only the others are multiplexed. This isolates the paper's claim (one shared table against
per-feature tables at equal bytes) from small features colliding.

Memory: M * chunk_dim * 4 bytes plus the projections (and any exact tables with their 8-byte-per-id
vocabularies). With a budget M takes what the rest leaves.
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
from recsys.tables.budget import FLOAT_BYTES, budget_bytes, exact_bytes, feature_shares, held_exactly
from recsys.tables.hashes import derive_salt, feature_key, hash_ids
from recsys.tables.interface import LookupModule
from recsys.tables.jagged import FeatureParts, remap_features
from recsys.tables.spec import DIM_MULTIPLE, BudgetSpec, check_width
from recsys.tables.vocabulary import Vocabularies


@dataclass(frozen=True)
class UnifiedSpec(BudgetSpec):
    lookups: int | Literal["cardinality"] = 1
    max_lookups: int = 4
    chunk_dim: int | None = None
    exact_when_fits: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.lookups, int) and self.lookups < 1:
            raise ValueError(f"lookups must be at least 1, got {self.lookups}")
        if self.max_lookups < 1:
            raise ValueError(f"max_lookups must be at least 1, got {self.max_lookups}")
        if self.chunk_dim is not None:
            check_width("chunk_dim", self.chunk_dim)
        if self.exact_when_fits and self.rows is not None:
            raise ValueError("exact_when_fits needs a budget (compression or bytes), not rows")

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
        self.exact = self.exact_features(spec, statistics)
        self.vocabularies = Vocabularies({feature: statistics.vocabulary(feature, 1) for feature in self.exact})
        self.multiplexed = [feature for feature in self.feature_names if feature not in self.exact]
        self.lookups = {feature: spec.lookups_of(statistics.cardinalities[feature]) for feature in self.multiplexed}
        self.salts = {
            feature: [derive_salt(spec.seed, feature_key(feature), lookup) for lookup in range(self.lookups[feature])]
            for feature in self.multiplexed
        }
        self.projections = nn.ModuleDict(
            {
                feature: nn.Linear(self.lookups[feature] * self.chunk_dim, spec.embedding_dim, bias=False)
                for feature in self.multiplexed
                if self.lookups[feature] * self.chunk_dim != spec.embedding_dim
            }
        )
        self.rows = self.table_rows(spec, statistics)
        self.configs = [
            EmbeddingBagConfig(
                name="unified",
                embedding_dim=self.chunk_dim,
                num_embeddings=self.rows,
                feature_names=[name for feature in self.multiplexed for name in self.lookup_names(feature)],
            )
        ] + [
            EmbeddingBagConfig(
                name=f"unified_exact_{feature}",
                embedding_dim=spec.embedding_dim,
                num_embeddings=self.vocabularies.size(feature) + 1,
                feature_names=[feature],
            )
            for feature in self.feature_names
            if feature in self.exact
        ]
        self.storage = EmbeddingBagCollection(tables=self.configs)

    def exact_features(self, spec: UnifiedSpec, statistics: FeatureStatistics) -> frozenset[str]:
        """With `exact_when_fits`: features whose water-filled share covers an exact table of their own."""
        if not spec.exact_when_fits:
            return frozenset()
        counts = statistics.cardinalities
        shares = feature_shares(counts, spec.embedding_dim, spec.compression, spec.bytes, self.full_bytes)
        exact = frozenset(held_exactly(counts, spec.embedding_dim, shares))
        if exact == frozenset(counts):  # the budget covers everything: keep one feature multiplexed
            return exact - {max(counts, key=counts.get)}
        return exact

    def table_rows(self, spec: UnifiedSpec, statistics: FeatureStatistics) -> int:
        """`rows`, or the rows the budget leaves after exact tables and projections."""
        if spec.rows is not None:
            return spec.rows
        exact = sum(exact_bytes(statistics.cardinalities[feature], spec.embedding_dim) for feature in self.exact)
        left = budget_bytes(spec.compression, spec.bytes, self.full_bytes) - exact - self.extra_parameter_bytes()
        rows = left // (self.chunk_dim * FLOAT_BYTES)
        if rows < 1:
            raise ValueError(
                f"the budget leaves no rows for the unified table after {self.extra_parameter_bytes():,} bytes of "
                "projections; raise the budget or make lookups * chunk_dim equal embedding_dim"
            )
        return rows

    def lookup_names(self, feature: str) -> list[str]:
        return [f"{feature}/{lookup}" for lookup in range(self.lookups[feature])]

    def remap_feature(self, feature: str, ids: torch.Tensor, lengths: torch.Tensor) -> FeatureParts:
        """One hashed row per (id, lookup): every feature and lookup with a salt of its own."""
        if feature in self.exact:
            return [(feature, self.vocabularies.rows(feature, ids), lengths)]
        return [
            (name, hash_ids(ids, salt, self.rows), lengths)
            for name, salt in zip(self.lookup_names(feature), self.salts[feature])
        ]

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        pooled = self.storage(remap_features(features, self.remap_feature, self.feature_names)).to_dict()
        vectors = []
        for feature in self.feature_names:
            if feature in self.exact:
                vectors.append(pooled[feature])
                continue
            vector = torch.cat([pooled[name] for name in self.lookup_names(feature)], dim=1)
            vectors.append(self.projections[feature](vector) if feature in self.projections else vector)
        return KeyedTensor.from_tensor_list(self.feature_names, vectors)
