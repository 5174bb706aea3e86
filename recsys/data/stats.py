"""Per-feature statistics of the training split: how many distinct ids, and how often each occurs.

Strategies size themselves from these: `full` keeps ids seen at least `min_count` times, budgets
are set against the full table's size, mixed-dimension sizes by popularity, pruning by frequency.
Only the training split is counted, so validation and test ids stay unseen, as in production.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

FREQUENCY_DIRECTORY = "stats"


@dataclass
class FeatureStatistics:
    """Id frequencies per categorical feature; loaded lazily from a prepared cache or built in memory."""

    cardinalities: dict[str, int]
    directory: Path | None = None
    _frequencies: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_ids(cls, ids_by_feature: dict[str, np.ndarray]) -> FeatureStatistics:
        """Count ids held in memory (tests, small data)."""
        statistics = cls(cardinalities={})
        for feature, ids in ids_by_feature.items():
            unique, counts = np.unique(np.asarray(ids, dtype=np.int64), return_counts=True)
            order = np.lexsort((unique, -counts))
            statistics._frequencies[feature] = (unique[order], counts[order])
            statistics.cardinalities[feature] = len(unique)
        return statistics

    @property
    def features(self) -> list[str]:
        return list(self.cardinalities)

    def frequencies(self, feature: str) -> tuple[np.ndarray, np.ndarray]:
        """(ids, counts), most frequent first, ties by id."""
        if feature not in self.cardinalities:
            raise KeyError(f"no statistics for feature {feature!r}; known features: {', '.join(self.features)}")
        if feature not in self._frequencies:
            assert self.directory is not None
            frame = pl.read_parquet(self.directory / f"{feature}.parquet")
            self._frequencies[feature] = (frame["id"].to_numpy(), frame["count"].to_numpy())
        return self._frequencies[feature]

    def vocabulary(self, feature: str, min_count: int) -> np.ndarray:
        """Sorted ids seen at least `min_count` times."""
        ids, counts = self.frequencies(feature)
        return np.sort(ids[counts >= min_count])


def count_ids(rows: pl.LazyFrame, feature: str) -> pl.DataFrame:
    """Id frequencies of one feature (every id of a bag counts), most frequent first."""
    ids = pl.col(feature)
    if isinstance(rows.collect_schema()[feature], pl.List):
        rows = rows.select(ids.explode())
    return (
        rows.group_by(ids.alias("id"))
        .agg(pl.len().cast(pl.Int64).alias("count"))
        .sort(["count", "id"], descending=[True, False])
        .collect()
    )


def write_statistics(rows: pl.LazyFrame, features: list[str], directory: Path) -> dict[str, int]:
    """Write `<feature>.parquet` (id, count) per feature; return the cardinalities."""
    directory.mkdir(parents=True, exist_ok=True)
    cardinalities = {}
    for feature in features:
        frequencies = count_ids(rows, feature)
        frequencies.write_parquet(directory / f"{feature}.parquet")
        cardinalities[feature] = len(frequencies)
    return cardinalities
