"""`hashing`: the hashing trick, each feature's ids hashed into a table of m rows.

Weinberger et al., "Feature Hashing for Large Scale Multitask Learning", ICML 2009. With k > 1
hash functions (Tito Svenstrup et al., "Hash Embeddings for Efficient Word Representations",
NeurIPS 2017, without their learned weights) an id takes k rows of one table, summed (each row
has the full dim) or concatenated (each row has dim / k), so two ids collide only if all k rows do:

    id 977 of C3, k = 2, m = 1000:  rows [h0(977) % 1000, h1(977) % 1000] = [412, 73]
    combine = "sum":     vector = T[412] + T[73]               (T has dim columns)
    combine = "concat":  vector = [T[412], T[73]]              (T has dim / 2 columns)

Memory: sum over hashed features of m_f * row_dim * 4 bytes. With a budget, m_f comes from
water-filling the bytes over features (`budget.water_fill`): the largest features are cut most.
A feature whose share covers its whole vocabulary is not hashed (`exact_when_fits`, on by
default): hashing 10 values into 11 rows would collide for no memory saved, so such a feature
maps ids exactly, as `full` does, and pays 8 bytes per vocabulary id for the index. This matches
the DLRM reference, whose modulo on dense indices leaves features smaller than the table intact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from recsys.data.stats import FeatureStatistics
from recsys.tables.budget import FLOAT_BYTES, budget_bytes, feature_shares, full_rows, held_exactly, water_fill
from recsys.tables.hashes import derive_salt, feature_key, hash_ids
from recsys.tables.interface import LookupModule
from recsys.tables.jagged import FeatureParts, remap_features
from recsys.tables.spec import BudgetSpec, check_split
from recsys.tables.vocabulary import Vocabularies


@dataclass(frozen=True)
class HashingSpec(BudgetSpec):
    hash_functions: int = 1
    combine: Literal["sum", "concat"] = "sum"
    seed: int = 0
    exact_when_fits: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hash_functions < 1:
            raise ValueError(f"hash_functions must be at least 1, got {self.hash_functions}")
        if self.combine == "concat":
            check_split("combine = 'concat'", self.embedding_dim, self.hash_functions)

    @property
    def row_dim(self) -> int:
        return self.embedding_dim // self.hash_functions if self.combine == "concat" else self.embedding_dim


@dataclass(frozen=True)
class TablePlan:
    """Rows per feature, and which features map ids exactly instead of hashing them."""

    rows: dict[str, int]
    exact: frozenset[str]


def plan_tables(spec: HashingSpec, statistics: FeatureStatistics, full_bytes: int) -> TablePlan:
    """Size every feature's table from `spec.rows` or the budget; see the module docstring."""
    row_bytes = spec.row_dim * FLOAT_BYTES
    exact_rows = {feature: full_rows(count) for feature, count in statistics.cardinalities.items()}
    if spec.rows is not None:
        shares = {feature: spec.rows * row_bytes for feature in statistics.features}
    elif spec.exact_when_fits:
        shares = feature_shares(statistics.cardinalities, spec.embedding_dim, spec.compression, spec.bytes, full_bytes)
    else:
        sizes = {feature: rows * row_bytes for feature, rows in exact_rows.items()}
        shares = water_fill(sizes, budget_bytes(spec.compression, spec.bytes, full_bytes))
    held = held_exactly(statistics.cardinalities, spec.embedding_dim, shares) if spec.exact_when_fits else []
    exact = frozenset(held)
    rows = {
        feature: exact_rows[feature] if feature in exact else max(1, share // row_bytes)
        for feature, share in shares.items()
    }
    return TablePlan(rows=rows, exact=exact)


class HashingLookup(LookupModule):
    name = "hashing"
    spec_type = HashingSpec

    def __init__(self, spec: HashingSpec, statistics: FeatureStatistics) -> None:
        super().__init__(spec, statistics)
        plan = plan_tables(spec, statistics, self.full_bytes)
        self.rows = plan.rows
        self.exact = plan.exact
        self.vocabularies = Vocabularies(
            {feature: statistics.vocabulary(feature, 1) for feature in self.feature_names if feature in self.exact}
        )
        self.salts = {
            feature: [derive_salt(spec.seed, feature_key(feature), function) for function in range(spec.hash_functions)]
            for feature in self.feature_names
        }
        self.configs = [
            EmbeddingBagConfig(
                name=f"hashing_{feature}",
                embedding_dim=spec.embedding_dim if feature in self.exact else spec.row_dim,
                num_embeddings=self.rows[feature],
                feature_names=self.storage_features(feature),
            )
            for feature in self.feature_names
        ]
        self.storage = EmbeddingBagCollection(tables=self.configs)

    def storage_features(self, feature: str) -> list[str]:
        """Names the storage knows a feature by: itself, or one per hash function when concatenating."""
        if self.spec.combine == "concat" and self.spec.hash_functions > 1 and feature not in self.exact:
            return [f"{feature}/h{function}" for function in range(self.spec.hash_functions)]
        return [feature]

    def remap(self, features: KeyedJaggedTensor) -> KeyedJaggedTensor:
        """Ids to hashed (or, for exact features, vocabulary) rows, feature by feature."""
        return remap_features(features, self.remap_feature, self.feature_names)

    def remap_feature(self, feature: str, ids: torch.Tensor, lengths: torch.Tensor) -> FeatureParts:
        if feature in self.exact:
            return [(feature, self.vocabularies.rows(feature, ids), lengths)]
        rows = torch.stack([hash_ids(ids, salt, self.rows[feature]) for salt in self.salts[feature]], dim=1)
        names = self.storage_features(feature)
        if len(names) == 1:  # sum: an id's k rows share its bag
            return [(feature, rows.reshape(-1), lengths * rows.shape[1])]
        return [(name, part, lengths) for name, part in zip(names, rows.unbind(dim=1))]

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        pooled = self.storage(self.remap(features))
        if self.spec.combine == "sum" or self.spec.hash_functions == 1:
            return self.ordered(pooled)
        vectors = pooled.to_dict()  # concat: a feature's vector is its parts side by side
        parts = [[vectors[name] for name in self.storage_features(feature)] for feature in self.feature_names]
        return KeyedTensor.from_tensor_list(self.feature_names, [torch.cat(part, dim=1) for part in parts])
