"""`pruned`: a full table pruned during training down to a budget, then compacted to its kept rows.

Liu et al., "Learnable Embedding Sizes for Recommender Systems" (PEP), ICLR 2021: every weight
passes a soft threshold whose level s is learned with the model,

    v' = sign(v) * relu(|v| - sigmoid(s))        s per feature (`threshold = "feature"`),
                                                 per feature and column ("dimension"), or none

so small weights become exactly zero. PEP's sparsity grows at its own pace; to reach a budget, a
gradual magnitude schedule (Zhu & Gupta, "To prune, or not to prune", 2017) decides how many ids
stay: between `prune_start` and `prune_end` (fractions of training) the kept count follows

    kept(p) = K + (N - K) * (1 - p)^3        p: progress through the schedule, in `updates` steps

and at each step the kept ids whose thresholded rows have the smallest L1 norms are pruned for
good. A pruned id is forgotten: it maps to its feature's out-of-vocabulary row, which unseen ids
share and which keeps learning. After `prune_end` training fine-tunes with the mask fixed.

    training:   id --vocabulary--> row r --kept[r] ? r : oov--> T[r] --soft threshold--> v'
    compact():  id --vocabulary of kept ids--> row of a table of v' for the kept rows and oov

Memory of the compact form (what serving stores, what `memory_report` gives): with K kept ids
over F features, (K + F) * dim * 4 bytes of rows plus 8 bytes per kept id; K is the largest count
that fits the budget. Training holds the full table and its optimizer state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from recsys.data.stats import FeatureStatistics
from recsys.tables.budget import (
    FLOAT_BYTES,
    INDEX_BYTES,
    ROWWISE_ADAGRAD_STATE_BYTES,
    budget_bytes,
    full_table_bytes,
)
from recsys.tables.full import FullLookup
from recsys.tables.interface import MemoryReport
from recsys.tables.jagged import in_order, join_parts, one_bag_per_value, sum_bags
from recsys.tables.kept_rows import KeptRowsLookup
from recsys.tables.shards import row_norms
from recsys.tables.spec import BudgetSpec


@dataclass(frozen=True)
class PrunedSpec(BudgetSpec):
    threshold: Literal["feature", "dimension", "none"] = "feature"
    threshold_init: float = -10.0
    prune_start: float = 0.1
    prune_end: float = 0.7
    updates: int = 20
    min_count: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rows is not None:
            raise ValueError("pruned is sized by compression or bytes (the kept ids follow from them), not rows")
        if not 0 <= self.prune_start <= self.prune_end <= 1:
            raise ValueError(
                f"need 0 <= prune_start <= prune_end <= 1, got prune_start {self.prune_start}, "
                f"prune_end {self.prune_end}"
            )
        if self.updates < 1:
            raise ValueError(f"updates must be at least 1, got {self.updates}")
        if self.min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {self.min_count}")


def shrink(values: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """sign(v) * relu(|v| - level), as v - clamp(v, -level, level): the same numbers in two passes, not five."""
    return values - torch.clamp(values, -levels, levels)


def kept_ids_for_budget(budget: int, feature_count: int, embedding_dim: int, vocabulary_ids: int) -> int:
    """The most ids whose compact form (rows, out-of-vocabulary rows, index) fits `budget` bytes."""
    row_bytes = embedding_dim * FLOAT_BYTES
    spare = budget - feature_count * row_bytes
    if spare < 0:
        raise ValueError(
            f"a budget of {budget} bytes cannot hold even the {feature_count} out-of-vocabulary rows "
            f"({feature_count * row_bytes} bytes): give a larger budget"
        )
    return min(vocabulary_ids, spare // (row_bytes + INDEX_BYTES))


def scheduled_kept(progress: float, spec: PrunedSpec, vocabulary_ids: int, target: int) -> int:
    """Ids to keep at `progress` through training: the cubic schedule, moving in `spec.updates` steps."""
    if progress < spec.prune_start:
        return vocabulary_ids
    span = spec.prune_end - spec.prune_start
    through = 1.0 if span == 0 else min(1.0, (progress - spec.prune_start) / span)
    through = math.floor(through * spec.updates + 1e-9) / spec.updates
    return target + round((vocabulary_ids - target) * (1 - through) ** 3)


class PrunedLookup(KeptRowsLookup):
    name = "pruned"
    spec_type = PrunedSpec
    compacts = True

    def __init__(self, spec: PrunedSpec, statistics: FeatureStatistics) -> None:
        super().__init__(spec, statistics)
        self.vocabulary_ids = self.kept.numel() - len(self.feature_names)
        columns = {"feature": 1, "dimension": spec.embedding_dim, "none": 0}[spec.threshold]
        self.threshold = (
            nn.Parameter(torch.full((len(self.feature_names), columns), spec.threshold_init)) if columns else None
        )
        budget = budget_bytes(spec.compression, spec.bytes, self.full_bytes)
        self.scheduled: int | None = None
        """The count the schedule gave at the last step (None before the first)."""
        self.target = kept_ids_for_budget(budget, len(self.feature_names), spec.embedding_dim, self.vocabulary_ids)

    def kept_ids(self) -> int:
        return int(self.kept.sum()) - len(self.feature_names)

    def soft_threshold(self, vectors: torch.Tensor, feature_index: int, columns: slice = slice(None)) -> torch.Tensor:
        """sign(v) * relu(|v| - sigmoid(s)) with the feature's level s (of `columns` when per column)."""
        if self.threshold is None:
            return vectors
        level = torch.sigmoid(self.threshold[feature_index])
        if level.numel() > 1:
            level = level[columns]
        return shrink(vectors, level)

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        parts = [
            (feature, self.kept_rows(feature, ids), lengths)
            for feature, ids, lengths in in_order(features, self.feature_names)
        ]
        if self.threshold is None:
            return self.ordered(self.storage(join_parts(parts, features.stride())))
        if bool(features.lengths().eq(1).all()):  # a bag of one id pools to the id's row: threshold after pooling
            pooled = self.ordered(self.storage(join_parts(parts, features.stride())))
            levels = torch.sigmoid(self.threshold).expand(-1, self.embedding_dim).reshape(-1)
            return KeyedTensor(
                keys=self.feature_names,
                length_per_key=[self.embedding_dim] * len(self.feature_names),
                values=shrink(pooled.values(), levels),
            )
        per_value = self.storage(one_bag_per_value(parts)).to_dict()
        vectors = [
            sum_bags(self.soft_threshold(per_value[feature][: rows.numel()], index), lengths)
            for index, (feature, rows, lengths) in enumerate(parts)
        ]
        return KeyedTensor.from_tensor_list(self.feature_names, vectors)

    def after_step(self, progress: float) -> dict[str, float]:
        """Prune to the schedule's count when it has moved; report what is kept."""
        count = scheduled_kept(progress, self.spec, self.vocabulary_ids, self.target)
        if count == self.scheduled or count >= self.kept_ids():  # the mask is counted only when the schedule moves
            self.scheduled = count
            return {}
        self.scheduled = count
        self.prune_to(count)
        metrics = {"pruning/kept_ids": float(count), "pruning/kept_fraction": count / max(self.vocabulary_ids, 1)}
        if self.threshold is not None:
            metrics["pruning/threshold_mean"] = float(torch.sigmoid(self.threshold.detach()).mean())
        return metrics

    def settled(self, progress: float) -> bool:
        return progress >= self.spec.prune_end

    @torch.no_grad()
    def prune_to(self, count: int) -> None:
        """Keep the `count` kept ids with the largest thresholded L1 norms (and every oov row)."""
        scores = self.row_scores()
        scores[~self.kept] = -math.inf
        scores[self.oov_rows] = math.inf
        keep = torch.topk(scores, count + len(self.feature_names), sorted=False).indices
        self.kept.zero_()
        self.kept[keep] = True

    @torch.no_grad()
    def row_scores(self) -> torch.Tensor:
        """L1 norm of every thresholded row, rows of all features end to end, summed over ranks."""
        starts = {table: self.row_starts[feature] for table, feature in self.table_features.items()}
        return row_norms(self.storage, starts, self.kept.numel(), self.kept.device, self.threshold_piece)

    def threshold_piece(self, weights: torch.Tensor, table: str, columns: slice) -> torch.Tensor:
        """Rows of a piece of `table` (its `columns`) through their feature's soft threshold."""
        return self.soft_threshold(weights, self.feature_names.index(self.table_features[table]), columns)

    def memory_report(self) -> MemoryReport:
        """The compact form's bytes (what serving stores); optimizer bytes are training's, on full tables."""
        row_bytes = self.embedding_dim * FLOAT_BYTES
        return MemoryReport(
            parameter_bytes=(self.target + len(self.feature_names)) * row_bytes,
            index_bytes=self.target * INDEX_BYTES,
            optimizer_bytes=self.kept.numel() * ROWWISE_ADAGRAD_STATE_BYTES,
            full_bytes=self.full_bytes,
        )

    @classmethod
    def serving_form(
        cls, spec: PrunedSpec, statistics: FeatureStatistics, shape: dict[str, int] | None
    ) -> CompactPrunedLookup:
        if shape is None:
            raise ValueError("the serving form of pruned tables needs the kept count per feature (its shape)")
        return CompactPrunedLookup.of_shape(spec, statistics, shape)

    @torch.no_grad()
    def compact(self) -> CompactPrunedLookup:
        """Finish the schedule if it has not, then keep only the kept rows, thresholds applied."""
        if self.kept_ids() > self.target:
            self.prune_to(self.target)
        vocabularies, rows = self.kept_tables({feature: self.embedding_dim for feature in self.feature_names})
        tables = {feature: self.soft_threshold(rows[feature], index) for index, feature in enumerate(rows)}
        return CompactPrunedLookup(self.spec, list(self.feature_names), self.full_bytes, vocabularies, tables)


