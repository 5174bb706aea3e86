"""Clusters of a bipartite id graph by modularity, at a resolution that gives a wanted number of rows.

Pure functions for `graphhash`: the nodes are the ids of two features (users and items), an edge
joins two ids seen in one training row (weighted by how often), and Louvain's method (Blondel,
Guillaume, Lambiotte and Lefebvre, "Fast unfolding of communities in large networks", 2008) groups
them to maximise modularity with resolution gamma,

    Q = 1/(2m) sum_ij (A_ij - gamma k_i k_j / (2m)) [c_i = c_j]

Larger gamma gives more, smaller clusters; a bisection on log gamma finds the largest clustering
whose clusters, counted on each side (a cluster holding users and items is one row of each table),
fit the rows the budget gives. Louvain is igraph's `community_multilevel`: on 115k nodes and 374k
weighted edges it took 0.61 s here against 2.0 s for igraph's Leiden, 7.2 s for leidenalg and
10.4 s for networkx (benchmarks/bench_graph_clustering.py), at equal modularity.

    edges (user, item, count)   (7, 40, 2) (7, 41, 1) (9, 40, 1) (12, 99, 3)
    clusters                     users {7: 0, 9: 0, 12: 1}   items {40: 0, 41: 0, 99: 1}
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass

import numpy as np

RESOLUTION_STEPS = 16
SMALLEST_RESOLUTION = 1e-4


@dataclass(frozen=True)
class BipartiteClusters:
    """Cluster numbers 0..clusters-1 of each side's ids (numbered per side, most frequent cluster first)."""

    first_ids: np.ndarray
    first_clusters: np.ndarray
    second_ids: np.ndarray
    second_clusters: np.ndarray
    resolution: float

    @property
    def rows(self) -> tuple[int, int]:
        """Rows each side's table needs: its number of clusters (at least one)."""
        return (cluster_count(self.first_clusters), cluster_count(self.second_clusters))


def cluster_count(clusters: np.ndarray) -> int:
    return max(1, int(clusters.max()) + 1) if len(clusters) else 1


def renumber(labels: np.ndarray) -> np.ndarray:
    """Labels as 0..k-1, the largest cluster first (ties by label), so numbers do not depend on igraph's."""
    unique, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    order = np.lexsort((unique, -counts))
    rank = np.empty(len(unique), dtype=np.int64)
    rank[order] = np.arange(len(unique))
    return rank[inverse]


def louvain(first: np.ndarray, second: np.ndarray, weights: np.ndarray, resolution: float, seed: int):
    """Louvain labels of the graph's nodes: first side's distinct ids, then second side's."""
    import igraph

    first_ids, first_index = np.unique(first, return_inverse=True)
    second_ids, second_index = np.unique(second, return_inverse=True)
    edges = np.stack([first_index, second_index + len(first_ids)], axis=1)
    graph = igraph.Graph(n=len(first_ids) + len(second_ids), edges=edges)
    graph.es["weight"] = np.asarray(weights, dtype=np.float64)
    igraph.set_random_number_generator(random.Random(seed))
    try:
        labels = np.asarray(graph.community_multilevel(weights="weight", resolution=resolution).membership)
    finally:
        igraph.set_random_number_generator(random)
    return first_ids, labels[: len(first_ids)], second_ids, labels[len(first_ids) :]


def cluster_at(
    first: np.ndarray, second: np.ndarray, weights: np.ndarray, resolution: float, seed: int
) -> BipartiteClusters:
    """Louvain at one resolution, each side's clusters renumbered 0..k-1."""
    first_ids, first_labels, second_ids, second_labels = louvain(first, second, weights, resolution, seed)
    return BipartiteClusters(first_ids, renumber(first_labels), second_ids, renumber(second_labels), resolution)


def cluster_to_rows(
    first: np.ndarray, second: np.ndarray, weights: np.ndarray, rows: int, seed: int
) -> BipartiteClusters:
    """The finest clustering (bisection on log resolution) whose two sides need at most `rows` rows in all.

    Every node alone needs one row per node: then no clustering is done. A graph of more parts
    than rows (sparse, nearly random pairs) needs more rows at every resolution: it has no
    communities to share rows at this budget, and its ids are packed into the rows by traffic
    instead (`packed`). At least two rows (one a side) are always needed.
    """
    if rows < 2:
        raise ValueError(f"a bipartite clustering needs at least 2 rows, got {rows}")
    if len(first) == 0:
        empty = np.empty(0, dtype=np.int64)
        return BipartiteClusters(empty, empty, empty, empty, 0.0)
    nodes = len(np.unique(first)) + len(np.unique(second))
    if nodes <= rows:
        return singletons(first, second)
    low, high = math.log(SMALLEST_RESOLUTION), math.log(max(2.0, float(nodes)))
    best = cluster_at(first, second, weights, SMALLEST_RESOLUTION, seed)
    for _ in range(RESOLUTION_STEPS):
        middle = (low + high) / 2
        clusters = cluster_at(first, second, weights, math.exp(middle), seed)
        if sum(clusters.rows) <= rows:
            low = middle
            best = clusters if sum(clusters.rows) >= sum(best.rows) else best
        else:
            high = middle
    if sum(best.rows) <= rows:
        return best
    return packed(first, second, weights, rows, seed)


def singletons(first: np.ndarray, second: np.ndarray) -> BipartiteClusters:
    """Every id its own cluster (the budget holds one row per node)."""
    first_ids, second_ids = np.unique(first), np.unique(second)
    return BipartiteClusters(first_ids, np.arange(len(first_ids)), second_ids, np.arange(len(second_ids)), math.inf)


def packed(first: np.ndarray, second: np.ndarray, weights: np.ndarray, rows: int, seed: int) -> BipartiteClusters:
    """Each side's ids packed into its share of `rows` (by id count), busiest id (edge weight) first
    into the row of least traffic: for a graph of more parts than rows, where even the lowest
    resolution needs more rows. Whole clusters are not packed: the small parts of such a graph are
    single training clicks, and a click whose user and item land in matching rows would tell the
    model its own label (with `edges = "clicks"`), which it learns and cannot use on new rows. Ids of
    equal traffic go in an order drawn for each side, so a user and an item do not share a row
    number because their ids sort alike."""
    sides = [np.unique(ids, return_inverse=True) for ids in (first, second)]
    first_rows = max(1, min(len(sides[0][0]), round(rows * len(sides[0][0]) / sum(len(ids) for ids, _ in sides))))
    labels = [
        renumber(pack(np.bincount(inverse, weights=weights, minlength=len(ids)), bins, seed + side))
        for side, ((ids, inverse), bins) in enumerate(zip(sides, (first_rows, max(1, rows - first_rows))))
    ]
    return BipartiteClusters(sides[0][0], labels[0], sides[1][0], labels[1], math.nan)


def pack(loads: np.ndarray, bins: int, seed: int) -> np.ndarray:
    """Each item's bin when items go, largest load first (ties in a random order), into the bin of
    least load so far."""
    heap = [(0.0, index) for index in range(bins)]
    bin_of = np.zeros(len(loads), dtype=np.int64)
    tie_break = np.random.default_rng(seed).permutation(len(loads))
    for item in np.lexsort((tie_break, -loads)):
        load, index = heapq.heappop(heap)
        bin_of[item] = index
        heapq.heappush(heap, (load + float(loads[item]), index))
    return bin_of
