"""`graphhash`: ids that interact with the same things share a row; clusters of the interaction graph.

Wu, Fang, Yang, Wang, Zhang, Shah, Ju and Mutlu ("GraphHash: Graph Clustering Enables Parameter
Efficiency in Recommender Systems", 2024; snap-research/GraphHash): in place of a random hash, ids
of two features (users and items) are clustered by modularity on the bipartite graph of the
training rows that join them, and each cluster gets one row of its side's table. Ids that
interact alike collide on purpose, so the budget goes where collisions cost least:

    training rows (user, item)  ->  graph: user 7 - item 40 (2 clicks), ...
    Louvain at the resolution that fills the budget (`graph_clusters`)  ->  user 7: cluster 3
    id 7 --retrieval structure--> cluster 3 --> user table row 3

The id -> cluster maps are the index. They are kept as xor retrieval structures (`retrieval`):
about 1.23 slots per graph id, each slot one byte below 256 clusters and two below 32,768, instead
of an 8-byte id and a cluster number per id. An id outside the graph (unseen, or never clicked with
`edges = "clicks"`) reads an arbitrary slot combination: it is hashed into the clusters, as the
paper hashes unseen ids.

Budget: like `hashing`, the bytes are water-filled over features (`exact_when_fits`: a feature
whose share holds its whole vocabulary maps ids exactly), or with `fallback = "full"` every other
feature is exact and the graph pair takes what is left. The pair's two shares pay for the
retrieval structures first; the rest is rows, and a bisection on the resolution finds the finest
clustering with at most that many rows over both sides; a graph that no resolution fits (more
separate parts than rows) has no communities to share at this budget, and its ids are packed into
the rows busiest first, which spreads traffic more evenly than hashing. The two fields are
`fields`, else the two features with the most ids. The clustering runs once per prepared cache and budget and is kept in
the cache's `stats/graphhash/`.

Memory: sum_f rows_f * dim * 4 bytes, plus 8 bytes per id of exact features, plus the retrieval
slots (1, 2 or 4 bytes each) of the pair.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from recsys.data.stats import FeatureStatistics
from recsys.tables.budget import FLOAT_BYTES, budget_bytes, exact_bytes, full_rows
from recsys.tables.graph_clusters import BipartiteClusters, cluster_count, cluster_to_rows
from recsys.tables.hashes import derive_salt, feature_key, hash_ids
from recsys.tables.hashing import HashingSpec, plan_tables
from recsys.tables.interface import LookupModule
from recsys.tables.jagged import FeatureParts, remap_features
from recsys.tables.retrieval import (
    EXTRA_SLOTS_PER_THIRD,
    SLOTS_PER_KEY,
    build_retrieval,
    retrieve,
    slot_dtype,
    third_size,
)
from recsys.tables.spec import BudgetSpec
from recsys.tables.vocabulary import Vocabularies

CLUSTERS_DIRECTORY = "graphhash"
CLUSTERING_VERSION = 3
START_BYTES = 4
"""Each cluster's first row, an int32."""


@dataclass(frozen=True)
class GraphHashSpec(BudgetSpec):
    fields: tuple[str, ...] = ()
    """The two features of the graph (users, items); empty: the two with the most ids."""
    edges: Literal["clicks", "rows"] = "clicks"
    """Which training rows join two ids: clicks only (interactions, as the paper's), or every row.
    Clicks put a label into the map: a cluster made of few clicks tells the model those rows' labels
    (on random pairs, a sure overfit); compare both on validation where the data is not user-item."""
    fallback: Literal["hashing", "full"] = "hashing"
    index_share: float = 0.5
    """At most this part of the pair's bytes goes to id -> cluster maps: past it, only the most
    connected ids are mapped and the rest hashed (at 100x on dim 16 there is under a byte per id)."""
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rows is not None:
            raise ValueError("graphhash is sized by compression or bytes (the clusters follow from them), not rows")
        if self.fields and (len(self.fields) != 2 or self.fields[0] == self.fields[1]):
            raise ValueError(f"fields must name two different features (users, items), got {list(self.fields)}")
        if not 0 < self.index_share < 1:
            raise ValueError(f"index_share must be between 0 and 1, got {self.index_share}")


@dataclass
class ClusterMap:
    """One graph feature's index: id -> cluster (retrieval slots and their salt), cluster -> its rows."""

    slots: torch.Tensor
    salt: int
    row_starts: torch.Tensor
    """int32 [clusters + 1]: cluster c owns rows row_starts[c] .. row_starts[c + 1] - 1."""


