"""`tt`: each large feature's table as a tensor train, a chain of small cores (TT-Rec).

Yin, Acun, Wu and Liu, "TT-Rec: Tensor Train Compression for Deep Learning Recommendation Model
Embeddings", MLSys 2021. A table of n rows and d columns, n <= n_1 n_2 n_3 and d = d_1 d_2 d_3, is
never stored: row i, written in mixed radix as digits (i_1, i_2, i_3), is the product of one slice
of each core,

    T[i] = G_1[i_1] G_2[i_2] G_3[i_3]     G_k[i_k]: an r_{k-1} x (d_k r_k) matrix, r_0 = r_3 = 1
    row 977 of n = 50 x 50 x 50, d = 4 x 2 x 2, rank 8:   digits (0, 19, 27)
    [1 x 4*8] @ [8 x 2*8] @ [8 x 2*1]  ->  4 x 2 x 2 = 16 floats

so memory is sum_k n_k r_{k-1} d_k r_k floats instead of n d: about 3 n^(1/3) r^2 d^(1/3).

Each core is a torchrec table, so cores shard, train with fbgemm's fused optimizers and quantize
like every table: a slice is r_{k-1} rows of d_k r_k floats (a multiple of 4 because ranks are),
or one row of r_{k-1} d_k r_k where d_k r_k is not (the last core, r_K = 1). A batch reads each
distinct slice once and every id gathers its own; bags are summed after the product (the product
is not linear in the cores). Raw ids are hashed into the n virtual rows (`space` times the
feature's ids), which needs no index: the paper's ids are already numbered 0..n-1.

Budget: water-filled over features as `hashing` does; a feature whose share holds its whole
vocabulary is exact (a full table and its 8-byte-per-id index), the others take the largest rank
(a multiple of 4, at most `max_rank`) whose cores fit their share; where even rank 4 does not, the
virtual rows shrink until it does. Ranks move in steps, so a budget is not filled exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from recsys.data.stats import FeatureStatistics
from recsys.tables.budget import FLOAT_BYTES, feature_shares, full_rows, held_exactly
from recsys.tables.hashes import derive_salt, feature_key, hash_ids
from recsys.tables.interface import LookupModule
from recsys.tables.jagged import in_order, most_values, one_bag_per_value, sum_bags
from recsys.tables.qr import mixed_radix_digits
from recsys.tables.spec import DIM_MULTIPLE, BudgetSpec
from recsys.tables.vocabulary import Vocabularies

DEFAULT_VECTOR_STD = 0.01
"""Without `init_std`, cores start so that the rows they make have about this spread."""


@dataclass(frozen=True)
class TTSpec(BudgetSpec):
    cores: int = 3
    max_rank: int = 64
    """The largest TT rank a feature may take (a multiple of 4)."""
    space: float = 2.0
    """Virtual rows per id of a feature (hashed into them): more rows, fewer collisions, cores grow as the cube root."""
    seed: int = 0
    exact_when_fits: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rows is not None:
            raise ValueError("tt is sized by compression or bytes (ranks follow from them), not rows")
        if not 2 <= self.cores <= 4:
            raise ValueError(f"cores must be 2, 3 or 4, got {self.cores}")
        if self.max_rank < DIM_MULTIPLE or self.max_rank % DIM_MULTIPLE:
            raise ValueError(f"max_rank must be a positive multiple of {DIM_MULTIPLE}, got {self.max_rank}")
        if self.space <= 0:
            raise ValueError(f"space must be positive, got {self.space}")


@dataclass(frozen=True)
class TrainShape:
    """One feature's tensor train: row factors n_k, column factors d_k and the rank between cores."""

    row_factors: tuple[int, ...]
    column_factors: tuple[int, ...]
    rank: int

    @property
    def ranks(self) -> list[int]:
        """r_0 .. r_K: 1 at both ends."""
        return [1, *[self.rank] * (len(self.row_factors) - 1), 1]

    def widths(self) -> list[int]:
        """Columns of each core's table: r_{k-1} d_k r_k."""
        ranks = self.ranks
        return [ranks[k] * self.column_factors[k] * ranks[k + 1] for k in range(len(self.row_factors))]

    def floats(self) -> int:
        return sum(rows * width for rows, width in zip(self.row_factors, self.widths()))

    def slice_rows(self, core: int) -> int:
        """Table rows per slice of a core: r_{k-1} rows of d_k r_k where that width suits fbgemm, else 1.

        A batch reads a core's slices into one padded output column block per core: rows of d_k r_k
        floats keep that block narrow (rank-28 slices as one row were 1,568 floats wide, and padding
        them to the batch's bags cost 30x the lookup itself)."""
        width = self.column_factors[core] * self.ranks[core + 1]
        return self.ranks[core] if width % DIM_MULTIPLE == 0 else 1

    def table_shape(self, core: int) -> tuple[int, int]:
        """(rows, width) of a core's table: its slices as `slice_rows` rows each."""
        per_slice = self.slice_rows(core)
        return self.row_factors[core] * per_slice, self.widths()[core] // per_slice

    @property
    def rows(self) -> int:
        """Virtual rows: the product of the row factors."""
        return math.prod(self.row_factors)


