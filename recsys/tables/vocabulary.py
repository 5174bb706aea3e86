"""Exact id -> row maps through sorted per-feature vocabularies of the training split.

    vocabulary of C1 (sorted)  [12, 40, 977]          rows 0, 1, 2; out-of-vocabulary row 3
    ids                        [40, 5, 977, -1]   ->  rows [1, 3, 2, 3]

All features' vocabularies live in one int64 buffer (8 bytes per id, counted as index memory), so
they move with the module. They are not saved with it where they come from the training statistics
(a checkpoint's run and an artifact's record rebuild them exactly), only where they are learned
state: the kept ids of pruned's compact form (`persistent=True`). So an artifact stores each
vocabulary once.
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

    def __init__(self, vocabularies: dict[str, np.ndarray], persistent: bool = False) -> None:
        super().__init__()
        sizes = [len(vocabulary) for vocabulary in vocabularies.values()]
        ends = np.cumsum([0, *sizes])
        self.spans = {feature: (int(ends[index]), int(ends[index + 1])) for index, feature in enumerate(vocabularies)}
        ids = [torch.from_numpy(np.asarray(vocabulary, dtype=np.int64)) for vocabulary in vocabularies.values()]
        self.register_buffer("ids", torch.cat(ids) if ids else torch.empty(0, dtype=torch.int64), persistent=persistent)

    def size(self, feature: str) -> int:
        start, end = self.spans[feature]
        return end - start

    def rows(self, feature: str, ids: torch.Tensor) -> torch.Tensor:
        start, end = self.spans[feature]
        return vocabulary_rows(self.ids[start:end], ids)

    def rows_of(self, features: list[str], values: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """Rows of the ids of several features at once: `values` holds `counts[i]` ids of `features[i]`, in order.

        Equal to `rows` feature by feature, with one binary search per feature and the rest (is the id
        there, else the out-of-vocabulary row) in one pass over all ids: half the time at batch 1.
        """
        if self.ids.numel() == 0:
            return torch.zeros_like(values)
        bounds = [self.spans[feature] for feature in features]
        positions = torch.cat(
            [torch.searchsorted(self.ids[start:end], part) for (start, end), part in zip(bounds, values.split(counts))]
        )
        repeats = torch.tensor(counts, device=values.device)
        starts = torch.tensor([start for start, _ in bounds], device=values.device)
        sizes = torch.tensor([end - start for start, end in bounds], device=values.device)
        starts = torch.repeat_interleave(starts, repeats, output_size=values.numel())
        sizes = torch.repeat_interleave(sizes, repeats, output_size=values.numel())
        candidates = (starts + positions).clamp(max=self.ids.numel() - 1)
        found = self.ids[candidates] == values  # where a position is past its vocabulary it is its size anyway
        return torch.where(found, positions, sizes)

    def bytes(self) -> int:
        return self.ids.numel() * self.ids.element_size()
