"""`full`: one embedding row per id seen at least `min_count` times in training; the rest share one row.

The baseline every compression strategy is measured against (the classic per-feature table of
DLRM, Naumov et al., "Deep Learning Recommendation Model for Personalization and Recommendation
Systems", 2019). Ids become rows through a sorted vocabulary of the training split (see
`vocabulary`); unseen, rare and negative ids all take the out-of-vocabulary row.

Memory: (|vocabulary| + 1) * dim * 4 bytes of parameters plus 8 bytes per vocabulary id.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from recsys.data.stats import FeatureStatistics
from recsys.tables.interface import LookupModule
from recsys.tables.jagged import FeatureParts, remap_features
from recsys.tables.spec import TableSpec
from recsys.tables.vocabulary import Vocabularies


@dataclass(frozen=True)
class FullSpec(TableSpec):
    min_count: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {self.min_count}")


class FullLookup(LookupModule):
    name = "full"
    spec_type = FullSpec

    def __init__(self, spec: FullSpec, statistics: FeatureStatistics) -> None:
        super().__init__(spec, statistics)
        self.build_tables({feature: statistics.vocabulary(feature, spec.min_count) for feature in self.feature_names})

    def build_tables(self, vocabularies: dict[str, np.ndarray], learned: bool = False) -> None:
        """One table per feature with a row per vocabulary id and the out-of-vocabulary row last;
        `learned` vocabularies (not rebuilt from statistics) are saved in the state."""
        self.vocabularies = Vocabularies(vocabularies, persistent=learned)
        self.configs = [
            EmbeddingBagConfig(
                name=f"{self.name}_{feature}",
                embedding_dim=self.embedding_dim,
                num_embeddings=self.vocabularies.size(feature) + 1,
                feature_names=[feature],
            )
            for feature in self.feature_names
        ]
        self.storage = EmbeddingBagCollection(tables=self.configs)

    def remap(self, features: KeyedJaggedTensor) -> KeyedJaggedTensor:
        """Ids to vocabulary rows: all features at once when the batch has them in order (it always does
        outside tests), else feature by feature."""
        if features.keys() != self.feature_names:
            return remap_features(features, self.remap_feature, self.feature_names)
        rows = self.vocabularies.rows_of(self.feature_names, features.values(), features.length_per_key())
        return KeyedJaggedTensor(
            keys=self.feature_names, values=rows, lengths=features.lengths(), stride=features.stride()
        )

    def remap_feature(self, feature: str, ids: torch.Tensor, lengths: torch.Tensor) -> FeatureParts:
        return [(feature, self.vocabularies.rows(feature, ids), lengths)]

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        return self.ordered(self.storage(self.remap(features)))
