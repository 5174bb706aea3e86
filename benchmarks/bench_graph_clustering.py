"""Which library clusters GraphHash's user-item graph fastest, at what modularity (issue 18).

A bipartite graph of planted communities with Zipf-distributed degrees (--edges draws, fewer
distinct pairs, between --users users and --items items; every edge falls inside its user's
community with probability 0.8) is clustered at resolution 1 by igraph's Louvain
(`community_multilevel`, what `graphhash` uses), igraph's Leiden, leidenalg's Leiden and
networkx's Louvain, where installed; each is timed --rounds times, interleaved, and its
modularity measured by igraph on the same weighted graph.

    python benchmarks/bench_graph_clustering.py [--edges 1000000] [--users 60000] [--items 55000]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine  # noqa: E402


def planted_graph(edges: int, users: int, items: int, communities: int, seed: int):
    """(users, items, weights) of distinct edges: Zipf degrees, most edges inside a community."""
    generator = np.random.default_rng(seed)
    user = generator.zipf(1.2, edges) % users
    inside = generator.random(edges) < 0.8
    community_items = items // communities
    item = np.where(
        inside,
        (user % communities) * community_items + generator.zipf(1.2, edges) % community_items,
        generator.zipf(1.2, edges) % items,
    )
    pairs, counts = np.unique(np.stack([user, item], axis=1), axis=0, return_counts=True)
    return pairs[:, 0], pairs[:, 1] + users, counts.astype(np.float64)


def igraph_graph(first, second, weights, nodes: int):
    import igraph

    graph = igraph.Graph(n=nodes, edges=np.stack([first, second], axis=1))
    graph.es["weight"] = weights
    return graph


def igraph_louvain(graph, first, second, weights):
    return graph.community_multilevel(weights="weight", resolution=1.0).membership


def igraph_leiden(graph, first, second, weights):
    return graph.community_leiden(
        objective_function="modularity", weights="weight", resolution=1.0, n_iterations=-1
    ).membership


def leidenalg_leiden(graph, first, second, weights):
    import leidenalg

    return leidenalg.find_partition(graph, leidenalg.ModularityVertexPartition, weights="weight", seed=0).membership


def networkx_louvain(graph, first, second, weights):
    import networkx

    nx_graph = networkx.Graph()
    nx_graph.add_weighted_edges_from(zip(first.tolist(), second.tolist(), weights.tolist()))
    membership = np.zeros(graph.vcount(), dtype=np.int64)
    for label, nodes in enumerate(networkx.community.louvain_communities(nx_graph, weight="weight", seed=0)):
        membership[list(nodes)] = label
    return membership.tolist()


METHODS = {
    "igraph Louvain (graphhash's)": (igraph_louvain, "igraph"),
    "igraph Leiden": (igraph_leiden, "igraph"),
    "leidenalg Leiden": (leidenalg_leiden, "leidenalg"),
    "networkx Louvain": (networkx_louvain, "networkx"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edges", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=60_000)
    parser.add_argument("--items", type=int, default=55_000)
    parser.add_argument("--communities", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    first, second, weights = planted_graph(arguments.edges, arguments.users, arguments.items, arguments.communities, 0)
    graph = igraph_graph(first, second, weights, arguments.users + arguments.items)
    print(machine())
    print(f"graph: {graph.vcount():,} nodes, {graph.ecount():,} distinct edges")
    methods = {name: method for name, (method, module) in METHODS.items() if importlib.util.find_spec(module)}
    timings: dict[str, list[float]] = {name: [] for name in methods}
    modularity = {}
    for _ in range(arguments.rounds):
        for name, method in methods.items():
            started = time.perf_counter()
            membership = method(graph, first, second, weights)
            timings[name].append(time.perf_counter() - started)
            modularity[name] = graph.modularity(membership, weights="weight")
    fastest = min(statistics.median(values) for values in timings.values())
    print("| library | median s | vs fastest | modularity |")
    print("|---|---:|---:|---:|")
    for name, values in timings.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {median / fastest:.1f}x | {modularity[name]:.4f} |")
    missing = [name for name in METHODS if name not in methods]
    if missing:
        print(f"not installed, not measured: {', '.join(missing)}")


if __name__ == "__main__":
    main()
