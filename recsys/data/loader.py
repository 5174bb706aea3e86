"""Batches for training and evaluation: dense tensor, KeyedJaggedTensor of ids, labels.

A batch of B rows with categorical features C1..C26 becomes one KeyedJaggedTensor, feature-major:

    keys     C1          C2          ...  C26
    values   c1[0..B)    c2[0..B)    ...  c26[0..B)     (one id per row and feature)
    lengths  1 ... 1     1 ... 1     ...  1 ... 1       (B * 26 ones)

The loader reads the cache in blocks of rows (bounded memory), shuffles within a block and the
order of blocks when asked, seeded per epoch, so a run is reproducible.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
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


def make_batch(dense: np.ndarray, sparse: np.ndarray, labels: np.ndarray, keys: list[str]) -> Batch:
    """Build a Batch from row-major arrays: dense [B, D], sparse ids [B, F], labels [B]."""
    rows, features = sparse.shape
    return Batch(
        dense=torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32)),
        sparse=KeyedJaggedTensor(
            keys=keys,
            values=torch.from_numpy(np.ascontiguousarray(sparse.T, dtype=np.int64).reshape(-1)),
            lengths=torch.ones(rows * features, dtype=torch.int32),
        ),
        labels=torch.from_numpy(np.ascontiguousarray(labels, dtype=np.float32)),
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
            dense = block.select(self.dense_features).to_numpy()
            sparse = block.select(self.sparse_features).to_numpy()
            labels = block[self.label].to_numpy()
            order = generator.permutation(len(block)) if self.shuffle else np.arange(len(block))
            for begin in range(0, len(block), self.batch_size):
                index = order[begin : begin + self.batch_size]
                if self.world_size == 1:
                    yield make_batch(dense[index], sparse[index], labels[index], self.sparse_features)
                else:
                    yield self.part(index, dense, sparse, labels)

    def part(self, index: np.ndarray, dense: np.ndarray, sparse: np.ndarray, labels: np.ndarray) -> Batch:
        """This rank's rows of a global batch: consecutive slices of equal length, padded at the end.

        Padding repeats the global batch's first row with weight 0, so no rank is ever empty.
        """
        size = -(-len(index) // self.world_size)
        mine = index[self.rank * size : (self.rank + 1) * size]
        real = len(mine)
        mine = np.concatenate([mine, np.full(size - real, index[0], dtype=index.dtype)])
        batch = make_batch(dense[mine], sparse[mine], labels[mine], self.sparse_features)
        batch.weights = (torch.arange(size) < real).to(torch.float32)
        batch.global_rows = len(index)
        return batch
