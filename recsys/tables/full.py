"""`full`: one embedding row per id seen at least `min_count` times in training; the rest share one row.

The baseline every compression strategy is measured against (the classic per-feature table of
DLRM, Naumov et al., "Deep Learning Recommendation Model for Personalization and Recommendation
Systems", 2019). Ids are mapped to rows by a sorted vocabulary of the training split:

    vocabulary of C1 (sorted)  [12, 40, 977]          rows 0, 1, 2; out-of-vocabulary row 3
    ids                        [40, 5, 977, -1]   ->  rows [1, 3, 2, 3]

Memory: (|vocabulary| + 1) * dim * 4 bytes of parameters plus 8 bytes per vocabulary id.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from recsys.data.stats import FeatureStatistics
from recsys.tables.interface import LookupModule
from recsys.tables.jagged import join_features, split_features
from recsys.tables.spec import TableSpec


@dataclass(frozen=True)
class FullSpec(TableSpec):
    min_count: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {self.min_count}")


def vocabulary_rows(vocabulary: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Row of each id in the sorted `vocabulary`; len(vocabulary) (the shared row) when absent."""
    size = vocabulary.numel()
    if size == 0:
        return torch.zeros_like(ids)
    positions = torch.searchsorted(vocabulary, ids).clamp(max=size - 1)
    return torch.where(vocabulary[positions] == ids, positions, size)


class FullLookup(LookupModule):
    name = "full"
    spec_type = FullSpec

    def __init__(self, spec: FullSpec, statistics: FeatureStatistics) -> None:
        super().__init__(spec, statistics)
        vocabularies = [
            torch.from_numpy(statistics.vocabulary(feature, spec.min_count)) for feature in self.feature_names
        ]
        self.register_buffer("vocabulary", torch.cat(vocabularies))
        sizes = [len(vocabulary) for vocabulary in vocabularies]
        self.vocabulary_offsets = {
            feature: (sum(sizes[:index]), sum(sizes[: index + 1])) for index, feature in enumerate(self.feature_names)
        }
        self.configs = [
            EmbeddingBagConfig(
                name=f"full_{feature}", embedding_dim=spec.embedding_dim, num_embeddings=size + 1, feature_names=[feature]
            )
            for feature, size in zip(self.feature_names, sizes)
        ]
        self.storage = EmbeddingBagCollection(tables=self.configs)

    def table_configs(self) -> list[EmbeddingBagConfig]:
        return self.configs

    def index_bytes(self) -> int:
        return self.vocabulary.numel() * self.vocabulary.element_size()

    def remap(self, features: KeyedJaggedTensor) -> KeyedJaggedTensor:
        keys, values, lengths = [], [], []
        for feature, ids, feature_lengths in split_features(features):
            start, end = self.vocabulary_offsets[feature]
            keys.append(feature)
            values.append(vocabulary_rows(self.vocabulary[start:end], ids))
            lengths.append(feature_lengths)
        return join_features(keys, values, lengths, features.stride())

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        return self.storage(self.remap(features))