class CompactPrunedLookup(FullLookup):
    """The serving form of `PrunedLookup`: a full lookup over the kept ids, thresholds folded in.

    Its whole content is its tables and kept vocabularies, both in its state dict; `serving_shape`
    (the kept count per feature) is all that is needed to rebuild it empty and load that state.
    """

    name = "pruned"
    spec_type = PrunedSpec

    def __init__(
        self,
        spec: PrunedSpec,
        feature_names: list[str],
        full_bytes: int,
        vocabularies: dict[str, np.ndarray],
        tables: dict[str, torch.Tensor] | None = None,
    ) -> None:
        nn.Module.__init__(self)
        self.describe(spec, feature_names, full_bytes)
        self.build_tables(vocabularies, learned=True)
        if tables is not None:
            with torch.no_grad():
                for config in self.configs:
                    self.storage.embedding_bags[config.name].weight.copy_(tables[config.feature_names[0]])

    @classmethod
    def of_shape(cls, spec: PrunedSpec, statistics: FeatureStatistics, kept: dict[str, int]) -> CompactPrunedLookup:
        """An empty compact form with `kept[feature]` ids per feature, to load a saved state into."""
        placeholders = {feature: np.arange(kept[feature], dtype=np.int64) for feature in statistics.features}
        return cls(
            spec,
            list(statistics.features),
            full_table_bytes(statistics.cardinalities, spec.embedding_dim),
            placeholders,
        )

    def serving_shape(self) -> dict[str, int]:
        return {feature: self.vocabularies.size(feature) for feature in self.feature_names}
