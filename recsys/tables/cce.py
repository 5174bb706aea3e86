"""`cce`: two hashed tables per feature, one of whose assignments is re-learned by clustering.

Tsang and Ahle, "Clustering the Sketch: Dynamic Compression for Embedding Tables" (Clustered
Compositional Embeddings), NeurIPS 2023. Each feature has two columns of m rows; an id's vector is
the sum of one row of each. Both start as hash functions (the hashing trick with two hashes). At
the points of training the spec names, column 0 is re-learned: the current vectors of the
feature's most frequent ids are clustered by k-means into m clusters, each id's column-0 row
becomes its cluster, column 0's rows become the centroids, and column 1's rows (still hashed)
become the mean residual of the ids that hash there, so the vectors change little at that moment
while similar ids now share a row instead of random ones:

    before:     v(977) = T0[h0(977)] + T1[h1(977)]                  (two random rows)
    clustering: c(977) = nearest centroid of v(977);  T0[c] = centroid c;  T1[r] = mean residual
    after:      v(977) = T0[c(977)] + T1[h1(977)]                   (ids like 977 share T0[c])

The learned assignment is the index. It is kept as an xor retrieval structure (`retrieval`: about
1.23 slots per clustered id, each as narrow as m allows, no ids stored) holding (c - h0(id)) mod m,
so that column 0's row is (retrieved + h0(id)) mod m: the clustered ids get their clusters and
every other id (rare or unseen; the structure returns an arbitrary value for it) stays hashed.
Before the first clustering the structure is all zeros, which is the plain hash. The paper stores
the assignment as an array over the whole vocabulary; at 100x to 1000x that array alone would
exceed the budget, so here only the ids the index share holds are clustered, most frequent first.

Budget: water-filled over features as `hashing` does (a feature whose share holds its vocabulary
is exact). A clustered feature spends `index_share` of its share on the retrieval slots (and an
8-byte salt and clustering counter), the rest on 2 m rows of dim floats. Clustering uses faiss's
k-means (`iterations` Lloyd rounds on at most `points_per_centroid` sampled ids per cluster, then
every clustered id assigned exactly); it runs on rank 0 and is broadcast, so all ranks agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from recsys.data.stats import FeatureStatistics
from recsys.tables.budget import FLOAT_BYTES, feature_shares, full_rows, held_exactly
from recsys.tables.hashes import derive_salt, feature_key, hash_ids
from recsys.tables.interface import LookupModule
from recsys.tables.jagged import FeatureParts, remap_features
from recsys.tables.retrieval import (
    ATTEMPTS,
    EXTRA_SLOTS_PER_THIRD,
    SLOTS_PER_KEY,
    assign,
    peel_keys,
    retrieve,
    slot_dtype,
    third_size,
)
from recsys.tables.shards import gather_rows, write_rows
from recsys.tables.spec import BudgetSpec
from recsys.tables.vocabulary import Vocabularies

STATE_BYTES = 16
"""A clustered feature's retrieval salt and the lookup's clustering count (two int64s, the first per feature)."""


@dataclass(frozen=True)
class CCESpec(BudgetSpec):
    index_share: float = 0.1
    """The part of a clustered feature's bytes that holds its learned assignment (the rest is rows)."""
    cluster_at: tuple[float, ...] = (0.25, 0.5)
    """Fractions of training after which column 0 is re-clustered."""
    iterations: int = 10
    points_per_centroid: int = 16
    """k-means trains on at most this many sampled ids per cluster (faiss's subsampling)."""
    seed: int = 0
    exact_when_fits: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.index_share < 1:
            raise ValueError(f"index_share must be in [0, 1), got {self.index_share}")
        if any(not 0 < point <= 1 for point in self.cluster_at) or list(self.cluster_at) != sorted(self.cluster_at):
            raise ValueError(f"cluster_at must be increasing fractions of training in (0, 1], got {self.cluster_at}")
        if self.iterations < 1 or self.points_per_centroid < 1:
            raise ValueError("iterations and points_per_centroid must be at least 1")


@dataclass(frozen=True)
class FeaturePlan:
    """A clustered feature: m rows per column, and how many of its most frequent ids are clustered."""

    rows: int
    clustered: int


def slot_bytes(keys: int, rows: int) -> int:
    """Bytes of a retrieval structure for `keys` ids with values below `rows`."""
    return 3 * third_size(keys) * torch.empty(0, dtype=slot_dtype(rows - 1)).element_size() if keys else 0


