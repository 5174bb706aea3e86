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
    """One mini-batch: dense [B, D] float32, sparse ids per feature, labels [B] float32."""

    dense: torch.Tensor
    sparse: KeyedJaggedTensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]

    def to(self, device: torch.device) -> Batch:
        if device.type == "cpu":
            return self
        return Batch(self.dense.to(device), self.sparse.to(device), self.labels.to(device))


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
                yield make_batch(dense[index], sparse[index], labels[index], self.sparse_features)
