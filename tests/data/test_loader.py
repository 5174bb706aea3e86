"""Batches: every row once per epoch, the KJT layout of the cache columns, seeded shuffles."""

from __future__ import annotations

import numpy as np

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
