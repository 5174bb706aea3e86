"""Take a KeyedJaggedTensor apart per feature and put one back together, for remapping in front of storage.

    keys     C1              C2
    values   [7, 9, 4]       [3, 3]        lengths [2, 1, 1, 1]  (stride 2: two rows)
    split -> ("C1", values [7, 9, 4], lengths [2, 1]), ("C2", values [3, 3], lengths [1, 1])

Only fixed-stride KJTs (every feature has one bag per row) are handled, which is what batches are.
"""

from __future__ import annotations

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


def split_features(features: KeyedJaggedTensor) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(feature name, its values, its lengths) for every key, in key order."""
    values = features.values()
    lengths = features.lengths()
    stride = features.stride()
    value_offsets = features.offset_per_key()
    return [
        (key, values[value_offsets[index] : value_offsets[index + 1]], lengths[index * stride : (index + 1) * stride])
        for index, key in enumerate(features.keys())
    ]


def join_features(
    keys: list[str], values: list[torch.Tensor], lengths: list[torch.Tensor], stride: int
) -> KeyedJaggedTensor:
    return KeyedJaggedTensor(
        keys=keys, values=torch.cat(values), lengths=torch.cat(lengths), stride=stride
    )
