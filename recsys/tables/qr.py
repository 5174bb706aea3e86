"""`qr`: compositional embeddings from complementary partitions.

Shi, Mudigere, Naumov and Yang, "Compositional Embeddings Using Complementary Partitions for
Memory-Efficient Recommendation Systems", KDD 2020. An index i in [0, N) is split into digits of a
mixed radix (sizes m_0, ..., m_{k-1}, with m_0 * ... * m_{k-1} >= N), each digit picks a row of
its own small table, and the rows are combined, so that every index gets its own vector while the
tables hold only about k * N^(1/k) rows:

    k = 2, m_0 = 1000:  i = 123456 -> remainder 456 (table 0), quotient 123 (table 1)
    operation = "mult":    vector = T0[456] * T1[123]      (elementwise; rows have dim columns)
    operation = "add":     vector = T0[456] + T1[123]
    operation = "concat":  vector = [T0[456], T1[123]]     (rows have dim / k columns)

Digits come from integer division and remainder, never float division, so indices up to 2^63 - 1
decompose exactly. QR needs indices in [0, N): either a vocabulary of the training split
(`index = "vocabulary"`: exact, N = |V| + 1 with an out-of-vocabulary index, 8 bytes per id, which
is 1/8 of a dim-16 full table and so more than a 10x budget allows) or a seeded hash into
N = `hash_range` * (|V| + 1) (`index = "hash"`, the default: no index memory; with a range 16
times the vocabulary about 6% of ids share their index with another). Features with fewer than `threshold` ids,
or whose budget share covers a full table, stay full (mapped exactly through a vocabulary).

Memory: sum over QR features of (m_0 + ... + m_{k-1}) * row_dim * 4 bytes, plus full features'
tables and the vocabularies. With a budget the bytes are water-filled over features
(`budget.feature_shares`) and each QR feature takes the largest sizes its share allows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from recsys.data.stats import FeatureStatistics
from recsys.tables.budget import FLOAT_BYTES, INDEX_BYTES, budget_bytes, exact_bytes, full_rows, water_fill
from recsys.tables.hashes import derive_salt, feature_key, hash_ids
from recsys.tables.interface import LookupModule
from recsys.tables.jagged import FeatureParts, in_order, one_bag_per_value, remap_features, sum_bags
from recsys.tables.spec import DIM_MULTIPLE, BudgetSpec, check_split
from recsys.tables.vocabulary import Vocabularies

MAX_PARTITIONS = 8
"""At most this many partitions are tried to fit a budget: N^(1/8) rows per table is tiny for any N."""


@dataclass(frozen=True)
class QRSpec(BudgetSpec):
    operation: Literal["mult", "add", "concat"] = "mult"
    partitions: int = 2
    threshold: int = 0
    index: Literal["hash", "vocabulary"] = "hash"
    hash_range: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.partitions < 2:
            raise ValueError(f"partitions must be at least 2, got {self.partitions}")
        if self.operation == "concat":
            check_split("operation = 'concat'", self.embedding_dim, self.partitions)
        if self.hash_range < 1:
            raise ValueError(f"hash_range must be at least 1, got {self.hash_range}")

    def row_dim(self, partitions: int) -> int:
        """Width of a partition table's rows when a feature is split into `partitions`."""
        return self.embedding_dim // partitions if self.operation == "concat" else self.embedding_dim

    def partition_counts(self) -> list[int]:
        """The partition counts to try, fewest first: a feature whose share is too small gets more."""
        counts = range(self.partitions, max(self.partitions, MAX_PARTITIONS) + 1)
        return [
            count for count in counts if self.operation != "concat" or self.embedding_dim % (count * DIM_MULTIPLE) == 0
        ]


def mixed_radix_digits(indices: torch.Tensor, sizes: Sequence[int]) -> list[torch.Tensor]:
    """Digits d_j of non-negative `indices` with index = sum_j d_j * (m_0 * ... * m_{j-1}).

    The last digit is what is left of the quotient; `check_partitions` makes sure it is below m_{k-1}.
    """
    digits = []
    rest = indices
    for size in sizes[:-1]:
        digits.append(torch.remainder(rest, size))
        rest = torch.div(rest, size, rounding_mode="floor")
    digits.append(rest)
    return digits


def check_partitions(sizes: Sequence[int], index_range: int) -> None:
    """Refuse sizes whose product does not cover the range: two indices would share every digit."""
    if any(size < 1 for size in sizes):
        raise ValueError(f"partition sizes must be positive, got {list(sizes)}")
    if math.prod(sizes) < index_range:
        raise ValueError(
            f"partition sizes {list(sizes)} give {math.prod(sizes):,} digit combinations for {index_range:,} "
            "indices: distinct ids would share a vector"
        )