def plan_feature(spec: CCESpec, cardinality: int, share: int) -> FeaturePlan:
    """Rows and clustered ids of one feature from its share of the budget (see the module docstring)."""
    row_bytes = 2 * spec.embedding_dim * FLOAT_BYTES  # one row in each column
    widest = max(1, share // row_bytes)
    slot_size = torch.empty(0, dtype=slot_dtype(widest - 1)).element_size()
    index = int(spec.index_share * share) - STATE_BYTES
    thirds = index // (3 * slot_size) - EXTRA_SLOTS_PER_THIRD
    keys = min(cardinality, max(0, math.floor(thirds * 3 / SLOTS_PER_KEY)))
    while keys and slot_bytes(keys, widest) > index:
        keys -= 1
    rows = (share - STATE_BYTES - slot_bytes(keys, widest)) // row_bytes
    if rows < 1:
        raise ValueError(f"cce needs at least {row_bytes + STATE_BYTES} bytes for a feature; its share is {share}")
    return FeaturePlan(rows=rows, clustered=keys)


def kmeans(vectors: torch.Tensor, clusters: int, spec: CCESpec) -> tuple[torch.Tensor, torch.Tensor]:
    """(centroids [k, d], each vector's centroid [n]) by faiss's k-means; every vector its own if n <= k."""
    if len(vectors) <= clusters:
        return vectors.clone(), torch.arange(len(vectors))
    import faiss

    points = vectors.numpy().astype(np.float32, copy=False)
    kmeans = faiss.Kmeans(
        points.shape[1],
        clusters,
        niter=spec.iterations,
        seed=spec.seed + 1,
        max_points_per_centroid=spec.points_per_centroid,
        min_points_per_centroid=1,
    )
    kmeans.train(points)
    _, nearest = kmeans.index.search(points, 1)
    return torch.from_numpy(kmeans.centroids.copy()), torch.from_numpy(nearest[:, 0].astype(np.int64))


def mean_rows(values: torch.Tensor, rows: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows hit, mean of the `values` that fall in each): the means of [n, d] values grouped by row."""
    sums = torch.zeros(count, values.shape[1]).index_add_(0, rows, values)
    hits = torch.bincount(rows, minlength=count)
    used = hits.nonzero().squeeze(1)
    return used, sums[used] / hits[used].unsqueeze(1)


class CCELookup(LookupModule):
    name = "cce"
    spec_type = CCESpec

    def __init__(self, spec: CCESpec, statistics: FeatureStatistics) -> None:
        super().__init__(spec, statistics)
        cardinalities = statistics.cardinalities
        exact, plans = self.plan(spec, cardinalities)
        self.plans = plans
        self.vocabularies = Vocabularies({feature: statistics.vocabulary(feature, 1) for feature in exact})
        self.statistics = statistics
        """Read only when clustering first needs a feature's most frequent ids: a lookup built for serving never
        asks for frequencies, so an exported model does not carry them."""
        self.salts = {
            feature: [derive_salt(spec.seed, feature_key(feature), column) for column in range(2)] for feature in plans
        }
        self.assignments = nn.Module()
        for feature, plan in plans.items():
            if plan.clustered:
                slots = torch.zeros(3 * third_size(plan.clustered), dtype=slot_dtype(plan.rows - 1))
                self.assignments.register_buffer(self.slot_name(feature), slots)
                self.assignments.register_buffer(self.salt_name(feature), torch.zeros(1, dtype=torch.int64))
        self.register_buffer("clusterings", torch.zeros(1, dtype=torch.int64))
        self.peeled: dict[str, tuple[list, np.ndarray]] = {}
        self.configs = [
            EmbeddingBagConfig(
                name=f"cce_{feature}",
                embedding_dim=spec.embedding_dim,
                num_embeddings=full_rows(cardinalities[feature]) if feature in exact else 2 * plans[feature].rows,
                feature_names=[feature],
            )
            for feature in self.feature_names
        ]
        self.storage = EmbeddingBagCollection(tables=self.configs)

    def plan(self, spec: CCESpec, cardinalities: dict[str, int]) -> tuple[list[str], dict[str, FeaturePlan]]:
        """The features mapped exactly, and the plan of every other feature."""
        if spec.rows is not None:  # m rows per column given: every training id clustered, its index on top
            return [], {feature: FeaturePlan(spec.rows, cardinalities[feature]) for feature in self.feature_names}
        shares = feature_shares(cardinalities, spec.embedding_dim, spec.compression, spec.bytes, self.full_bytes)
        exact = held_exactly(cardinalities, spec.embedding_dim, shares) if spec.exact_when_fits else []
        plans = {
            feature: plan_feature(spec, cardinalities[feature], shares[feature])
            for feature in self.feature_names
            if feature not in exact
        }
        return exact, plans

    def clustered_ids(self, feature: str) -> torch.Tensor:
        """The feature's most frequent training ids, the ones its clustering assigns."""
        ids, _ = self.statistics.frequencies(feature)
        return torch.from_numpy(ids[: self.plans[feature].clustered].copy())

    @staticmethod
    def slot_name(feature: str) -> str:
        return f"slots_{feature.replace('.', '_')}"

    @staticmethod
    def salt_name(feature: str) -> str:
        return f"salt_{feature.replace('.', '_')}"

    def index_bytes(self) -> int:
        """Exact features' vocabularies, the learned assignments and their salts, the clustering count."""
        return sum(buffer.numel() * buffer.element_size() for buffer in self.buffers())

    def column_rows(self, feature: str, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each id's row in column 0 (learned where clustered, else hashed) and in column 1 (hashed, offset by m)."""
        rows = self.plans[feature].rows
        first = hash_ids(ids, self.salts[feature][0], rows)
        if self.plans[feature].clustered:
            slots = getattr(self.assignments, self.slot_name(feature))
            salt = int(getattr(self.assignments, self.salt_name(feature)))
            first = (retrieve(slots, salt, ids) + first) % rows
        return first, rows + hash_ids(ids, self.salts[feature][1], rows)

    def remap_feature(self, feature: str, ids: torch.Tensor, lengths: torch.Tensor) -> FeatureParts:
        if feature in self.vocabularies.spans:
            return [(feature, self.vocabularies.rows(feature, ids), lengths)]
        first, second = self.column_rows(feature, ids)
        return [(feature, torch.stack([first, second], dim=1).reshape(-1), lengths * 2)]

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        return self.ordered(self.storage(remap_features(features, self.remap_feature, self.feature_names)))

    def after_step(self, progress: float) -> dict[str, float]:
        """Re-cluster every clustered feature when training passes the next point of `cluster_at`."""
        due = sum(1 for point in self.spec.cluster_at if progress >= point)
        if due <= int(self.clusterings):
            return {}
        self.clusterings.fill_(due)
        moved = [self.cluster(feature) for feature, plan in self.plans.items() if plan.clustered]
        return {"cce/clusterings": float(due), "cce/moved_fraction": float(np.mean(moved)) if moved else 0.0}

    @torch.no_grad()
    def cluster(self, feature: str) -> float:
        """Re-learn column 0 of `feature` (see the module docstring); the fraction of clustered ids that moved."""
        rows, table = self.plans[feature].rows, f"cce_{feature}"
        ids = self.clustered_ids(feature)
        first, second = self.column_rows(feature, ids)
        device = self.clusterings.device
        current = gather_rows(self.storage, {table: torch.cat([first, second])}, {table: self.embedding_dim}, device)
        current = current[table].cpu()
        vectors = current[: len(ids)] + current[len(ids) :]
        centroids, nearest = self.agreed(*kmeans(vectors, rows, self.spec))
        self.store_assignment(feature, ids, nearest)
        residual_rows, residuals = mean_rows(vectors - centroids[nearest], second, 2 * rows)
        write_rows(self.storage, table, torch.arange(len(centroids)), centroids)
        write_rows(self.storage, table, residual_rows, residuals)
        return float((nearest != first).float().mean())

    @staticmethod
    def agreed(centroids: torch.Tensor, nearest: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rank 0's clustering on every rank (k-means may differ in its last bits between processes)."""
        if dist.is_initialized() and dist.get_world_size() > 1:
            shared = [(centroids, nearest)]
            dist.broadcast_object_list(shared, src=0)
            centroids, nearest = shared[0]
        return centroids, nearest

    def store_assignment(self, feature: str, ids: torch.Tensor, clusters: torch.Tensor) -> None:
        """Write (cluster - h0(id)) mod m for the clustered ids into the feature's retrieval slots."""
        rows = self.plans[feature].rows
        slots = getattr(self.assignments, self.slot_name(feature))
        if feature not in self.peeled:  # the clustered ids never change: peel their slots once
            salts = [derive_salt(self.spec.seed, feature_key(feature), 2 + attempt) for attempt in range(ATTEMPTS)]
            order, positions, salt = peel_keys(ids.numpy(), salts)
            getattr(self.assignments, self.salt_name(feature)).fill_(salt)
            self.peeled[feature] = order, positions
        order, positions = self.peeled[feature]
        values = ((clusters - hash_ids(ids, self.salts[feature][0], rows)) % rows).numpy()
        slots.copy_(assign(order, positions, values, slots.numel(), slots.dtype))
