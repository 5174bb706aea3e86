"""Take a KeyedJaggedTensor apart per feature and remap it into the KJT the storage reads.

    keys     C1              C2
    values   [7, 9, 4]       [3, 3]        lengths [2, 1, 1, 1]  (stride 2: two rows)
    split -> ("C1", values [7, 9, 4], lengths [2, 1]), ("C2", values [3, 3], lengths [1, 1])

Only fixed-stride KJTs (every feature has one bag per row) are handled, which is what batches are.
"""

from __future__ import annotations

from collections.abc import Callable

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


FeatureParts = list[tuple[str, torch.Tensor, torch.Tensor]]
"""(storage feature name, values, lengths) triples: what one input feature becomes in front of storage."""


def in_order(features: KeyedJaggedTensor, order: list[str]) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """`split_features` in the order `order` names them, whatever order the batch has.

    Storage always sees one key order: a sharded EmbeddingBagCollection fixes the key order of its
    first batch and applies it to every later one.
    """
    parts = {feature: (feature, ids, lengths) for feature, ids, lengths in split_features(features)}
    missing = [feature for feature in order if feature not in parts]
    if missing:
        raise KeyError(f"the batch has no feature {', '.join(missing)}; it has {', '.join(parts)}")
    return [parts[feature] for feature in order]


def remap_features(
    features: KeyedJaggedTensor,
    remap_one: Callable[[str, torch.Tensor, torch.Tensor], FeatureParts],
    order: list[str],
) -> KeyedJaggedTensor:
    """Apply `remap_one(feature, ids, lengths)` to every feature of `order` and join the parts into one KJT."""
    parts = [part for feature, ids, lengths in in_order(features, order) for part in remap_one(feature, ids, lengths)]
    return join_parts(parts, features.stride())


def join_parts(parts: FeatureParts, stride: int) -> KeyedJaggedTensor:
    """One KJT of (key, values, lengths) parts, bags as they are."""
    return KeyedJaggedTensor(
        keys=[key for key, _, _ in parts],
        values=torch.cat([values for _, values, _ in parts]),
        lengths=torch.cat([lengths for _, _, lengths in parts]),
        stride=stride,
    )


def one_bag_per_value(parts: FeatureParts, stride: int | None = None) -> KeyedJaggedTensor:
    """A KJT in which every value is a bag of its own, so pooled storage returns one vector per value.

    Keys with fewer values than the longest are padded with empty bags (stride = the most values,
    or `stride` where the caller needs a larger one, one that all ranks agree on).
    """
    stride = stride or most_values(parts)
    lengths = []
    for _, values, _ in parts:
        bag_lengths = torch.zeros(stride, dtype=torch.int32, device=values.device)
        bag_lengths[: values.numel()] = 1
        lengths.append(bag_lengths)
    return KeyedJaggedTensor(
        keys=[key for key, _, _ in parts],
        values=torch.cat([values for _, values, _ in parts]),
        lengths=torch.cat(lengths),
        stride=stride,
    )


def most_values(parts: FeatureParts) -> int:
    """The most values any part has (at least 1: an all-empty batch still has a row)."""
    return max(1, max(values.numel() for _, values, _ in parts))


def sum_bags(vectors: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Sum consecutive rows of `vectors` [n, d] into bags of `lengths` [B] -> [B, d]."""
    bags = torch.repeat_interleave(torch.arange(lengths.numel(), device=lengths.device), lengths)
    return torch.zeros(lengths.numel(), vectors.shape[1], dtype=vectors.dtype, device=vectors.device).index_add_(
        0, bags, vectors
    )
