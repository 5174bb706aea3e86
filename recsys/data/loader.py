"""Batches for training and evaluation: dense tensor, KeyedJaggedTensor of ids, labels.

A batch of B rows with categorical features C1..C26 becomes one KeyedJaggedTensor, feature-major:

    keys     C1          C2          ...  C26
    values   c1[0..B)    c2[0..B)    ...  c26[0..B)     (one id per row and feature)
    lengths  1 ... 1     1 ... 1     ...  1 ... 1       (B * 26 ones)

A bag feature (a list column, such as MovieLens genres) gives each row as many ids as its list holds.

The loader reads the cache in blocks of rows (bounded memory), shuffles within a block and the
order of blocks when asked, seeded per epoch, so a run is reproducible.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from recsys.data.cache import PreparedCache


@dataclass
class Batch:
    """One mini-batch: dense [B, D] float32, sparse ids per feature, labels [B] float32.

    In a run over several processes this is one rank's part of a global batch of `global_rows`
    rows; `weights` is 0 for padding rows (every rank gets the same number of rows, which row-wise
    sharded tables need) and 1 for real ones.
    """

    dense: torch.Tensor
    sparse: KeyedJaggedTensor
    labels: torch.Tensor
    weights: torch.Tensor | None = None
    global_rows: int | None = None

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def real_rows(self) -> int:
        return len(self) if self.weights is None else int(self.weights.sum())

    def to(self, device: torch.device) -> Batch:
        if device.type == "cpu":
            return self
        weights = None if self.weights is None else self.weights.to(device)
        return Batch(self.dense.to(device), self.sparse.to(device), self.labels.to(device), weights, self.global_rows)


@dataclass
class SparseBlock:
    """The ids of a block of rows: a column per scalar feature in `ids`, and (offsets, values) per bag."""

    keys: list[str]
    ids: np.ndarray
    """[rows, features] int64; a bag feature's column is unused."""
    bags: dict[int, tuple[np.ndarray, np.ndarray]]
    """feature index -> (offsets [rows + 1], all ids of the bags in row order)."""

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, keys: list[str]) -> SparseBlock:
        bags = {}
        scalar = []
        for index, key in enumerate(keys):
            column = frame[key]
            if isinstance(column.dtype, pl.List):
                lengths = column.list.len().fill_null(0).to_numpy()
                offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
                bags[index] = (offsets, column.explode().drop_nulls().to_numpy().astype(np.int64))
                column = pl.Series(key, np.zeros(len(frame), dtype=np.int64))
            scalar.append(column)
        ids = pl.DataFrame(scalar).to_numpy() if keys else np.zeros((len(frame), 0), dtype=np.int64)
        return cls(keys, ids, bags)

    def take(self, index: np.ndarray) -> KeyedJaggedTensor:
        """The rows `index` as one KeyedJaggedTensor, feature-major."""
        rows, features = len(index), len(self.keys)
        if not self.bags:
            values = np.ascontiguousarray(self.ids[index].T, dtype=np.int64).reshape(-1)
            return KeyedJaggedTensor(
                keys=self.keys, values=torch.from_numpy(values), lengths=torch.ones(rows * features, dtype=torch.int32)
            )
        values, lengths = [], []
        for feature in range(features):
            if feature in self.bags:
                feature_values, feature_lengths = bag_rows(*self.bags[feature], index)
            else:
                feature_values, feature_lengths = self.ids[index, feature], np.ones(rows, dtype=np.int64)
            values.append(feature_values)
            lengths.append(feature_lengths)
        return KeyedJaggedTensor(
            keys=self.keys,
            values=torch.from_numpy(np.concatenate(values).astype(np.int64)),
            lengths=torch.from_numpy(np.concatenate(lengths).astype(np.int32)),
        )


def bag_rows(offsets: np.ndarray, values: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ids and lengths of the bags of rows `index`, in that order."""
    starts = offsets[index]
    lengths = offsets[index + 1] - starts
    first_of_each = np.cumsum(lengths) - lengths
    positions = np.repeat(starts - first_of_each, lengths) + np.arange(int(lengths.sum()))
    return values[positions], lengths


def dense_matrix(block: pl.DataFrame, features: list[str]) -> np.ndarray:
    """[rows, D] float32 (D may be 0: Avazu, Frappe and MovieLens have no dense features)."""
    if not features:
        return np.zeros((len(block), 0), dtype=np.float32)
    return block.select(features).to_numpy().astype(np.float32, copy=False)


def make_batch(dense: np.ndarray, sparse: SparseBlock, labels: np.ndarray, index: np.ndarray) -> Batch:
    """The rows `index` of a block as a Batch: dense [B, D], ids as a KeyedJaggedTensor, labels [B]."""
    return Batch(
        dense=torch.from_numpy(np.ascontiguousarray(dense[index], dtype=np.float32)),
        sparse=sparse.take(index),
        labels=torch.from_numpy(np.ascontiguousarray(labels[index], dtype=np.float32)),
    )


class BatchLoader:
    """Iterates over one split of a prepared cache in batches."""

    def __init__(
        self,
        cache: PreparedCache,
        split: str,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        block_rows: int = 1 << 20,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.cache = cache
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.block_rows = max(block_rows // batch_size, 1) * batch_size
        self.epoch = 0
        self.rank = rank
        self.world_size = world_size
        self.rows = cache.rows(split)
        schema = cache.schema
        self.dense_features = list(schema.dense_features)
        self.sparse_features = list(schema.sparse_features)
        self.label = schema.label

    def __len__(self) -> int:
        return -(-self.rows // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Choose the shuffle of this epoch (each epoch differs; the same epoch always matches)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[Batch]:
        generator = np.random.default_rng([self.seed, self.epoch])
        starts = np.arange(0, self.rows, self.block_rows)
        if self.shuffle:
            starts = generator.permutation(starts)
        rows = self.cache.scan(self.split)
        for start in starts:
            block = rows.slice(int(start), self.block_rows).collect()
            dense = dense_matrix(block, self.dense_features)
            sparse = SparseBlock.from_frame(block, self.sparse_features)
            labels = block[self.label].to_numpy()
            order = generator.permutation(len(block)) if self.shuffle else np.arange(len(block))
            for begin in range(0, len(block), self.batch_size):
                index = order[begin : begin + self.batch_size]
                if self.world_size == 1:
                    yield make_batch(dense, sparse, labels, index)
                else:
                    yield self.part(index, dense, sparse, labels)

    def part(self, index: np.ndarray, dense: np.ndarray, sparse: SparseBlock, labels: np.ndarray) -> Batch:
        """This rank's rows of a global batch: consecutive slices of equal length, padded at the end.

        Padding repeats the global batch's first row with weight 0, so no rank is ever empty.
        """
        size = -(-len(index) // self.world_size)
        mine = index[self.rank * size : (self.rank + 1) * size]
        real = len(mine)
        mine = np.concatenate([mine, np.full(size - real, index[0], dtype=index.dtype)])
        batch = make_batch(dense, sparse, labels, mine)
        batch.weights = (torch.arange(size) < real).to(torch.float32)
        batch.global_rows = len(index)
        return batch
