"""Per-feature statistics of the training split: how many distinct ids, and how often each occurs.

Strategies size themselves from these: `full` keeps ids seen at least `min_count` times, budgets
are set against the full table's size, mixed-dimension sizes by popularity, pruning by frequency.
Only the training split is counted, so validation and test ids stay unseen, as in production.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # polars is imported where files are read: a served model rebuilds its lookups without it
    import polars as pl

FREQUENCY_DIRECTORY = "stats"


@dataclass
class FeatureStatistics:
    """Id frequencies per categorical feature; loaded lazily from a prepared cache or built in memory."""

    cardinalities: dict[str, int]
    directory: Path | None = None
    training: Callable[[], pl.LazyFrame] | None = None
    """The training rows (a prepared cache's train split, its label column named `label`), where there are any."""
    _frequencies: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    _rows: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    """The training rows themselves, column by column, where they are held in memory."""

    @classmethod
    def from_ids(cls, ids_by_feature: dict[str, np.ndarray], labels: np.ndarray | None = None) -> FeatureStatistics:
        """Count ids held in memory (tests, small data): one id per row and feature, rows aligned;
        `labels` (else every row a click) make the rows' co-occurrences answerable too."""
        statistics = cls(cardinalities={})
        rows = len(next(iter(ids_by_feature.values()), []))
        statistics._rows = {**ids_by_feature, "label": np.ones(rows) if labels is None else np.asarray(labels)}
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
            import polars as pl

            frame = pl.read_parquet(self.directory / f"{feature}.parquet")
            self._frequencies[feature] = (frame["id"].to_numpy(), frame["count"].to_numpy())
        return self._frequencies[feature]

    def vocabulary(self, feature: str, min_count: int) -> np.ndarray:
        """Sorted ids seen at least `min_count` times."""
        ids, counts = self.frequencies(feature)
        return np.sort(ids[counts >= min_count])

    def co_occurrences(self, first: str, second: str, clicks_only: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(first ids, second ids, rows) of every id pair seen together in a training row (of a click only,
        with `clicks_only`), sorted by first id then second: the edges of the two features' graph, in one
        order each time, so a clustering of them is the same each time."""
        for feature in (first, second):
            self.frequencies(feature)  # the same error for an unknown feature
        if self._rows:
            keep = self._rows["label"] > 0.5 if clicks_only else slice(None)
            pairs = np.stack([self._rows[first][keep], self._rows[second][keep]], axis=1).astype(np.int64)
            unique, counts = np.unique(pairs, axis=0, return_counts=True)
            return unique[:, 0], unique[:, 1], counts
        if self.training is None:
            raise ValueError("these statistics have no training rows to count co-occurrences in")
        return pair_counts(self.training(), first, second, clicks_only)


def pair_counts(
    rows: pl.LazyFrame, first: str, second: str, clicks_only: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Co-occurrence counts of two single-id features over prepared rows (label column `label`)."""
    import polars as pl

    schema = rows.collect_schema()
    for feature in (first, second):
        if isinstance(schema[feature], pl.List):
            raise ValueError(f"feature {feature!r} holds bags of ids; a co-occurrence graph needs one id per row")
    if clicks_only:
        rows = rows.filter(pl.col("label") > 0.5)
    counts = rows.group_by([first, second]).agg(pl.len().alias("rows")).sort([first, second]).collect()
    return counts[first].to_numpy(), counts[second].to_numpy(), counts["rows"].to_numpy()


STATISTICS_MEMORY_BYTES = 2 << 30
"""Memory one feature's counting may hold by default."""


def write_statistics(
    rows: pl.LazyFrame, features: list[str], directory: Path, memory_bytes: int = STATISTICS_MEMORY_BYTES
) -> dict[str, int]:
    """Write `<feature>.parquet` (id, count; most frequent first, ties by id) per feature, counting each
    within about `memory_bytes` (`recsys.data.counting`); return the cardinalities."""
    from recsys.data.counting import estimated_distinct, partitions_for, write_frequencies

    directory.mkdir(parents=True, exist_ok=True)
    estimates = estimated_distinct(rows, features)
    return {
        feature: write_frequencies(
            rows, feature, directory / f"{feature}.parquet", partitions_for(estimates[feature], memory_bytes)
        )
        for feature in features
    }


class RecordingStatistics(FeatureStatistics):
    """Answers from `source` and records every answer a lookup's constructor asked for.

    An exported model keeps only the record, so its lookups can be rebuilt exactly without the
    prepared cache: vocabularies only of the features asked, full frequencies only where asked.
    """

    def __init__(self, source: FeatureStatistics) -> None:
        super().__init__(cardinalities=dict(source.cardinalities), directory=source.directory)
        self.source = source
        self.vocabularies: dict[tuple[str, int], np.ndarray] = {}
        self.asked_frequencies: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def frequencies(self, feature: str) -> tuple[np.ndarray, np.ndarray]:
        self.asked_frequencies[feature] = self.source.frequencies(feature)
        return self.asked_frequencies[feature]

    def co_occurrences(self, first: str, second: str, clicks_only: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Not recorded: a lookup built from co-occurrences keeps what it made of them in its own state."""
        return self.source.co_occurrences(first, second, clicks_only)

    def vocabulary(self, feature: str, min_count: int) -> np.ndarray:
        self.vocabularies[(feature, min_count)] = self.source.vocabulary(feature, min_count)
        return self.vocabularies[(feature, min_count)]

    def to_record(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(JSON-able index, arrays by key): what `ReplayedStatistics.from_record` needs."""
        arrays: dict[str, np.ndarray] = {}
        index: dict = {"cardinalities": self.cardinalities, "vocabularies": [], "frequencies": []}
        for number, ((feature, min_count), ids) in enumerate(self.vocabularies.items()):
            arrays[f"vocabulary_{number}"] = ids
            index["vocabularies"].append({"feature": feature, "min_count": min_count, "key": f"vocabulary_{number}"})
        for number, (feature, (ids, counts)) in enumerate(self.asked_frequencies.items()):
            arrays[f"frequency_ids_{number}"], arrays[f"frequency_counts_{number}"] = ids, counts
            index["frequencies"].append({"feature": feature, "number": number})
        return index, arrays


class ReplayedStatistics(FeatureStatistics):
    """The recorded answers of `RecordingStatistics`, and nothing else (anything else is an error)."""

    def __init__(self, cardinalities: dict[str, int], vocabularies: dict, frequencies: dict) -> None:
        super().__init__(cardinalities=dict(cardinalities))
        self.vocabularies = vocabularies
        self._frequencies = dict(frequencies)

    @classmethod
    def from_record(cls, index: dict, arrays: dict[str, np.ndarray]) -> ReplayedStatistics:
        vocabularies = {
            (item["feature"], item["min_count"]): np.asarray(arrays[item["key"]]) for item in index["vocabularies"]
        }
        frequencies = {
            item["feature"]: (
                np.asarray(arrays[f"frequency_ids_{item['number']}"]),
                np.asarray(arrays[f"frequency_counts_{item['number']}"]),
            )
            for item in index["frequencies"]
        }
        return cls(index["cardinalities"], vocabularies, frequencies)

    def frequencies(self, feature: str) -> tuple[np.ndarray, np.ndarray]:
        if feature not in self._frequencies:
            raise KeyError(f"the recorded statistics hold no frequencies of {feature!r}")
        return self._frequencies[feature]

    def vocabulary(self, feature: str, min_count: int) -> np.ndarray:
        if (feature, min_count) not in self.vocabularies:
            raise KeyError(f"the recorded statistics hold no vocabulary of {feature!r} at min_count {min_count}")
        return self.vocabularies[(feature, min_count)]