def balanced_factors(value: int, parts: int) -> tuple[int, ...]:
    """`value` as `parts` factors as equal as its prime factors allow, largest first (16, 3 -> 4, 2, 2)."""
    primes, remaining, candidate = [], value, 2
    while remaining > 1:
        while remaining % candidate == 0:
            primes.append(candidate)
            remaining //= candidate
        candidate += 1
    factors = [1] * parts
    for prime in sorted(primes, reverse=True):
        factors[factors.index(min(factors))] *= prime
    return tuple(sorted(factors, reverse=True))


def row_factors(rows: int, parts: int) -> tuple[int, ...]:
    """The smallest equal factors whose product covers `rows`: ceil(rows^(1/parts)) each."""
    side = max(1, math.ceil(rows ** (1 / parts) - 1e-9))
    while side**parts < rows:
        side += 1
    return tuple([side] * parts)


def fit_train(spec: TTSpec, cardinality: int, share: int) -> TrainShape:
    """The largest rank whose cores fit `share` bytes, shrinking the virtual rows if rank 4 does not fit."""
    columns = balanced_factors(spec.embedding_dim, spec.cores)
    rows = max(2, math.ceil(spec.space * full_rows(cardinality)))
    while True:
        factors = row_factors(rows, spec.cores)
        fitting = [
            TrainShape(factors, columns, rank)
            for rank in range(DIM_MULTIPLE, spec.max_rank + 1, DIM_MULTIPLE)
            if TrainShape(factors, columns, rank).floats() * FLOAT_BYTES <= share
        ]
        if fitting:
            return fitting[-1]
        if factors[0] <= 2:
            least = TrainShape(factors, columns, DIM_MULTIPLE).floats() * FLOAT_BYTES
            raise ValueError(
                f"tt needs at least {least:,} bytes per compressed feature (rank-{DIM_MULTIPLE} cores over "
                f"{rows} virtual rows), more than a share of {share:,}; give a lower compression"
            )
        rows = (factors[0] - 1) ** spec.cores


