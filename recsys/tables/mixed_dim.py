"""`mixed_dim`: mixed-dimension embeddings, narrow rows for large vocabularies.

Ginart, Naumov, Mudigere, Yang and Zou, "Mixed Dimension Embeddings with Application to
Memory-Efficient Recommendation Systems", ISIT 2021. Rows of a large vocabulary are each queried
rarely, so they get fewer dimensions. With n_f the feature's number of rows (`by = "cardinality"`)
or its effective number of rows, the perplexity 2^H of its id frequencies (`by = "popularity"`),
the dimension follows the power rule

    d_f = clamp(round4(lambda * n_f^(-alpha)), min_dim, embedding_dim)       (alpha = 0.3 by default)

rounded to a multiple of 4 (fbgemm's fused tables need row widths divisible by 4, so at dim 16 the
dims are 4, 8, 12 or 16; the rule has more room at larger model dims)
with lambda set by `base_dim` (the smallest feature gets it) or, by bisection, by the budget
(`compression` or `bytes`). Optionally dims are rounded to powers of two. Every feature narrower
than `embedding_dim` gets a learned linear projection (no bias) to it, so dot-interaction models
work; the projections are counted in memory:

    C3: 80,000 rows of d = 4  ->  lookup [B, 4]  ->  projection 4 x 16  ->  [B, 16]

Ids become rows exactly through the training vocabulary (`index = "vocabulary"`, 8 bytes per
id), or by a seeded hash into ceil(`rows_factor` * (|V_f| + 1)) rows (`index = "hash"`, no index).
At dim 16 the vocabulary alone is 1/8 of the full table, and the narrowest rows (4 columns) are
1/4 of it, so past about 3x the hash index and fewer rows than ids (`rows_factor` < 1) are needed.

Memory: sum_f rows_f * d_f * 4 + sum_{d_f < dim} d_f * dim * 4 bytes, plus the vocabularies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from recsys.data.stats import FeatureStatistics
from recsys.tables.budget import FLOAT_BYTES, budget_bytes, full_rows
from recsys.tables.hashes import derive_salt, feature_key, hash_ids
from recsys.tables.interface import LookupModule
from recsys.tables.jagged import FeatureParts, remap_features
from recsys.tables.spec import DIM_MULTIPLE, TableSpec, check_width
from recsys.tables.vocabulary import Vocabularies


@dataclass(frozen=True)
class MixedDimSpec(TableSpec):
    compression: float | None = None
    bytes: int | None = None
    base_dim: int | None = None
    alpha: float = 0.3
    by: Literal["cardinality", "popularity"] = "cardinality"
    min_dim: int = DIM_MULTIPLE
    round_to_power_of_two: bool = False
    index: Literal["vocabulary", "hash"] = "vocabulary"
    rows_factor: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        given = [name for name in ("compression", "bytes", "base_dim") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of compression, bytes or base_dim; got {', '.join(given) or 'none'}")
        if self.compression is not None and self.compression < 1:
            raise ValueError(f"compression must be at least 1, got {self.compression}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be non-negative, got {self.alpha}")
        check_width("min_dim", self.min_dim)
        if self.min_dim > self.embedding_dim:
            raise ValueError(f"min_dim must be at most embedding_dim = {self.embedding_dim}, got {self.min_dim}")
        if self.base_dim is not None:
            check_width("base_dim", self.base_dim)
            if self.base_dim > self.embedding_dim:
                raise ValueError(f"base_dim must be at most embedding_dim = {self.embedding_dim}, got {self.base_dim}")
        if self.rows_factor <= 0 or (self.index == "vocabulary" and self.rows_factor != 1.0):
            raise ValueError(f"rows_factor must be positive, and 1 with index = 'vocabulary'; got {self.rows_factor}")

    def budget_label(self) -> str:
        if self.compression is not None:
            return f"{self.compression:g}x"
        return f"{self.bytes} bytes" if self.bytes is not None else f"base_dim {self.base_dim}"


def effective_rows(statistics: FeatureStatistics, feature: str, by: str) -> float:
    """n_f of the power rule: the vocabulary size, or the perplexity of the id frequencies."""
    if by == "cardinality":
        return float(full_rows(statistics.cardinalities[feature]))
    counts = statistics.frequencies(feature)[1].astype(np.float64)
    probabilities = counts / counts.sum()
    return float(2.0 ** -(probabilities * np.log2(probabilities)).sum())


def power_rule_dims(sizes: dict[str, float], scale: float, spec: MixedDimSpec) -> dict[str, int]:
    """d_f = scale * n_f^-alpha rounded to a multiple of 4 (or a power of two), within [min_dim, dim]."""
    dims = {}
    for feature, size in sizes.items():
        dim = scale * size ** (-spec.alpha)
        if spec.round_to_power_of_two:
            dim = 2 ** round(math.log2(max(dim, 1e-9)))
        dim = round(dim / DIM_MULTIPLE) * DIM_MULTIPLE
        dims[feature] = min(spec.embedding_dim, max(spec.min_dim, dim))
    return dims


class MixedDimLookup(LookupModule):
    name = "mixed_dim"
    spec_type = MixedDimSpec
    fills_budget = False  # widths move by 4 columns: widening the largest feature may not fit

    def __init__(self, spec: MixedDimSpec, statistics: FeatureStatistics) -> None:
        super().__init__(spec, statistics)
        counts = statistics.cardinalities
        self.rows = {
            feature: math.ceil(spec.rows_factor * full_rows(counts[feature])) for feature in self.feature_names
        }
        vocabulary = {feature: statistics.vocabulary(feature, 1) for feature in self.feature_names}
        self.vocabularies = Vocabularies(vocabulary if spec.index == "vocabulary" else {})
        self.sizes = {feature: effective_rows(statistics, feature, spec.by) for feature in self.feature_names}
        self.dims = self.choose_dims(spec)
        self.salts = {feature: derive_salt(spec.seed, feature_key(feature)) for feature in self.feature_names}
        self.configs = [
            EmbeddingBagConfig(
                name=f"mixed_dim_{feature}",
                embedding_dim=self.dims[feature],
                num_embeddings=self.rows[feature],
                feature_names=[feature],
            )
            for feature in self.feature_names
        ]
        self.storage = EmbeddingBagCollection(tables=self.configs)
        self.projections = nn.ModuleDict(
            {
                feature: nn.Linear(dim, spec.embedding_dim, bias=False)
                for feature, dim in self.dims.items()
                if dim != spec.embedding_dim
            }
        )

    def bytes_for(self, dims: dict[str, int]) -> int:
        """Total bytes of tables, projections and vocabularies with these dims."""
        tables = sum(self.rows[feature] * dim for feature, dim in dims.items())
        projections = sum(dim * self.embedding_dim for dim in dims.values() if dim != self.embedding_dim)
        return (tables + projections) * FLOAT_BYTES + self.vocabularies.bytes()

    def choose_dims(self, spec: MixedDimSpec) -> dict[str, int]:
        """Dims from `base_dim`, or the widest power-rule dims within the budget (bisection on lambda)."""
        if spec.base_dim is not None:
            smallest = min(self.sizes.values())
            return power_rule_dims(self.sizes, spec.base_dim * smallest**spec.alpha, spec)
        budget = budget_bytes(spec.compression, spec.bytes, self.full_bytes)
        narrowest = {feature: spec.min_dim for feature in self.sizes}
        if self.bytes_for(narrowest) > budget:
            raise ValueError(
                f"mixed_dim needs at least {self.bytes_for(narrowest):,} bytes at min_dim {spec.min_dim} "
                f"(index = {spec.index!r}), more than the budget of {budget:,}; use "
                + ("index = 'hash' with " if spec.index == "vocabulary" else "")
                + "a smaller rows_factor, or a lower compression"
            )
        low, high = 0.0, spec.embedding_dim * max(self.sizes.values()) ** spec.alpha
        for _ in range(60):
            middle = (low + high) / 2
            low, high = (
                (middle, high) if self.bytes_for(power_rule_dims(self.sizes, middle, spec)) <= budget else (low, middle)
            )
        return power_rule_dims(self.sizes, low, spec)

    def remap_feature(self, feature: str, ids: torch.Tensor, lengths: torch.Tensor) -> FeatureParts:
        if feature in self.vocabularies.spans:
            return [(feature, self.vocabularies.rows(feature, ids), lengths)]
        return [(feature, hash_ids(ids, self.salts[feature], self.rows[feature]), lengths)]

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        pooled = self.storage(remap_features(features, self.remap_feature, self.feature_names)).to_dict()
        vectors = [
            self.projections[feature](pooled[feature]) if feature in self.projections else pooled[feature]
            for feature in self.feature_names
        ]
        return KeyedTensor.from_tensor_list(self.feature_names, vectors)
