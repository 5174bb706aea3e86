"""GraphHash: the retrieval structure against a dict, planted communities found, the budget kept,
co-occurrences counted as a numpy reference counts them, clusterings made once per cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.config import ConfigError
from recsys.data.stats import FeatureStatistics
from recsys.tables import build_lookup, spec_from_mapping
from recsys.tables import graphhash as graphhash_module
from recsys.tables.graph_clusters import cluster_to_rows
from recsys.tables.retrieval import build_retrieval, retrieve
from tests.tables.conftest import single_id_batch


@pytest.mark.parametrize("values_below", [1, 200, 40_000, 100_000])
def test_retrieval_returns_every_stored_value(values_below):
    generator = np.random.default_rng(values_below)
    keys = generator.choice(np.arange(-(10**12), 10**12, 7919), size=5000, replace=False)
    values = generator.integers(0, values_below, size=5000)
    expected = dict(zip(keys.tolist(), values.tolist()))
    array, salt = build_retrieval(keys, values, seed=3)
    found = retrieve(array, salt, torch.from_numpy(keys)).tolist()
    assert found == [expected[key] for key in keys.tolist()]
    assert array.numel() <= 1.23 * 5000 + 3 * 12  # about 1.23 slots per key, not one per key and value


def test_retrieval_of_no_keys_and_of_unseen_ids():
    array, salt = build_retrieval(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), seed=0)
    assert retrieve(array, salt, torch.tensor([5, -9])).tolist() == [0, 0]
    keys, values = np.arange(100), np.arange(100) % 5
    array, salt = build_retrieval(keys, values, seed=0)
    unseen = retrieve(array, salt, torch.arange(1000, 3000))
    assert unseen.min() >= 0 and unseen.max() < 8  # below the next power of two of the largest value
    with pytest.raises(ValueError, match="distinct"):
        build_retrieval(np.array([1, 1]), np.array([0, 1]), seed=0)


def planted_communities(groups: int, users: int, items: int, seed: int = 0):
    """Edges of `groups` communities: each user clicks items of its own group only, many times."""
    generator = np.random.default_rng(seed)
    first, second = [], []
    for group in range(groups):
        for user in range(users):
            for item in generator.choice(items, size=items // 2, replace=False):
                first.append(group * 1000 + user)
                second.append(group * 1000 + 500 + int(item))
    return np.array(first), np.array(second), np.ones(len(first))


def test_clusters_follow_planted_communities():
    first, second, weights = planted_communities(groups=2, users=20, items=10)
    clusters = cluster_to_rows(first, second, weights, rows=4, seed=0)
    assert clusters.rows == (2, 2)
    user_groups = clusters.first_ids // 1000
    item_groups = clusters.second_ids // 1000
    for group in (0, 1):  # one cluster per group on each side, and the group's users and items share it
        assert len(set(clusters.first_clusters[user_groups == group].tolist())) == 1
        assert len(set(clusters.second_clusters[item_groups == group].tolist())) == 1
    assert set(clusters.first_clusters.tolist()) == {0, 1}


@pytest.mark.parametrize("rows", [2, 5, 17, 60])
def test_clustering_never_needs_more_rows_than_given(rows):
    generator = np.random.default_rng(rows)
    first, second = generator.zipf(1.3, 3000) % 400, generator.zipf(1.3, 3000) % 300
    clusters = cluster_to_rows(first, second, np.ones(3000), rows=rows, seed=1)
    assert sum(clusters.rows) <= rows
    assert sum(clusters.rows) >= min(rows, 4) // 2  # not one row for everything when more are given
    assert len(clusters.first_ids) == len(np.unique(first)) and len(clusters.second_ids) == len(np.unique(second))


def test_every_node_alone_when_the_rows_hold_them():
    clusters = cluster_to_rows(np.array([1, 1, 2]), np.array([5, 6, 6]), np.ones(3), rows=10, seed=0)
    assert clusters.first_clusters.tolist() == [0, 1] and clusters.second_clusters.tolist() == [0, 1]


def interaction_statistics(seed: int = 0) -> FeatureStatistics:
    """Users and items of four planted communities, and a small third feature."""
    first, second, _ = planted_communities(groups=4, users=50, items=40, seed=seed)
    generator = np.random.default_rng(seed)
    order = generator.permutation(len(first))
    small = generator.integers(0, 3, len(first))
    return FeatureStatistics.from_ids({"small": small, "medium": first[order], "large": second[order]})


def graphhash_spec(**options):
    return spec_from_mapping({"strategy": "graphhash", "embedding_dim": 8, "edges": "rows", **options})


def test_ids_of_one_community_share_rows_and_the_budget_holds():
    statistics = interaction_statistics()
    lookup = build_lookup(graphhash_spec(compression=4), statistics)
    assert lookup.memory_report().total_bytes <= lookup.full_bytes / 4
    ids = np.array([[0, group * 1000 + user, group * 1000 + 500] for group in range(4) for user in range(50)])
    batch = single_id_batch(ids)
    rows = lookup.remap_feature("medium", batch["medium"].values(), batch["medium"].lengths())[0][1]
    groups = torch.from_numpy(ids[:, 1] // 1000)
    row_owner = {}
    for row, group in zip(rows.tolist(), groups.tolist()):
        assert row_owner.setdefault(row, group) == group  # no row holds users of two communities
    assert lookup.rows["medium"] < len(np.unique(ids[:, 1]))


def test_spec_errors_name_the_option():
    with pytest.raises((ConfigError, ValueError), match="fields"):
        graphhash_spec(compression=2, fields=["medium"])
    with pytest.raises((ConfigError, ValueError), match="compression or bytes"):
        graphhash_spec(rows=100)
    with pytest.raises((ConfigError, ValueError), match="index_share"):
        graphhash_spec(compression=2, index_share=1.5)
    with pytest.raises(ValueError, match="unknown features"):
        build_lookup(graphhash_spec(compression=2, fields=["medium", "absent"]), interaction_statistics())


def test_co_occurrences_of_a_prepared_cache_match_a_numpy_count(bag_cache):
    rows = bag_cache.scan("train").select(["label", "userId", "movieId"]).collect()
    labels, users, movies = (rows[name].to_numpy() for name in ("label", "userId", "movieId"))
    for clicks_only in (False, True):
        keep = labels > 0.5 if clicks_only else np.ones(len(labels), dtype=bool)
        expected = {}
        for user, movie in zip(users[keep].tolist(), movies[keep].tolist()):
            expected[(user, movie)] = expected.get((user, movie), 0) + 1
        first, second, counts = bag_cache.statistics().co_occurrences("userId", "movieId", clicks_only)
        assert dict(zip(zip(first.tolist(), second.tolist()), counts.tolist())) == expected
        pairs = list(zip(first.tolist(), second.tolist()))
        assert pairs == sorted(pairs)  # one order each time, so clusterings of them repeat
    with pytest.raises(ValueError, match="bags of ids"):
        bag_cache.statistics().co_occurrences("userId", "genres", clicks_only=False)


def test_clustering_is_made_once_per_cache(bag_cache, monkeypatch):
    spec = spec_from_mapping(
        {"strategy": "graphhash", "embedding_dim": 8, "compression": 4, "fields": ["userId", "movieId"]}
    )
    monkeypatch.setattr(graphhash_module, "REMEMBERED", {})  # nothing from earlier tests in this process
    first = build_lookup(spec, bag_cache.statistics())
    assert list((bag_cache.path / "stats" / "graphhash").glob("*.npz"))

    def refuse(*arguments, **options):
        raise AssertionError("the saved clustering should have been read")

    monkeypatch.setattr(graphhash_module, "cluster_to_rows", refuse)
    monkeypatch.setattr(graphhash_module, "REMEMBERED", {})  # as a new process: only the file holds it
    second = build_lookup(spec, bag_cache.statistics())
    second_buffers = dict(second.named_buffers())
    assert first.rows == second.rows and len(second_buffers) >= 2
    for name, buffer in first.named_buffers():
        torch.testing.assert_close(second_buffers[name], buffer, rtol=0, atol=0)


def test_one_process_clusters_a_graph_once_and_another_graph_anew(monkeypatch):
    monkeypatch.setattr(graphhash_module, "REMEMBERED", {})
    spec = graphhash_spec(compression=4)
    first = build_lookup(spec, interaction_statistics(seed=0))
    made = []
    monkeypatch.setattr(graphhash_module, "cluster_to_rows", lambda *arguments: made.append(1) or first_clusters())

    def first_clusters():
        raise AssertionError("the same graph was clustered twice")

    second = build_lookup(spec, interaction_statistics(seed=0))  # new statistics, no directory, same graph
    assert first.rows == second.rows and not made
    with pytest.raises(AssertionError, match="clustered twice"):
        build_lookup(spec, interaction_statistics(seed=1))  # another graph is clustered, not served the first's


def test_a_graph_of_more_parts_than_rows_is_packed_evenly_not_merged():
    users, items = np.arange(200), np.arange(200) + 1000  # 200 separate user-item pairs
    clusters = cluster_to_rows(users, items, np.ones(200), rows=20, seed=0)
    assert clusters.rows == (10, 10)
    for labels in (clusters.first_clusters, clusters.second_clusters):
        assert np.bincount(labels).tolist() == [20] * 10  # at any resolution Louvain leaves 200 parts


def test_the_busiest_id_gets_a_row_of_its_own_when_ids_are_packed():
    users = np.concatenate([np.zeros(100, dtype=np.int64), np.arange(1, 101)])  # user 0 clicks 100 items
    items = np.concatenate([np.arange(1000, 1100), np.arange(2000, 2100)])  # then 100 separate pairs
    clusters = cluster_to_rows(users, items, np.ones(200), rows=22, seed=0)
    assert clusters.rows == (7, 15)  # 101 users and 200 items share the 22 rows by id count
    busiest_row = clusters.first_clusters[clusters.first_ids == 0][0]
    assert (clusters.first_clusters == busiest_row).sum() == 1  # its 100 clicks, the others' 100 in 6 rows
    assert np.bincount(clusters.first_clusters).tolist() == [17, 17, 17, 17, 16, 16, 1]  # 100 in 6 rows


def test_packed_pairs_do_not_share_row_numbers_beyond_chance():
    """A separate clicked pair whose user and item took the same row number would tell the model its
    label: over 2,000 pairs in 40 + 40 rows, about 1 in 40 may (chance), not most."""
    users, items = np.arange(2000), np.arange(2000) + 10_000
    clusters = cluster_to_rows(users, items, np.ones(2000), rows=80, seed=0)
    matching = (clusters.first_clusters == clusters.second_clusters).mean()  # ids sorted alike, pair k at k
    assert clusters.rows == (40, 40) and matching < 3 / 40