@dataclass
class GraphPlan:
    """Everything a graphhash lookup is built from: rows per feature and each feature's index."""

    rows: dict[str, int]
    exact: dict[str, np.ndarray]
    """Vocabularies of the features mapped exactly."""
    maps: dict[str, ClusterMap]
    resolution: float | None = None


def graph_fields(spec: GraphHashSpec, statistics: FeatureStatistics) -> tuple[str, str]:
    """The spec's two fields, checked, or the two features with the most ids."""
    if not spec.fields:
        largest = sorted(statistics.features, key=lambda feature: -statistics.cardinalities[feature])
        if len(largest) < 2:
            raise ValueError("graphhash needs at least two features to build a graph of")
        return largest[0], largest[1]
    unknown = [feature for feature in spec.fields if feature not in statistics.cardinalities]
    if unknown:
        raise ValueError(f"fields names unknown features {unknown}; the data has {', '.join(statistics.features)}")
    return spec.fields[0], spec.fields[1]


def plan_graph_tables(spec: GraphHashSpec, statistics: FeatureStatistics, full_bytes: int) -> GraphPlan:
    """Rows and indexes of every feature within the budget (see the module docstring)."""
    pair = graph_fields(spec, statistics)
    row_bytes = spec.embedding_dim * FLOAT_BYTES
    cardinalities = statistics.cardinalities
    budget = budget_bytes(spec.compression, spec.bytes, full_bytes)
    if spec.fallback == "full":
        others = [feature for feature in statistics.features if feature not in pair]
        exact = set(others)
        rows = {feature: full_rows(cardinalities[feature]) for feature in others}
        pair_bytes = budget - sum(exact_bytes(cardinalities[feature], spec.embedding_dim) for feature in others)
    else:
        hashing = HashingSpec(
            strategy="hashing", embedding_dim=spec.embedding_dim, compression=spec.compression, bytes=spec.bytes
        )
        tables = plan_tables(hashing, statistics, full_bytes)
        exact, rows = set(tables.exact), dict(tables.rows)
        pair_bytes = sum(
            exact_bytes(cardinalities[feature], spec.embedding_dim) if feature in exact else rows[feature] * row_bytes
            for feature in pair
        )
    clustered = pair_bytes < sum(exact_bytes(cardinalities[feature], spec.embedding_dim) for feature in pair)
    exact = exact - set(pair) if clustered else exact | set(pair)
    rows |= {feature: full_rows(cardinalities[feature]) for feature in exact}
    vocabularies = {  # in feature order, as the serving form rebuilds them
        feature: statistics.vocabulary(feature, 1) for feature in statistics.features if feature in exact
    }
    if not clustered:
        return GraphPlan(rows=rows, exact=vocabularies, maps={})
    clusters, spare = pair_clusters(spec, statistics, pair, pair_bytes, row_bytes)
    sides = (
        (clusters.first_ids, clusters.first_clusters, cardinalities[pair[0]]),
        (clusters.second_ids, clusters.second_clusters, cardinalities[pair[1]]),
    )
    extra = share_rows(np.array([count for _, _, count in sides]), spare)
    maps = {}
    for side, (feature, (ids, labels, _)) in enumerate(zip(pair, sides)):
        sizes = np.bincount(labels, minlength=cluster_count(labels)) if len(labels) else np.ones(1, dtype=np.int64)
        counts = 1 + share_rows(sizes, int(extra[side]))
        slots, salt = build_retrieval(ids, labels, derive_salt(spec.seed, side + 1))
        starts = torch.from_numpy(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
        maps[feature] = ClusterMap(slots=slots, salt=salt, row_starts=starts)
        rows[feature] = int(counts.sum())
    return GraphPlan(rows=rows, exact=vocabularies, maps=maps, resolution=clusters.resolution)


def share_rows(weights: np.ndarray, total: int) -> np.ndarray:
    """`total` rows shared in proportion to `weights` (largest remainders first), as integers."""
    exact = weights / max(weights.sum(), 1) * total
    shares = np.floor(exact).astype(np.int64)
    shares[np.argsort(-(exact - shares), kind="stable")[: total - shares.sum()]] += 1
    return shares


def pair_clusters(
    spec: GraphHashSpec, statistics: FeatureStatistics, pair: tuple[str, str], pair_bytes: int, row_bytes: int
) -> tuple[BipartiteClusters, int]:
    """The pair's clusters for the rows `pair_bytes` leave after the retrieval slots (each cluster also
    costs its 4-byte start), made once per key, and the rows left over beyond one per cluster."""
    first, second, weights = statistics.co_occurrences(pair[0], pair[1], clicks_only=spec.edges == "clicks")
    width = slot_dtype(max(pair_bytes // row_bytes - 1, 0)).itemsize  # the widest slots the clusters can need
    first, second, weights = busiest_edges(first, second, weights, pair_bytes * spec.index_share / width)
    slots = [3 * third_size(len(np.unique(ids))) for ids in (first, second)]
    index = sum(slots) * width + 2 * START_BYTES
    rows = (pair_bytes - index) // (row_bytes + START_BYTES)
    if rows < 2:
        raise ValueError(
            f"graphhash: {pair_bytes:,} bytes for {pair[0]} and {pair[1]} do not hold two rows; "
            "give a lower compression or a smaller index_share"
        )
    key = {
        "fields": pair,
        "edges": spec.edges,
        "rows": int(rows),
        "nodes": [len(np.unique(ids)) for ids in (first, second)],
        "seed": spec.seed,
        "version": CLUSTERING_VERSION,
        "graph": graph_digest(first, second, weights),
    }
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    def cluster() -> BipartiteClusters:
        return cluster_to_rows(first, second, weights, int(rows), spec.seed)

    clusters = remembered(name, lambda: cached(statistics.directory, name, cluster))
    index = sum(count * slot_dtype(side - 1).itemsize for count, side in zip(slots, clusters.rows))
    index += (sum(clusters.rows) + 2) * START_BYTES
    return clusters, (pair_bytes - index) // row_bytes - sum(clusters.rows)


def busiest_edges(
    first: np.ndarray, second: np.ndarray, weights: np.ndarray, slots: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The edges among the most connected ids of each side, as many as `slots` retrieval slots can map
    (all, when they fit): the rest are hashed into the clusters like unseen ids, so a high compression
    still leaves most bytes to rows."""
    degrees = [np.unique(ids, return_inverse=True) for ids in (first, second)]
    nodes = sum(len(unique) for unique, _ in degrees)
    fraction = min(1.0, (slots / 3 - 2 * EXTRA_SLOTS_PER_THIRD) / (SLOTS_PER_KEY / 3) / max(nodes, 1))
    if fraction >= 1.0:
        return first, second, weights
    keep = np.ones(len(first), dtype=bool)
    for unique, inverse in degrees:
        strength = np.bincount(inverse, weights=weights, minlength=len(unique))
        kept = np.zeros(len(unique), dtype=bool)
        kept[np.argsort(-strength, kind="stable")[: max(1, int(fraction * len(unique)))]] = True
        keep &= kept[inverse]
    return first[keep], second[keep], weights[keep]


def graph_digest(first: np.ndarray, second: np.ndarray, weights: np.ndarray) -> str:
    """A digest of the edges, so a clustering is reused only for the very same graph."""
    digest = hashlib.sha256()
    for array in (first, second, weights):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


REMEMBERED: dict[str, BipartiteClusters] = {}
"""The clusterings this process made or read, by key: lookups rebuilt in one process (a sweep's
seeds, a replayed record, statistics without a cache directory) cluster a graph once."""
REMEMBERED_MOST = 16


def remembered(name: str, compute) -> BipartiteClusters:
    """`compute()` once per process and key (the oldest forgotten past `REMEMBERED_MOST`)."""
    if name not in REMEMBERED:
        if len(REMEMBERED) >= REMEMBERED_MOST:
            REMEMBERED.pop(next(iter(REMEMBERED)))
        REMEMBERED[name] = compute()
    return REMEMBERED[name]


def cached(directory: Path | None, name: str, compute) -> BipartiteClusters:
    """`compute()`, or its result saved as `directory/graphhash/<name>.npz` (no directory: not saved)."""
    if directory is None:
        return compute()
    path = directory / CLUSTERS_DIRECTORY / f"{name}.npz"
    if path.exists():
        with np.load(path) as saved:
            arrays = {field: saved[field] for field in saved.files if field != "resolution"}
            return BipartiteClusters(**arrays, resolution=float(saved["resolution"]))
    clusters = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.npz")
    np.savez(partial, **{**clusters.__dict__, "resolution": np.float64(clusters.resolution)})
    os.replace(partial, path)
    return clusters


class GraphHashLookup(LookupModule):
    name = "graphhash"
    spec_type = GraphHashSpec

    def __init__(self, spec: GraphHashSpec, statistics: FeatureStatistics, plan: GraphPlan | None = None) -> None:
        super().__init__(spec, statistics)
        plan = plan or plan_graph_tables(spec, statistics, self.full_bytes)
        self.rows = plan.rows
        self.resolution = plan.resolution
        self.vocabularies = Vocabularies(plan.exact, persistent=True)
        self.salts = {feature: derive_salt(spec.seed, feature_key(feature)) for feature in self.feature_names}
        self.retrieval_salts = {feature: cluster_map.salt for feature, cluster_map in plan.maps.items()}
        for feature, cluster_map in plan.maps.items():
            self.register_buffer(self.buffer_name("slots", feature), cluster_map.slots)
            self.register_buffer(self.buffer_name("row_starts", feature), cluster_map.row_starts)
        self.configs = [
            EmbeddingBagConfig(
                name=f"graphhash_{feature}",
                embedding_dim=spec.embedding_dim,
                num_embeddings=self.rows[feature],
                feature_names=[feature],
            )
            for feature in self.feature_names
        ]
        self.storage = EmbeddingBagCollection(tables=self.configs)

    @staticmethod
    def buffer_name(kind: str, feature: str) -> str:
        return f"{kind}_{feature.replace('.', '_')}"

    def index_bytes(self) -> int:
        """Exact features' vocabularies and the pair's maps (retrieval slots, cluster starts)."""
        return sum(buffer.numel() * buffer.element_size() for buffer in self.buffers())

    def graph_rows(self, feature: str, ids: torch.Tensor) -> torch.Tensor:
        """Each id's cluster, then a row among the cluster's rows by a hash of the id."""
        starts = getattr(self, self.buffer_name("row_starts", feature)).to(torch.int64)
        slots = getattr(self, self.buffer_name("slots", feature))
        clusters = retrieve(slots, self.retrieval_salts[feature], ids) % (starts.numel() - 1)
        first = starts[clusters]
        return first + hash_ids(ids, self.salts[feature], starts[clusters + 1] - first)

    def remap_feature(self, feature: str, ids: torch.Tensor, lengths: torch.Tensor) -> FeatureParts:
        if feature in self.vocabularies.spans:
            return [(feature, self.vocabularies.rows(feature, ids), lengths)]
        if feature in self.retrieval_salts:
            return [(feature, self.graph_rows(feature, ids), lengths)]
        return [(feature, hash_ids(ids, self.salts[feature], self.rows[feature]), lengths)]

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        return self.ordered(self.storage(remap_features(features, self.remap_feature, self.feature_names)))

    def serving_shape(self) -> dict[str, int]:
        """Rows per feature, vocabulary sizes of exact features, and the sizes and salts of the pair's maps."""
        shape = {f"{feature}/rows": rows for feature, rows in self.rows.items()}
        shape |= {f"{feature}/vocabulary": self.vocabularies.size(feature) for feature in self.vocabularies.spans}
        for feature, salt in self.retrieval_salts.items():
            shape[f"{feature}/slots"] = getattr(self, self.buffer_name("slots", feature)).numel()
            shape[f"{feature}/clusters"] = getattr(self, self.buffer_name("row_starts", feature)).numel() - 1
            shape[f"{feature}/salt"] = salt
        return shape

    @classmethod
    def serving_form(
        cls, spec: GraphHashSpec, statistics: FeatureStatistics, shape: dict[str, int] | None
    ) -> GraphHashLookup:
        """An empty lookup of `shape`, to load a saved state (vocabularies and maps included) into."""
        if shape is None:
            raise ValueError("the serving form of graphhash tables needs their shape (rows, maps)")
        features = statistics.features
        exact = {
            feature: np.arange(shape[f"{feature}/vocabulary"], dtype=np.int64)
            for feature in features
            if f"{feature}/vocabulary" in shape
        }
        maps = {
            feature: ClusterMap(
                slots=torch.zeros(shape[f"{feature}/slots"], dtype=slot_dtype(shape[f"{feature}/clusters"] - 1)),
                salt=shape[f"{feature}/salt"],
                row_starts=torch.zeros(shape[f"{feature}/clusters"] + 1, dtype=torch.int32),
            )
            for feature in features
            if f"{feature}/slots" in shape
        }
        rows = {feature: shape[f"{feature}/rows"] for feature in features}
        return cls(spec, statistics, GraphPlan(rows=rows, exact=exact, maps=maps))
