"""Full tables of which only some rows are kept: the training form `pruned` and `optembed` share.

The rows of every feature (its vocabulary ids, then its out-of-vocabulary row) lie end to end in
one mask `kept`. A pruned id maps to its feature's out-of-vocabulary row, which unseen ids share
and which keeps learning; compaction gathers the kept rows and their ids from storage, sharded or
not, into the tables of a compact serving form.

    feature A rows 0..2 + oov 3 | feature B rows 4..5 + oov 6     kept [1 0 1 1 | 0 1 1]
    id of A at row 1 -> row 3 (A's oov)                           compact A: ids of rows 0, 2 + oov
"""

from __future__ import annotations

import numpy as np
import torch

from recsys.data.stats import FeatureStatistics
from recsys.tables.full import FullLookup
from recsys.tables.shards import gather_rows
from recsys.tables.spec import TableSpec


class KeptRowsLookup(FullLookup):
    """A full lookup with a mask of kept rows over all features (see the module docstring)."""

    def __init__(self, spec: TableSpec, statistics: FeatureStatistics) -> None:
        super().__init__(spec, statistics)
        sizes = [self.vocabularies.size(feature) + 1 for feature in self.feature_names]
        starts = np.cumsum([0, *sizes])
        self.row_starts = {feature: int(starts[index]) for index, feature in enumerate(self.feature_names)}
        self.table_features = {config.name: config.feature_names[0] for config in self.configs}
        self.register_buffer("kept", torch.ones(int(starts[-1]), dtype=torch.bool))
        self.register_buffer("oov_rows", torch.as_tensor(starts[1:] - 1, dtype=torch.int64), persistent=False)

    def kept_rows(self, feature: str, ids: torch.Tensor) -> torch.Tensor:
        """Vocabulary rows of `ids`, pruned ones replaced by the feature's out-of-vocabulary row."""
        rows = self.vocabularies.rows(feature, ids)
        return torch.where(self.kept[self.row_starts[feature] + rows], rows, self.vocabularies.size(feature))

    @torch.no_grad()
    def kept_tables(self, widths: dict[str, int]) -> tuple[dict[str, np.ndarray], dict[str, torch.Tensor]]:
        """Per feature, the ids of its kept rows and those rows (its out-of-vocabulary row last), the
        first `widths[feature]` columns of each, whole on every rank."""
        positions = {
            feature: torch.nonzero(self.kept[start : start + self.vocabularies.size(feature) + 1]).squeeze(1)
            for feature, start in self.row_starts.items()
        }
        names = {feature: table for table, feature in self.table_features.items()}
        gathered = gather_rows(
            self.storage,
            {names[feature]: rows for feature, rows in positions.items()},
            {names[feature]: width for feature, width in widths.items()},
            self.kept.device,
        )
        vocabularies = {}
        for feature, rows in positions.items():
            start, _ = self.vocabularies.spans[feature]
            vocabularies[feature] = self.vocabularies.ids[start + rows[:-1]].cpu().numpy()
        return vocabularies, {feature: gathered[names[feature]] for feature in self.feature_names}
