"""Exact id -> row maps through sorted per-feature vocabularies of the training split.

    vocabulary of C1 (sorted)  [12, 40, 977]          rows 0, 1, 2; out-of-vocabulary row 3
    ids                        [40, 5, 977, -1]   ->  rows [1, 3, 2, 3]

All features' vocabularies live in one int64 buffer (8 bytes per id, counted as index memory), so
they move with the module and are saved with it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def vocabulary_rows(vocabulary: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Row of each id in the sorted `vocabulary`; len(vocabulary) (the shared row) when absent."""
    size = vocabulary.numel()
    if size == 0:
        return torch.zeros_like(ids)
    positions = torch.searchsorted(vocabulary, ids).clamp_(max=size - 1)
    absent = vocabulary.index_select(0, positions) != ids
    return positions.masked_fill_(absent, size)


class Vocabularies(nn.Module):
    """Sorted vocabularies of several features; `rows(feature, ids)` maps ids to table rows."""

    def __init__(self, vocabularies: dict[str, np.ndarray]) -> None:
        super().__init__()
        sizes = [len(vocabulary) for vocabulary in vocabularies.values()]
        ends = np.cumsum([0, *sizes])
        self.spans = {feature: (int(ends[index]), int(ends[index + 1])) for index, feature in enumerate(vocabularies)}
        ids = [torch.from_numpy(np.asarray(vocabulary, dtype=np.int64)) for vocabulary in vocabularies.values()]
        self.register_buffer("ids", torch.cat(ids) if ids else torch.empty(0, dtype=torch.int64))

    def size(self, feature: str) -> int:
        start, end = self.spans[feature]
        return end - start

    def rows(self, feature: str, ids: torch.Tensor) -> torch.Tensor:
        start, end = self.spans[feature]
        return vocabulary_rows(self.ids[start:end], ids)

    def bytes(self) -> int:
        return self.ids.numel() * self.ids.element_size()