def sizes_for(base: int, partitions: int, index_range: int) -> list[int]:
    """[base, ..., base, ceil(N / base^(k-1))]: the smallest last partition that covers the range."""
    covered = base ** (partitions - 1)
    return [base] * (partitions - 1) + [max(1, -(-index_range // covered))]


def partition_sizes(index_range: int, partitions: int, row_budget: int) -> list[int] | None:
    """The largest balanced sizes whose rows fit `row_budget`, or None if even the smallest do not.

    Total rows (k - 1) * m + ceil(N / m^(k-1)) fall until m = N^(1/k) and rise after, so the
    largest m within budget is found by bisection on the rising side.
    """
    low = max(1, math.isqrt(index_range) if partitions == 2 else round(index_range ** (1 / partitions)))
    while sum(sizes_for(low, partitions, index_range)) > sum(sizes_for(low + 1, partitions, index_range)):
        low += 1
    if sum(sizes_for(low, partitions, index_range)) > row_budget:
        return None
    high = max(low, math.ceil(index_range ** (1 / (partitions - 1))))
    while low < high:
        middle = (low + high + 1) // 2
        if sum(sizes_for(middle, partitions, index_range)) <= row_budget:
            low = middle
        else:
            high = middle - 1
    return sizes_for(low, partitions, index_range)


@dataclass(frozen=True)
class FeaturePlan:
    """How one feature is stored: full (sizes None) or QR over `index_range` with `sizes`."""

    index_range: int
    sizes: list[int] | None


def plan_features(spec: QRSpec, statistics: FeatureStatistics, full_bytes: int) -> dict[str, FeaturePlan]:
    """Full or QR per feature, and the partition sizes, from `rows` (per feature) or the budget."""
    counts = statistics.cardinalities
    below_threshold = {feature for feature, count in counts.items() if count < spec.threshold}
    shares = None if spec.rows is not None else budget_shares(spec, counts, below_threshold, full_bytes)
    plans = {}
    for feature, count in counts.items():
        index_range = full_rows(count) if spec.index == "vocabulary" else spec.hash_range * full_rows(count)
        if spec.rows is not None:
            share = spec.rows * spec.row_dim(spec.partitions) * FLOAT_BYTES
            share += INDEX_BYTES * count if spec.index == "vocabulary" else 0
            fits = spec.rows >= full_rows(count)
        else:
            share = shares.get(feature, 0)
            fits = share >= exact_bytes(count, spec.embedding_dim)
        if feature in below_threshold or fits:
            plans[feature] = FeaturePlan(full_rows(count), None)
            continue
        plan = fitting_plan(spec, feature, count, index_range, share)
        check_partitions(plan.sizes, plan.index_range)
        plans[feature] = plan
    return plans


def budget_shares(spec: QRSpec, counts: dict[str, int], below_threshold: set[str], full_bytes: int) -> dict[str, int]:
    """The budget left after the full tables of features below `threshold`, water-filled over the rest."""
    budget = budget_bytes(spec.compression, spec.bytes, full_bytes)
    fixed = sum(exact_bytes(counts[feature], spec.embedding_dim) for feature in below_threshold)
    if fixed >= budget:
        raise ValueError(
            f"the {len(below_threshold)} features below threshold {spec.threshold:,} need {fixed:,} bytes as full "
            f"tables, the whole budget of {budget:,}; lower the threshold or the compression"
        )
    others = {
        feature: exact_bytes(count, spec.embedding_dim)
        for feature, count in counts.items()
        if feature not in below_threshold
    }
    return water_fill(others, budget - fixed) if others else {}


def fitting_plan(spec: QRSpec, feature: str, count: int, index_range: int, share: int) -> FeaturePlan:
    """The largest partition sizes within a feature's share, with as few partitions as possible.

    When even `MAX_PARTITIONS` tables do not fit and ids are hashed, the hash range shrinks to the
    largest one `spec.partitions` tables can cover (more ids then share an index, as in hashing).
    """
    index_bytes = INDEX_BYTES * count if spec.index == "vocabulary" else 0
    for partitions in spec.partition_counts():
        row_budget = (share - index_bytes) // (spec.row_dim(partitions) * FLOAT_BYTES)
        sizes = partition_sizes(index_range, partitions, row_budget)
        if sizes is not None:
            return FeaturePlan(index_range, sizes)
    row_budget = share // (spec.row_dim(spec.partitions) * FLOAT_BYTES)
    base = row_budget // spec.partitions
    if spec.index == "vocabulary" or base < 1:
        raise ValueError(
            f"qr cannot fit feature {feature!r} ({count:,} ids) in its share of {share:,} bytes "
            f"with index = {spec.index!r}; raise the budget"
            + (" or use index = 'hash'" if spec.index != "hash" else "")
        )
    return FeaturePlan(base**spec.partitions, [base] * spec.partitions)


class QRLookup(LookupModule):
    name = "qr"
    spec_type = QRSpec

    def __init__(self, spec: QRSpec, statistics: FeatureStatistics) -> None:
        super().__init__(spec, statistics)
        self.plans = plan_features(spec, statistics, self.full_bytes)
        vocabulary_features = [
            feature for feature in self.feature_names if spec.index == "vocabulary" or self.plans[feature].sizes is None
        ]
        self.vocabularies = Vocabularies(
            {feature: statistics.vocabulary(feature, 1) for feature in vocabulary_features}
        )
        self.salts = {feature: derive_salt(spec.seed, feature_key(feature)) for feature in self.feature_names}
        self.configs = [config for feature in self.feature_names for config in self.feature_configs(feature)]
        self.storage = EmbeddingBagCollection(tables=self.configs)
        if spec.operation == "mult":
            self.start_factors_near_one()

    def feature_configs(self, feature: str) -> list[EmbeddingBagConfig]:
        sizes = self.plans[feature].sizes
        if sizes is None:
            rows = self.plans[feature].index_range
            return [
                EmbeddingBagConfig(
                    name=f"qr_{feature}", embedding_dim=self.embedding_dim, num_embeddings=rows, feature_names=[feature]
                )
            ]
        return [
            EmbeddingBagConfig(
                name=f"qr_{feature}_{part}",
                embedding_dim=self.spec.row_dim(len(sizes)),
                num_embeddings=size,
                feature_names=[f"{feature}/{part}"],
            )
            for part, size in enumerate(sizes)
        ]

    def initialize_tables(self, std: float) -> None:
        super().initialize_tables(std)
        if self.spec.operation == "mult":
            self.start_factors_near_one()

    def start_factors_near_one(self) -> None:
        """With `mult`, every table but the first starts near 1, so a product starts as T0's row, not ~0."""
        with torch.no_grad():
            for feature, plan in self.plans.items():
                for part in range(1, len(plan.sizes or [])):
                    self.storage.embedding_bags[f"qr_{feature}_{part}"].weight.uniform_(0.9, 1.1)

    def indices(self, feature: str, ids: torch.Tensor) -> torch.Tensor:
        """Ids to indices in [0, index_range): vocabulary rows, or a seeded hash."""
        if feature in self.vocabularies.spans:
            return self.vocabularies.rows(feature, ids)
        return hash_ids(ids, self.salts[feature], self.plans[feature].index_range)

    def remap_feature(self, feature: str, ids: torch.Tensor, lengths: torch.Tensor) -> FeatureParts:
        indices = self.indices(feature, ids)
        sizes = self.plans[feature].sizes
        if sizes is None:
            return [(feature, indices, lengths)]
        digits = mixed_radix_digits(indices, sizes)
        return [(f"{feature}/{part}", digit, lengths) for part, digit in enumerate(digits)]

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        one_id_per_bag = bool(features.lengths().eq(1).all())
        if self.spec.operation == "mult" and not one_id_per_bag:
            vectors = self.multiplied(features)
        else:  # pooling a bag of one id is the id's vector, so the product may follow pooling
            pooled = self.storage(remap_features(features, self.remap_feature, self.feature_names)).to_dict()
            vectors = {feature: self.combine(feature, pooled) for feature in self.feature_names}
        return KeyedTensor.from_tensor_list(self.feature_names, [vectors[feature] for feature in self.feature_names])

    def combine(self, feature: str, pooled: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pooled partition vectors of one feature into its vector (exact for `mult` only with one id per bag)."""
        sizes = self.plans[feature].sizes
        if sizes is None:
            return pooled[feature]
        parts = [pooled[f"{feature}/{part}"] for part in range(len(sizes))]
        if self.spec.operation == "concat":
            return torch.cat(parts, dim=1)
        if self.spec.operation == "add":
            return torch.stack(parts).sum(dim=0)
        product = parts[0]
        for part in parts[1:]:
            product = product * part
        return product

    def multiplied(self, features: KeyedJaggedTensor) -> dict[str, torch.Tensor]:
        """`mult` does not commute with pooling: look up one vector per id, multiply, then pool by bag."""
        per_feature = [
            (feature, self.remap_feature(feature, ids, lengths), lengths)
            for feature, ids, lengths in in_order(features, self.feature_names)
        ]
        per_value = self.storage(one_bag_per_value([part for _, parts, _ in per_feature for part in parts])).to_dict()
        vectors = {}
        for feature, parts, lengths in per_feature:
            count = parts[0][1].numel()
            product = per_value[parts[0][0]][:count]
            for key, _, _ in parts[1:]:
                product = product * per_value[key][:count]
            vectors[feature] = sum_bags(product, lengths)
        return vectors