class TTLookup(LookupModule):
    name = "tt"
    spec_type = TTSpec
    fills_budget = False  # ranks move in steps of 4

    def __init__(self, spec: TTSpec, statistics: FeatureStatistics) -> None:
        super().__init__(spec, statistics)
        cardinalities = statistics.cardinalities
        shares = feature_shares(cardinalities, spec.embedding_dim, spec.compression, spec.bytes, self.full_bytes)
        exact = held_exactly(cardinalities, spec.embedding_dim, shares) if spec.exact_when_fits else []
        self.vocabularies = Vocabularies({feature: statistics.vocabulary(feature, 1) for feature in exact})
        self.trains = {
            feature: fit_train(spec, cardinalities[feature], shares[feature])
            for feature in self.feature_names
            if feature not in exact
        }
        self.salts = {feature: derive_salt(spec.seed, feature_key(feature)) for feature in self.trains}
        self.configs = [
            EmbeddingBagConfig(
                name=f"tt_{feature}",
                embedding_dim=spec.embedding_dim,
                num_embeddings=full_rows(cardinalities[feature]),
                feature_names=[feature],
            )
            for feature in exact
        ] + [
            EmbeddingBagConfig(
                name=f"tt_{feature}_core{core}",
                embedding_dim=width,
                num_embeddings=rows,
                feature_names=[self.core_name(feature, core)],
            )
            for feature, train in self.trains.items()
            for core, (rows, width) in enumerate(train.table_shape(core) for core in range(len(train.row_factors)))
        ]
        self.storage = EmbeddingBagCollection(tables=self.configs)
        self.initialize_cores(DEFAULT_VECTOR_STD)

    @staticmethod
    def core_name(feature: str, core: int) -> str:
        return f"{feature}/core{core}"

    @torch.no_grad()
    def initialize_tables(self, std: float) -> None:
        """Exact tables from normal(0, std), cores so that the rows they multiply into have spread `std`."""
        for config in self.configs:
            if config.feature_names[0] in self.vocabularies.spans:
                self.storage.embedding_bags[config.name].weight.normal_(0.0, std)
        self.initialize_cores(std)

    @torch.no_grad()
    def initialize_cores(self, std: float) -> None:
        """Cores from normal(0, s) with s^(2K) r^(K-1) = std^2: a product of K slices sums r^(K-1) terms of
        K factors each, so its entries have spread `std` (TT-Rec's sampled Gaussian initialisation)."""
        for feature, train in self.trains.items():
            cores = len(train.row_factors)
            spread = (std**2 / train.rank ** (cores - 1)) ** (1 / (2 * cores))
            for core in range(cores):
                self.storage.embedding_bags[f"tt_{feature}_core{core}"].weight.normal_(0.0, spread)

    def digits(self, feature: str, ids: torch.Tensor) -> list[torch.Tensor]:
        """Each id's virtual row (hashed), as one digit per core, most significant first."""
        train = self.trains[feature]
        virtual = hash_ids(ids, self.salts[feature], train.rows)
        return mixed_radix_digits(virtual, train.row_factors[::-1])[::-1]

    def storage_parts(self, features: KeyedJaggedTensor):
        """(storage key, rows, lengths) of every table read, the features' own lengths, and for each core
        each id's position among the distinct slices read from it and their number (a slice is read once per batch)."""
        parts, lengths, positions = [], {}, {}
        for feature, ids, feature_lengths in in_order(features, self.feature_names):
            lengths[feature] = feature_lengths
            if feature in self.trains:
                train = self.trains[feature]
                for core, digit in enumerate(self.digits(feature, ids)):
                    distinct, inverse = torch.unique(digit, return_inverse=True)
                    positions[self.core_name(feature, core)] = inverse, distinct.numel()
                    per_slice = train.slice_rows(core)
                    rows = (distinct.unsqueeze(1) * per_slice + torch.arange(per_slice, device=ids.device)).reshape(-1)
                    parts.append((self.core_name(feature, core), rows, torch.ones_like(rows)))
            else:
                parts.append((feature, self.vocabularies.rows(feature, ids), feature_lengths))
        return parts, lengths, positions

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        parts, lengths, positions = self.storage_parts(features)
        per_value = self.storage(
            one_bag_per_value(parts, agreed_stride(most_values(parts), features.values().device))
        ).to_dict()
        vectors = []
        for feature in self.feature_names:
            count = int(lengths[feature].sum())
            if feature in self.trains:
                rows = self.train_rows(feature, per_value, positions)
            else:
                rows = per_value[feature][:count]
            vectors.append(sum_bags(rows, lengths[feature]))
        return KeyedTensor.from_tensor_list(self.feature_names, vectors)

    def train_rows(
        self, feature: str, per_value: dict[str, torch.Tensor], positions: dict[str, tuple[torch.Tensor, int]]
    ) -> torch.Tensor:
        """[count, dim] rows of a tensor-train feature: its core slices multiplied left to right.

        The first two cores are multiplied for every pair of the batch's distinct slices at once (one
        matrix product) where those products are fewer floats than the ids' own slices, so each id
        gathers d_1 d_2 r_2 floats instead of its whole middle slice; later cores go id by id."""
        train = self.trains[feature]
        ranks, columns = train.ranks, train.column_factors
        count = positions[self.core_name(feature, 0)][0].numel()

        def distinct_slices(core: int) -> torch.Tensor:
            """[distinct, r_{k-1}, d_k r_k]: the slices the batch read, in `positions` order."""
            distinct = positions[self.core_name(feature, core)][1]
            rows = per_value[self.core_name(feature, core)][: distinct * train.slice_rows(core)]
            return rows.reshape(distinct, ranks[core], columns[core] * ranks[core + 1])

        first, second = distinct_slices(0), distinct_slices(1)
        first = first.reshape(-1, columns[0], ranks[1])
        pick_first, pick_second = positions[self.core_name(feature, 0)][0], positions[self.core_name(feature, 1)][0]
        pair_floats = len(first) * len(second) * columns[0] * columns[1] * ranks[2]
        if pair_floats <= count * (columns[0] * ranks[1] + ranks[1] * columns[1] * ranks[2]):
            pairs = torch.einsum("adr,brs->abds", first, second)
            product = pairs[pick_first, pick_second]
        else:
            product = torch.bmm(first[pick_first], second[pick_second])
        product = product.reshape(count, columns[0] * columns[1], ranks[2])
        for core in range(2, len(train.row_factors)):
            factor = distinct_slices(core)[positions[self.core_name(feature, core)][0]]
            product = torch.bmm(product, factor).reshape(count, math.prod(columns[: core + 1]), ranks[core + 1])
        return product.reshape(count, self.embedding_dim)


def agreed_stride(stride: int, device: torch.device) -> int:
    """The largest of every rank's `stride`: sharded storage needs the same number of bags on all ranks,
    and the distinct core rows a rank reads vary with its batch."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return stride
    largest = torch.tensor([stride], device=device)
    dist.all_reduce(largest, op=dist.ReduceOp.MAX)
    return int(largest)
