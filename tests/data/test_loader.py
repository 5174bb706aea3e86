"""Batches: every row once per epoch, the KJT layout of the cache columns, seeded shuffles."""

from __future__ import annotations

import numpy as np
import torch

from recsys.data.loader import BatchLoader


def collect(loader: BatchLoader) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels, dense, sparse = [], [], []
    for batch in loader:
        features = batch.sparse.keys()
        assert features == loader.sparse_features
        values = batch.sparse.values().view(len(features), len(batch)).T
        assert batch.sparse.lengths().eq(1).all()
        labels.append(batch.labels.numpy())
        dense.append(batch.dense.numpy())
        sparse.append(values.numpy())
    return np.concatenate(labels), np.concatenate(dense), np.concatenate(sparse)


def test_unshuffled_batches_are_the_split_in_order(synthetic_cache):
    loader = BatchLoader(synthetic_cache, "val", batch_size=300)
    labels, dense, sparse = collect(loader)
    frame = synthetic_cache.scan("val").collect()
    np.testing.assert_array_equal(labels, frame["label"].to_numpy())
    np.testing.assert_array_equal(dense, frame.select(loader.dense_features).to_numpy())
    np.testing.assert_array_equal(sparse, frame.select(loader.sparse_features).to_numpy())
    assert len(loader) == -(-4000 // 300)


def test_shuffle_is_a_permutation_seeded_per_epoch(synthetic_cache):
    loader = BatchLoader(synthetic_cache, "train", batch_size=1000, shuffle=True, seed=4, block_rows=10_000)
    first = collect(loader)[2]
    again = collect(loader)[2]
    loader.set_epoch(1)
    second = collect(loader)[2]
    ordered = synthetic_cache.scan("train").collect().select(loader.sparse_features).to_numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second)
    assert not np.array_equal(first, ordered)
    for rows in (first, second):
        np.testing.assert_array_equal(np.sort(rows, axis=0), np.sort(ordered, axis=0))


def bag_batches(loader: BatchLoader) -> list[tuple[np.ndarray, list[list[int]]]]:
    """(labels, the genre bags) of every batch, read back from the KJT."""
    found = []
    for batch in loader:
        assert batch.dense.shape == (len(batch), 0)
        genres = batch.sparse.to_dict()["genres"]
        assert (batch.sparse.to_dict()["userId"].lengths() == 1).all()
        bags = [bag.tolist() for bag in torch.split(genres.values(), genres.lengths().tolist())]
        found.append((batch.labels.numpy(), bags))
    return found


def test_bag_features_give_each_row_its_whole_list(bag_cache):
    frame = bag_cache.scan("val").collect()
    batches = bag_batches(BatchLoader(bag_cache, "val", batch_size=97))
    assert [bag for _, bags in batches for bag in bags] == frame["genres"].to_list()
    assert max(len(bag) for bag in frame["genres"].to_list()) > 1
    np.testing.assert_array_equal(np.concatenate([labels for labels, _ in batches]), frame["label"].to_numpy())


def test_bag_features_split_over_ranks_in_order(bag_cache):
    frame = bag_cache.scan("val").collect()
    ranks = [bag_batches(BatchLoader(bag_cache, "val", batch_size=97, rank=rank, world_size=2)) for rank in (0, 1)]
    rows = []
    for first, second in zip(*ranks):
        size = -(-(len(first[1]) + len(second[1])) // 2)
        real = min(97, len(frame) - len(rows))
        rows.extend((first[1] + second[1])[:real])
        assert len(first[1]) == len(second[1]) == size
    assert rows == frame["genres"].to_list()
